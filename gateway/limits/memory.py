"""The embedded backend: rate_limit.lua's sliding log, step for step, in this process's memory."""

from __future__ import annotations

import bisect
import itertools
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.limits.backend import Subject, Verdict
from gateway.quota import Limit

# A token charge: (time in microseconds, member, tokens)
Charge = tuple[int, str, int]


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class MemoryBackend:
    """The Backend contract over sliding logs (one per set of limits): one process's counts, on
    its own clock."""

    source = "embedded"

    def __init__(self) -> None:
        self._logs: dict[tuple[tuple[Limit, ...], tuple[Limit, ...]], SlidingLog] = {}

    def log_of(self, subject: Subject) -> SlidingLog:
        limits = (subject.limits, subject.budgets)
        log = self._logs.get(limits)
        if log is None:
            log = self._logs[limits] = SlidingLog(*limits)
        return log

    async def hit(
        self, subjects: Sequence[Subject], now: int | None, member: str, need: int | None
    ) -> Verdict:
        at = wall_clock_us() if now is None else now
        checked = []
        for subject in subjects:
            log = self.log_of(subject)
            checked.append((log, log.check(subject.bucket, at, need)))
        admit = all(check.admit for _, check in checked)
        if admit:
            for log, check in checked:
                log.commit(check, member)
        states = tuple(itertools.chain.from_iterable(c.states(admit) for _, c in checked))
        return admit, states

    async def peek(self, subject: Subject, now: int | None) -> Verdict:
        at = wall_clock_us() if now is None else now
        check = self.log_of(subject).check(subject.bucket, at, 0)
        return True, check.states(True, counted=False)

    async def settle(
        self, subjects: Sequence[Subject], member: str, reserved: int, used: int
    ) -> None:
        for subject in subjects:
            if subject.budgets:
                self.log_of(subject).settle(subject.bucket, member, used)

    def record(self, subjects: Sequence[Subject], now: int | None) -> None:
        """Note a request another backend admitted, so these logs know it if they must decide."""
        at = wall_clock_us() if now is None else now
        for subject in subjects:
            self.log_of(subject).record(subject.bucket, at)


@dataclass
class Check:
    """One subject's counts for a call, before the call is recorded (commit) or refused."""

    key: str
    now: int
    need: int | None
    log: list[int]
    windows: list[tuple[int, int, int, int]]  # (length, limit, count, release)
    spent: list[tuple[int, int, int, int, int]]  # Charges.check for each budget
    charges: Charges

    @property
    def admit(self) -> bool:
        need = self.need or 0
        return all(count < limit for _, limit, count, _ in self.windows) and all(
            used + need <= limit for _, limit, used, _, _ in self.spent
        )

    def states(self, admitted: bool, counted: bool = True) -> tuple[tuple[int, int], ...]:
        """(remaining, reset) per window, then per budget; `counted` says the call itself is in
        the remaining counts (a real admission, not a look)."""
        need, one = (self.need or 0, 1) if counted else (0, 0)
        if admitted:
            return tuple(
                (limit - count - one, length if count == 0 and counted else release)
                for length, limit, count, release in self.windows
            ) + tuple(
                (limit - used - need, length if used == 0 and need > 0 else release)
                for length, limit, used, release, _ in self.spent
            )
        return tuple(
            (max(limit - count, 0), release) for _, limit, count, release in self.windows
        ) + tuple((max(limit - used, 0), release) for _, limit, used, release, _ in self.spent)


