"""The limiter's Redis: a client built to fail fast, the keys it uses, and whether Redis is up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from gateway.config import Settings

log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster
# A Cluster client that reaches none of its nodes raises RedisClusterException, not a RedisError.
FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)

# Redis is declared down after this many failed calls in a row, each started after the previous
# failure was seen: a burst of calls that fail together counts once.
FAILURES_BEFORE_DOWN = 3
# Calls to Redis in flight at once from one process, on every topology: the pool's size. A burst
# of requests waits for a connection instead of opening hundreds at once.
POOL_SIZE = 64
# While Redis is down it is pinged this often; the first good answer puts it back in use.
PROBE_INTERVAL = 0.5


def key_for(prefix: str, client: str) -> str:
    """One hash tag per client, so that every key of a client sits in one cluster slot."""
    return f"{prefix}:{{{client}}}:req"


def budget_keys_for(prefix: str, client: str) -> list[str]:
    """The client's token charges and their running totals, in the client's slot."""
    return [f"{prefix}:{{{client}}}:tok", f"{prefix}:{{{client}}}:tok-sum"]


def connect_redis(settings: Settings) -> RedisClient:
    """A client that tells an unreachable Redis from a slow one. Refused, reset or unroutable
    connections fail at once; anything merely slow (a busy Redis, a busy host that is late to
    read an answer or to finish a connection) may take up to REDIS_CALL_TIMEOUT. A call whose
    connection breaks is sent once more on a new one (the script is idempotent per request)."""
    assert settings.redis_url is not None
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_call_timeout,
        "socket_connect_timeout": settings.redis_call_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        # No HELLO, CLIENT SETINFO or maintenance notifications: a new connection sends nothing
        # before the script.
        "protocol": 2,
        "driver_info": None,
    }
    if settings.redis_cluster:
        # Per node; the backend never has more than POOL_SIZE calls in flight in all.
        return RedisCluster.from_url(settings.redis_url, max_connections=POOL_SIZE, **options)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        timeout=settings.redis_call_timeout,
        **options,
    )
    return Redis.from_pool(pool)


def failure_name(exc: BaseException) -> str:
    return type(exc).__name__


class RedisHealth:
    """Counts failed calls; after repeated ones Redis is down and probed until it answers.

    A probe's PING must answer within `probe_timeout` (REDIS_TIMEOUT) to put Redis back in use;
    a readiness PING may take `timeout` (REDIS_CALL_TIMEOUT), like any call.
    """

    def __init__(self, redis: RedisClient, timeout: float, probe_timeout: float, mode: str) -> None:
        self.redis = redis
        self.timeout = timeout
        self.probe_timeout = probe_timeout
        self.mode = mode
        self.down = False
        self._streak = 0
        self._last_failure = -math.inf
        self._probe: asyncio.Task[None] | None = None

    def succeeded(self) -> None:
        self._streak = 0

    def failed(self, started: float, exc: BaseException) -> None:
        """A call started at `started` (time.monotonic) failed with `exc`."""
        if started < self._last_failure:
            return
        self._last_failure = time.monotonic()
        self._streak += 1
        if self._streak == 1:
            log.info(
                "Redis call failed (%s); REDIS_FAILURE_MODE=%s decides",
                failure_name(exc),
                self.mode,
            )
        if self._streak >= FAILURES_BEFORE_DOWN and not self.down:
            log.warning(
                "Redis is down after %d failures in a row; REDIS_FAILURE_MODE=%s until it answers",
                self._streak,
                self.mode,
            )
            self.mark_down()

    def mark_down(self) -> None:
        """Decide by the failure mode, without waiting on Redis, until a probe finds it again."""
        if not self.down:
            self.down = True
            self._probe = asyncio.create_task(self._probe_until_back())

    async def ping(self) -> bool:
        """Whether Redis answers a PING now (within REDIS_CALL_TIMEOUT, like any call)."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                await self.redis.ping()
        except FAILURES as exc:
            self.failed(started, exc)
            return False
        return True

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None

    async def _probe_until_back(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                async with asyncio.timeout(self.probe_timeout):
                    await self.redis.ping()
            except FAILURES:
                continue
            self.down = False
            self._streak = 0
            self._probe = None
            log.warning("Redis answers again; limits are shared again")
            return
