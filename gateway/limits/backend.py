"""What a limiter backend is: the Redis scripts or the in-process log, answering the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.quota import Limit

# The backend's answer, before it is put in whole seconds: whether the call was admitted, then
# (remaining, microseconds until the window frees a unit) for each subject in turn: each of its
# request windows, and when the call carries tokens, each of its token budgets after them.
Verdict = tuple[bool, tuple[tuple[int, int], ...]]


@dataclass(frozen=True)
class Subject:
    """Whose counts a call is held to: a client address's bucket with the settings' limits, or a
    gateway key's with its own. A call is admitted only if every subject of it admits it."""

    bucket: str
    limits: tuple[Limit, ...]
    budgets: tuple[Limit, ...] = ()

    def checks(self, metered: bool) -> tuple[Limit, ...]:
        """What a verdict reports for this subject, in order."""
        return self.limits + self.budgets if metered else self.limits


class BackendUnavailable(Exception):
    """The backend could not decide (Redis unreachable or too slow); the cause is chained."""


class Backend(Protocol):
    source: str  # what decided: "redis" or "embedded"

    async def hit(
        self, subjects: Sequence[Subject], now: int | None, member: str, need: int | None
    ) -> Verdict:
        """Count one request as `member` in every subject if every window of each admits it,
        and with `need`, reserve that many tokens in each if every budget has room. `now`
        (microseconds) is the time to decide at, or None for the backend's own clock. Raises
        BackendUnavailable."""
        ...

    async def peek(self, subject: Subject, now: int | None) -> Verdict:
        """What `subject` holds, as if a call of no tokens were admitted; counts nothing."""
        ...

    async def settle(
        self, subjects: Sequence[Subject], member: str, reserved: int, used: int
    ) -> None:
        """Charge `used` tokens in place of the `reserved` held by `member` in each subject with
        budgets. Raises BackendUnavailable."""
        ...
