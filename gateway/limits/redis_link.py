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
from redis.exceptions import RedisError

from gateway.config import Settings

log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster
FAILURES = (RedisError, OSError, TimeoutError)

# Redis is declared down after this many failed calls in a row, each started after the previous
# failure was seen: a burst of calls that time out together counts once, so a busy Redis stays.
FAILURES_BEFORE_DOWN = 3
# While Redis is down it is pinged this often; the first good answer puts it back in use.
PROBE_INTERVAL = 0.5


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


def failure_name(exc: BaseException) -> str:
    return type(exc).__name__


class RedisHealth:
    """Counts failed calls; after repeated ones Redis is down and probed until it answers."""

    def __init__(self, redis: RedisClient, timeout: float, mode: str) -> None:
        self.redis = redis
        self.timeout = timeout
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
            self.down = True
            log.warning(
                "Redis is down after %d failures in a row; REDIS_FAILURE_MODE=%s until it answers",
                self._streak,
                self.mode,
            )
            self._probe = asyncio.create_task(self._probe_until_back())

    async def ping(self) -> bool:
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
                async with asyncio.timeout(self.timeout):
                    await self.redis.ping()
            except FAILURES:
                continue
            self.down = False
            self._streak = 0
            self._probe = None
            log.warning("Redis answers again; limits are shared again")
            return
