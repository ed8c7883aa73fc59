"""The embedded limiter: rate_limit.lua's sliding log, step for step, in this process's memory."""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence

# (window length in microseconds, limit)
Window = tuple[int, int]
# (allowed, ((remaining, reset in microseconds), ...)): the script's reply, unflattened
Verdict = tuple[bool, tuple[tuple[int, int], ...]]


class SlidingLog:
    """Admitted request times per client, trimmed to the longest window.

    Memory is bounded as in Redis: a client keeps at most the entries of its longest window, and a
    client with none left there is forgotten.
    """

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = tuple(windows)
        self.longest = max((length for length, _ in self.windows), default=0)
        self._logs: OrderedDict[str, list[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def hit(self, key: str, now: int) -> Verdict:
        log = self._logs.get(key, [])
        admit = True
        checks: list[tuple[int, int, int, int]] = []
        for length, limit in self.windows:
            first = bisect.bisect_right(log, now - length)
            count = len(log) - first
            release = 0
            if count > 0:
                skip = 0
                if count >= limit:
                    skip = count - limit
                    admit = False
                release = log[first + skip] + length - now
            checks.append((length, limit, count, release))
        if admit:
            del log[: bisect.bisect_right(log, now - self.longest)]
            bisect.insort(log, now)
            self._logs[key] = log
            self._logs.move_to_end(key)
            self._forget_idle(now)
            states = tuple(
                (limit - count - 1, length if count == 0 else release)
                for length, limit, count, release in checks
            )
        else:
            states = tuple((max(limit - count, 0), release) for _, limit, count, release in checks)
        return admit, states

    def _forget_idle(self, now: int) -> None:
        # Oldest admission first: stop at the first client still inside its longest window.
        while self._logs:
            key, log = next(iter(self._logs.items()))
            if log and log[-1] > now - self.longest:
                return
            del self._logs[key]