class SlidingLog:
    """Admitted request times per client, trimmed to the longest window.

    Memory is bounded as in Redis: a client keeps at most the entries of its longest window, and a
    client with none left there is forgotten.
    """

    def __init__(self, windows: Sequence[Limit], budgets: Sequence[Limit] = ()) -> None:
        # (length in microseconds, quantity): what the loops below compare, as the script does
        self.windows = tuple((w.micros, w.quantity) for w in windows)
        self.longest = max((length for length, _ in self.windows), default=0)
        self._logs: OrderedDict[str, list[int]] = OrderedDict()
        self.budgets = tuple((b.micros, b.quantity) for b in budgets)
        self.longest_budget = max((length for length, _ in self.budgets), default=0)
        self._charges: OrderedDict[str, Charges] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def hit(self, key: str, now: int, need: int | None = None, member: str = "") -> Verdict:
        """Check, and record if admitted: rate_limit.lua for one subject."""
        check = self.check(key, now, need)
        admit = check.admit
        if admit:
            self.commit(check, member)
        return admit, check.states(admit)

    def check(self, key: str, now: int, need: int | None) -> Check:
        log = self._logs.get(key, [])
        windows: list[tuple[int, int, int, int]] = []
        for length, limit in self.windows:
            first = bisect.bisect_right(log, now - length)
            count = len(log) - first
            release = 0
            if limit == 0:
                release = length  # a window that admits nothing (a degraded share of 0)
            elif count > 0:
                release = log[first + max(count - limit, 0)] + length - now
            windows.append((length, limit, count, release))
        budgets = self.budgets if need is not None else ()
        charges = self._charges.get(key) or Charges()
        spent = [charges.check(now, length, limit, need or 0) for length, limit in budgets]
        return Check(key, now, need if budgets else None, log, windows, spent, charges)

    def commit(self, check: Check, member: str) -> None:
        if self.windows:
            self._record(check.key, check.log, check.now)
        if check.spent:
            need = check.need or 0
            check.charges.record(check.now, self.longest_budget, check.spent, member, need)
            self._charges[check.key] = check.charges
            self._charges.move_to_end(check.key)
            self._forget_idle_charges(check.now)

    def record(self, key: str, now: int) -> None:
        """Add a request to the client's log whatever its windows hold."""
        if self.windows:
            self._record(key, self._logs.get(key, []), now)

    def _record(self, key: str, log: list[int], now: int) -> None:
        del log[: bisect.bisect_right(log, now - self.longest)]
        bisect.insort(log, now)
        self._logs[key] = log
        self._logs.move_to_end(key)
        self._forget_idle(now)

    def settle(self, key: str, member: str, tokens: int) -> None:
        charges = self._charges.get(key)
        if charges is not None:
            charges.settle(member, tokens)

    def _forget_idle_charges(self, now: int) -> None:
        while self._charges:
            key, charges = next(iter(self._charges.items()))
            if charges.log and charges.log[-1][0] > now - self.longest_budget:
                return
            del self._charges[key]

    def _forget_idle(self, now: int) -> None:
        # Oldest admission first: stop at the first client still inside its longest window.
        while self._logs:
            key, log = next(iter(self._logs.items()))
            if log and log[-1] > now - self.longest:
                return
            del self._logs[key]


class Charges:
    """One client's token charges, oldest first, and a running total per budget window:
    rate_limit.lua's KEYS[2] and KEYS[3], step for step."""

    def __init__(self) -> None:
        self.log: list[Charge] = []
        self.totals: dict[int, tuple[int, int]] = {}  # length -> (tokens used, watermark)

    def check(self, now: int, length: int, limit: int, need: int) -> tuple[int, int, int, int, int]:
        """(length, limit, tokens used, release, watermark) for one budget."""
        cut = now - length
        first = bisect.bisect_right(self.log, cut, key=_time)
        if length not in self.totals:
            used = sum(tokens for _, _, tokens in self.log[first:])
        else:
            used, mark = self.totals[length]
            if cut > mark:
                gone = self.log[bisect.bisect_right(self.log, mark, key=_time) : first]
                used -= sum(tokens for _, _, tokens in gone)
            else:
                cut = mark
                first = bisect.bisect_right(self.log, cut, key=_time)
        release = 0
        if used + need > limit or used > 0:
            excess = max(used + need - limit, 0)
            release = length
            for at, _, tokens in self.log[first:]:
                excess -= tokens
                if excess <= 0:
                    release = at + length - now
                    break
        return length, limit, used, release, cut

    def record(
        self,
        now: int,
        longest: int,
        spent: list[tuple[int, int, int, int, int]],
        member: str,
        need: int,
    ) -> None:
        for length, _, used, _, cut in spent:
            self.totals[length] = (used + need, cut)
        del self.log[: bisect.bisect_right(self.log, now - longest, key=_time)]
        bisect.insort(self.log, (now, member, need), key=_time)

    def settle(self, member: str, tokens: int) -> None:
        """settle_tokens.lua: the reservation keeps its time and takes the tokens used."""
        for index in range(len(self.log) - 1, -1, -1):
            at, held, reserved = self.log[index]
            if held == member:
                self.log[index] = (at, member, tokens)
                for length, (used, mark) in self.totals.items():
                    if at > mark:
                        self.totals[length] = (used + tokens - reserved, mark)
                return


def _time(charge: Charge) -> int:
    return charge[0]
