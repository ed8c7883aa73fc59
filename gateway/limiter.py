"""The rate limiter: one sliding-log decision per request, in Redis or in process, and what to do
when Redis fails."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import time
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.config import Settings
from gateway.decision import (
    MICRO,
    Decision,
    Reservation,
    WindowState,
    decide,
    rate_limit_headers,
)
from gateway.errors import LimiterUnavailable
from gateway.sliding_log import SlidingLog, Verdict, Window

log = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "Limiter",
    "RedisClient",
    "WindowState",
    "build_limiter",
    "connect_redis",
    "key_for",
    "rate_limit_headers",
]

RedisClient = Redis | RedisCluster
SCRIPT = (files("gateway") / "rate_limit.lua").read_text(encoding="utf-8")
SETTLE_SCRIPT = (files("gateway") / "settle_tokens.lua").read_text(encoding="utf-8")

# Redis is declared down after this many failed calls in a row, each started after the previous
# failure was seen: a burst of calls that time out together counts once, so a busy Redis stays.
FAILURES_BEFORE_DOWN = 3
# While Redis is down it is pinged this often; the first good answer puts it back in use.
PROBE_INTERVAL = 0.5
REFUSALS_CACHED = 100_000
_FAILURES = (RedisError, OSError, TimeoutError)


def key_for(prefix: str, client: str) -> str:
    """One hash tag per client, so that every key of a client sits in one cluster slot."""
    return f"{prefix}:{{{client}}}:req"


def budget_keys_for(prefix: str, client: str) -> list[str]:
    """The client's token charges and their running totals, in the client's slot."""
    return [f"{prefix}:{{{client}}}:tok", f"{prefix}:{{{client}}}:tok-sum"]


def connect_redis(settings: Settings) -> RedisClient:
    """A client that fails fast: REDIS_TIMEOUT on connect, read and pool wait, no retries."""
    assert settings.redis_url is not None
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(NoBackoff(), 0),
        # No HELLO, CLIENT SETINFO or maintenance notifications: a new connection sends nothing
        # before the script.
        "protocol": 2,
        "driver_info": None,
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=64, timeout=settings.redis_timeout, **options
    )
    return Redis.from_pool(pool)


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
        self._redis = redis
        self._script = redis.register_script(SCRIPT) if redis is not None else None
        self._settle = redis.register_script(SETTLE_SCRIPT) if redis is not None else None
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex()
        # (client, our clock?) -> (sent, refused until, states): tests' times never mix with ours
        self._refused: dict[tuple[str, bool], tuple[int, int, tuple[tuple[int, int], ...]]] = {}
        self._down = False
        self._streak = 0
        self._last_failure = -math.inf
        self._probe: asyncio.Task[None] | None = None
        self.probe_failures = 0

    @property
    def state(self) -> str:
        """embedded (no Redis configured), redis, or the failure mode while Redis is down."""
        if self._redis is None:
            return "embedded"
        return self.mode if self._down else "redis"

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
        if self._script is None:
            return self._local_hit(key, tokens if metered else None, now_us, "embedded")
        sent = _monotonic_us() if now_us is None else now_us
        cached = self._cached_refusal((key, now_us is None), sent)
        if cached is not None:
            return cached
        need = tokens if metered else None
        if self._down:
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
        except _FAILURES as exc:
            self._failed(started, exc)
            return self._fallback(key, need, now_us, exc)
        self._streak = 0
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
        except _FAILURES as exc:
            log.warning("could not settle a token reservation (%s); it stays charged", _name(exc))

    def _local_hit(self, key: str, need: int | None, now_us: int | None, source: str) -> Decision:
        member = self._member()
        verdict = self._local.hit(key, _now_us() if now_us is None else now_us, need, member)
        if need is None:
            return decide(self.limits, verdict, source)
        return decide(self.limits, verdict, source, self.budgets, Reservation(member, need, source))

    async def ready(self) -> bool:
        """Whether requests can be decided: always, unless closed mode has no Redis to ask."""
        if self._redis is None or self.mode != "closed":
            return True
        if self._down:
            return False
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                await self._redis.ping()
        except _FAILURES as exc:
            self._failed(started, exc)
            return False
        return True

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None

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

    def _failed(self, started: float, exc: BaseException) -> None:
        if started < self._last_failure:
            return
        self._last_failure = time.monotonic()
        self._streak += 1
        if self._streak == 1:
            log.info("Redis call failed (%s); REDIS_FAILURE_MODE=%s decides", _name(exc), self.mode)
        if self._streak >= FAILURES_BEFORE_DOWN and not self._down:
            self._down = True
            log.warning(
                "Redis is down after %d failures in a row; REDIS_FAILURE_MODE=%s until it answers",
                self._streak,
                self.mode,
            )
            self._probe = asyncio.create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with asyncio.timeout(self.timeout):
                    await self._redis.ping()
            except _FAILURES:
                self.probe_failures += 1
                continue
            self._down = False
            self._streak = 0
            self._probe = None
            log.warning("Redis answers again; limits are shared again")
            return

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


def build_limiter(settings: Settings, redis: RedisClient | None = None) -> Limiter:
    """The limiter for these settings, on `redis` if given (the caller keeps it and closes it)."""
    return Limiter(settings, redis)


def script_args(windows: Sequence[Window], now_us: int | None, member: str) -> list[str | int]:
    """rate_limit.lua's ARGV: the time ("" for Redis TIME), the member, then the windows."""
    flat = itertools.chain.from_iterable(windows)
    return ["" if now_us is None else now_us, member, len(windows), *flat]


def parse_reply(reply: Any) -> Verdict:
    values = [int(v) for v in reply]
    pairs = tuple(zip(values[1::2], values[2::2], strict=True))
    return values[0] == 1, pairs


def _name(exc: BaseException) -> str:
    return type(exc).__name__
