"""What a limiter backend is: the Redis scripts or the in-process log, answering the same way."""

from __future__ import annotations

from typing import Protocol

# The backend's answer, before it is put in whole seconds: whether the call was admitted, then
# (remaining, microseconds until the window frees a unit) for each request window and, when the
# call carries tokens, for each token budget after them.
Verdict = tuple[bool, tuple[tuple[int, int], ...]]


class BackendUnavailable(Exception):
    """The backend could not decide (Redis unreachable or too slow); the cause is chained."""


class Backend(Protocol):
    source: str  # what decided: "redis" or "embedded"

    async def hit(self, key: str, now: int | None, member: str, need: int | None) -> Verdict:
        """Count one request of client `key` as `member` if every window admits it, and with
        `need`, reserve that many tokens if every budget has room. `now` (microseconds) is the
        time to decide at, or None for the backend's own clock. Raises BackendUnavailable."""
        ...

    async def settle(self, key: str, member: str, reserved: int, used: int) -> None:
        """Charge `used` tokens in place of the `reserved` held by `member`. Raises
        BackendUnavailable."""
        ...
