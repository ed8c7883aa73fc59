"""A rate-limit decision: per-window counts in whole seconds."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.limits.backend import Verdict
from gateway.quota import MICRO, Limit


@dataclass(frozen=True)
class WindowState:
    limit: Limit
    remaining: int
    reset: int  # whole seconds, rounded up, until the window frees a unit; 0 if it holds none

    @property
    def name(self) -> str:
        return self.limit.name

    @property
    def quantity(self) -> int:
        return self.limit.quantity

    @property
    def unit(self) -> str:
        return self.limit.unit


@dataclass(frozen=True)
class Reservation:
    """Tokens held for an admitted call until it is settled at what it used."""

    member: str
    tokens: int
    source: str  # where it is held: redis, embedded or local


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # whole seconds, rounded up, until a request would be admitted; 0 if allowed
    windows: tuple[WindowState, ...] = ()  # empty when nothing is known (REDIS_FAILURE_MODE=open)
    blocked_by: WindowState | None = None
    source: str = "embedded"  # embedded, redis, cache (a refusal remembered), local, open
    budgets: tuple[WindowState, ...] = ()  # token budgets, when the call carried tokens
    reservation: Reservation | None = None  # what an admitted call holds against them

    @property
    def tightest(self) -> WindowState | None:
        """The window with the fewest requests left; on a tie, the one that frees up last."""
        return _tightest(self.windows)

    @property
    def tightest_budget(self) -> WindowState | None:
        """The token budget with the fewest tokens left, by the same rule."""
        return _tightest(self.budgets)

    @property
    def window(self) -> str | None:
        """The word for the window that refused (second, minute, hour, day); None if allowed."""
        return None if self.blocked_by is None else self.blocked_by.name


def _tightest(states: tuple[WindowState, ...]) -> WindowState | None:
    return min(states, key=lambda s: (s.remaining, -s.reset), default=None)


def _seconds(micros: int) -> int:
    return -(-micros // MICRO)


def decide(
    checks: tuple[Limit, ...],
    verdict: Verdict,
    source: str,
    reservation: Reservation | None = None,
) -> Decision:
    """Turn a backend's verdict (microseconds) into a Decision (whole seconds, rounded up).

    `checks` are the limits the verdict reports on, in its order: request windows and token
    budgets of every subject. A budget refuses when the reservation does not fit.
    """
    allowed, states = verdict
    every = tuple(
        WindowState(limit, remaining, _seconds(reset))
        for limit, (remaining, reset) in zip(checks, states, strict=True)
    )
    windows = tuple(state for state in every if state.unit == "requests")
    held = tuple(state for state in every if state.unit == "tokens")
    if allowed:
        return Decision(True, 0, windows, None, source, held, reservation)
    need = reservation.tokens if reservation is not None else 0
    blocking = [
        (states[index][1], index)
        for index, state in enumerate(every)
        if state.remaining < (need if state.unit == "tokens" else 1)
    ]
    wait, blocked = max(blocking, default=(0, 0))
    return Decision(False, _seconds(wait), windows, every[blocked], source, held)
