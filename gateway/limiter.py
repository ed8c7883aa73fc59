"""The rate limiter: one sliding-log decision per request, in Redis or in process, and what to do
when Redis fails."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from gateway.config import Settings
from gateway.decision import (
    MICRO,
    Decision,
    Reservation,
    decide,
)
from gateway.errors import LimiterUnavailable
from gateway.redis_link import (
    FAILURES,
    RedisClient,
    RedisHealth,
    budget_keys_for,
    failure_name,
    key_for,
)
from gateway.sliding_log import SlidingLog, Verdict, Window

log = logging.getLogger(__name__)

SCRIPT = (files("gateway") / "rate_limit.lua").read_text(encoding="utf-8")
SETTLE_SCRIPT = (files("gateway") / "settle_tokens.lua").read_text(encoding="utf-8")

REFUSALS_CACHED = 100_000


def _now_us() -> int:
    return time.time_ns() // 1000


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class Limiter:
    """Decides whether a client may make one more request, and records it if so."""

    def __init__(self, settings: Settings, redis: RedisClient | None = None) -> None:
        self.limits = settings.limits
        self.prefix = settings.key_prefix
        self.mode = settings.redis_failure_mode
        self.timeout = settings.redis_timeout
        self._windows = tuple((seconds * MICRO, limit) for _, seconds, limit in self.limits)
        self.budgets = settings.budgets
        self._budgets = tuple((seconds * MICRO, limit) for _, seconds, limit in self.budgets)
        self._local = SlidingLog(self._windows, self._budgets)
        self._health = RedisHealth(redis, self.timeout, self.mode) if redis is not None else None
        self._script = redis.register_script(SCRIPT) if redis is not None else None
        self._settle = redis.register_script(SETTLE_SCRIPT) if redis is not None else None
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex()
        # (client, our clock?) -> (sent, refused until, states): tests' times never mix with ours
        self._refused: dict[tuple[str, bool], tuple[int, int, tuple[tuple[int, int], ...]]] = {}

    @property
    def state(self) -> str:
        """embedded (no Redis configured), redis, or the failure mode while Redis is down."""
        if self._health is None:
            return "embedded"
        return self.mode if self._health.down else "redis"

    @property
    def probe_failures(self) -> int:
        return self._health.probe_failures if self._health is not None else 0

    async def hit(
        self, key: str, *, tokens: int | None = None, now_us: int | None = None
    ) -> Decision:
        """Count one request of client `key` if every window admits it.

        With `tokens`, the same round trip also reserves that many tokens if every token budget
        still has room for them; settle() later charges what the call used instead.
        `now_us` (microseconds) replaces Redis TIME and the local clock, for tests. With Redis, a
        call that fails or times out is decided by REDIS_FAILURE_MODE: the embedded limiter
        (local), admitted (open), or LimiterUnavailable (closed).
        """
        metered = tokens is not None and bool(self._budgets)
        if not self._windows and not metered:
            return Decision(True, 0, source="none")
        if self._script is None or self._health is None:
            return self._local_hit(key, tokens if metered else None, now_us, "embedded")
        sent = _monotonic_us() if now_us is None else now_us
        cached = self._cached_refusal((key, now_us is None), sent)
        if cached is not None:
            return cached
        need = tokens if metered else None
        if self._health.down:
            return self._fallback(key, need, now_us)
        member = self._member()
        keys, args = [key_for(self.prefix, key)], script_args(self._windows, now_us, member)
        if need is not None:
            keys += budget_keys_for(self.prefix, key)
            args += [len(self._budgets), *itertools.chain.from_iterable(self._budgets), need]
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._script(keys=keys, args=args)
        except FAILURES as exc:
            self._health.failed(started, exc)
            return self._fallback(key, need, now_us, exc)
        self._health.succeeded()
        verdict = parse_reply(reply)
        if not verdict[0]:
            self._remember_refusal((key, now_us is None), sent, verdict)
        if need is None:
            return decide(self.limits, verdict, "redis")
        return decide(
            self.limits, verdict, "redis", self.budgets, Reservation(member, need, "redis")
        )

    async def settle(self, key: str, reservation: Reservation, tokens: int) -> None:
        """Charge what an admitted call used in place of what it reserved; never raises.

        A reservation Redis held while Redis is unreachable stays charged in full until its
        windows pass: the budget errs towards the client having spent more, never less.
        """
        if reservation.source != "redis":
            self._local.settle(key, reservation.member, tokens)
            return
        assert self._settle is not None
        try:
            async with asyncio.timeout(self.timeout):
                await self._settle(
                    keys=budget_keys_for(self.prefix, key),
                    args=[
                        f"{reservation.member}:{reservation.tokens}",
                        f"{reservation.member}:{tokens}",
                        tokens - reservation.tokens,
                        *(length for length, _ in self._budgets),
                    ],
                )
        except FAILURES as exc:
            log.warning(
                "could not settle a token reservation (%s); it stays charged", failure_name(exc)
            )

    def _local_hit(self, key: str, need: int | None, now_us: int | None, source: str) -> Decision:
        member = self._member()
        verdict = self._local.hit(key, _now_us() if now_us is None else now_us, need, member)
        if need is None:
            return decide(self.limits, verdict, source)
        return decide(self.limits, verdict, source, self.budgets, Reservation(member, need, source))

    async def ready(self) -> bool:
        """Whether requests can be decided: always, unless closed mode has no Redis to ask."""
        if self._health is None or self.mode != "closed":
            return True
        return not self._health.down and await self._health.ping()

    async def aclose(self) -> None:
        if self._health is not None:
            await self._health.aclose()

    def _member(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    def _fallback(
        self, key: str, need: int | None, now_us: int | None, exc: BaseException | None = None
    ) -> Decision:
        if self.mode == "open":
            return Decision(True, 0, source="open")
        if self.mode == "closed":
            raise LimiterUnavailable(headers={"Retry-After": "1"}) from exc
        return self._local_hit(key, need, now_us, "local")

    def _cached_refusal(self, key: tuple[str, bool], now: int) -> Decision | None:
        entry = self._refused.get(key)
        if entry is None:
            return None
        sent, until, states = entry
        if now >= until:
            del self._refused[key]
            return None
        elapsed = now - sent
        shifted = tuple((remaining, max(reset - elapsed, 0)) for remaining, reset in states)
        return decide(self.limits, (False, shifted), "cache")

    def _remember_refusal(self, key: tuple[str, bool], sent: int, verdict: Verdict) -> None:
        # Measured from when the call was sent, before Redis read its clock: the earliest moment
        # Redis could admit the client, so the cache never refuses what Redis would admit.
        # Only request windows are remembered: a token refusal depends on the call's size.
        states = verdict[1][: len(self._windows)]
        if not any(remaining == 0 for remaining, _ in states):
            return
        verdict = (False, states)
        wait = max(reset for remaining, reset in verdict[1] if remaining == 0)
        if len(self._refused) >= REFUSALS_CACHED:
            self._refused = {k: v for k, v in self._refused.items() if v[1] > sent}
            if len(self._refused) >= REFUSALS_CACHED:
                self._refused.clear()
        self._refused[key] = (sent, sent + wait, verdict[1])


def script_args(windows: Sequence[Window], now_us: int | None, member: str) -> list[str | int]:
    """rate_limit.lua's ARGV: the time ("" for Redis TIME), the member, then the windows."""
    flat = itertools.chain.from_iterable(windows)
    return ["" if now_us is None else now_us, member, len(windows), *flat]


def parse_reply(reply: Any) -> Verdict:
    values = [int(v) for v in reply]
    pairs = tuple(zip(values[1::2], values[2::2], strict=True))
    return values[0] == 1, pairs
