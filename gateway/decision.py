"""A rate-limit decision: per-window counts in whole seconds, and the headers that show them."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sliding_log import Verdict

MICRO = 1_000_000
_POLICY_NAMES = {"second": "1s", "minute": "1m", "hour": "1h", "day": "1d"}


@dataclass(frozen=True)
class WindowState:
    name: str  # second, minute, hour or day
    seconds: int
    limit: int
    remaining: int
    reset: int  # whole seconds, rounded up, until the window frees a unit; 0 if it holds none
    unit: str = "requests"  # or "tokens", for a token budget


@dataclass(frozen=True)
class Reservation:
    """Tokens held for an admitted call until settle_tokens.lua charges what it used."""

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
        if not self.windows:
            return None
        return min(self.windows, key=lambda w: (w.remaining, -w.reset))

    @property
    def window(self) -> str | None:
        """The word for the window that refused (second, minute, hour, day); None if allowed."""
        return None if self.blocked_by is None else self.blocked_by.name


def decide(
    limits: tuple[tuple[str, int, int], ...],
    verdict: Verdict,
    source: str,
    budgets: tuple[tuple[str, int, int], ...] = (),
    reservation: Reservation | None = None,
) -> Decision:
    """Turn a raw verdict (microseconds) into a Decision (whole seconds, rounded up).

    Budgets' states follow the windows'; a budget refuses when the reservation does not fit.
    """
    allowed, states = verdict
    windows = tuple(
        WindowState(name, seconds, limit, remaining, -(-reset // MICRO))
        for (name, seconds, limit), (remaining, reset) in zip(
            limits, states[: len(limits)], strict=True
        )
    )
    held = tuple(
        WindowState(name, seconds, limit, remaining, -(-reset // MICRO), "tokens")
        for (name, seconds, limit), (remaining, reset) in zip(
            budgets, states[len(limits) :], strict=True
        )
    )
    if allowed:
        return Decision(True, 0, windows, None, source, held, reservation)
    need = reservation.tokens if reservation is not None else 0
    blocking = [(s[1], i) for i, s in enumerate(states[: len(limits)]) if s[0] == 0]
    blocking += [
        (s[1], len(limits) + i) for i, s in enumerate(states[len(limits) :]) if s[0] < need
    ]
    wait, blocked = max(blocking, default=(0, 0))
    every = windows + held
    return Decision(False, -(-wait // MICRO), windows, every[blocked], source, held)


def rate_limit_headers(
    limits: tuple[tuple[str, int, int], ...], decision: Decision | None
) -> dict[str, str]:
    """RateLimit-Policy for every configured window; RateLimit and X-RateLimit-* (the tightest
    window) only when the decision knows the counts."""
    if not limits:
        return {}
    headers = {
        "RateLimit-Policy": ", ".join(
            f'"{_POLICY_NAMES[name]}";q={limit};w={seconds}' for name, seconds, limit in limits
        )
    }
    tightest = decision.tightest if decision is not None else None
    if decision is None or tightest is None:
        return headers
    headers["RateLimit"] = ", ".join(
        f'"{_POLICY_NAMES[w.name]}";r={w.remaining};t={w.reset}' for w in decision.windows
    )
    headers["X-RateLimit-Limit"] = str(tightest.limit)
    headers["X-RateLimit-Remaining"] = str(tightest.remaining)
    headers["X-RateLimit-Reset"] = str(tightest.reset)
    return headers
