"""The embedded backend: rate_limit.lua's sliding log, step for step, in this process's memory."""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Sequence

from gateway.config import Limit
from gateway.limits.backend import Verdict

# A token charge: (time in microseconds, member, tokens)
Charge = tuple[int, str, int]


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class MemoryBackend:
    """The Backend contract over a SlidingLog: one process's counts, on its own clock."""

    source = "embedded"

    def __init__(self, limits: Sequence[Limit], budgets: Sequence[Limit] = ()) -> None:
        self.log = SlidingLog(limits, budgets)

    async def hit(self, key: str, now: int | None, member: str, need: int | None) -> Verdict:
        return self.log.hit(key, wall_clock_us() if now is None else now, need, member)

    async def settle(self, key: str, member: str, reserved: int, used: int) -> None:
        self.log.settle(key, member, used)

    def record(self, key: str, now: int | None) -> None:
        """Note a request another backend admitted, so this log knows it if it must decide."""
        self.log.record(key, wall_clock_us() if now is None else now)


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
        log = self._logs.get(key, [])
        admit = True
        checks: list[tuple[int, int, int, int]] = []
        for length, limit in self.windows:
            first = bisect.bisect_right(log, now - length)
            count = len(log) - first
            release = 0
            if count >= limit:
                admit = False
            if limit == 0:
                release = length  # a window that admits nothing (a degraded share of 0)
            elif count > 0:
                release = log[first + max(count - limit, 0)] + length - now
            checks.append((length, limit, count, release))
        budgets = self.budgets if need is not None else ()
        charges = self._charges.get(key) or Charges()
        spent = [charges.check(now, length, limit, need or 0) for length, limit in budgets]
        admit = admit and all(used + (need or 0) <= limit for _, limit, used, _, _ in spent)
        if admit and self.windows:
            self._record(key, log, now)
        if admit and budgets:
            charges.record(now, self.longest_budget, spent, member, need or 0)
            self._charges[key] = charges
            self._charges.move_to_end(key)
            self._forget_idle_charges(now)
        if admit:
            states = tuple(
                (limit - count - 1, length if count == 0 else release)
                for length, limit, count, release in checks
            ) + tuple(
                (limit - used - (need or 0), length if used == 0 else release)
                for length, limit, used, release, _ in spent
            )
        else:
            states = tuple(
                (max(limit - count, 0), release) for _, limit, count, release in checks
            ) + tuple((max(limit - used, 0), release) for _, limit, used, release, _ in spent)
        return admit, states

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
