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


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int  # whole seconds, rounded up, until a request would be admitted; 0 if allowed
    windows: tuple[WindowState, ...] = ()  # empty when nothing is known (REDIS_FAILURE_MODE=open)
    blocked_by: WindowState | None = None
    source: str = "embedded"  # embedded, redis, cache (a refusal remembered), local, open

    @property
    def tightest(self) -> WindowState | None:
        """The window with the fewest requests left; on a tie, the one that frees up last."""
        if not self.windows:
            return None
        return min(self.windows, key=lambda w: (w.remaining, -w.reset))

    @property
    def remaining(self) -> int | None:
        tightest = self.tightest
        return None if tightest is None else tightest.remaining

    @property
    def window(self) -> str | None:
        """The word for the window that refused (second, minute, hour, day); None if allowed."""
        return None if self.blocked_by is None else self.blocked_by.name


def decide(limits: tuple[tuple[str, int, int], ...], verdict: Verdict, source: str) -> Decision:
    """Turn a raw verdict (microseconds) into a Decision (whole seconds, rounded up)."""
    allowed, states = verdict
    windows = tuple(
        WindowState(name, seconds, limit, remaining, -(-reset // MICRO))
        for (name, seconds, limit), (remaining, reset) in zip(limits, states, strict=True)
    )
    if allowed:
        return Decision(True, 0, windows, None, source)
    wait, blocked = max(
        ((reset, index) for index, (remaining, reset) in enumerate(states) if remaining == 0),
        default=(0, 0),
    )
    return Decision(False, -(-wait // MICRO), windows, windows[blocked], source)


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
