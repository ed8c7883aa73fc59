"""A clock the test moves: the limiter decides at the time it is told, in microseconds."""

from __future__ import annotations


class ManualClock:
    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def hit(limiter, key: str, *, at: int, tokens: int | None = None):
    """One decision of `limiter` (made with a ManualClock) at time `at`."""
    limiter.clock.now = at
    return await limiter.hit(key, tokens=tokens)
