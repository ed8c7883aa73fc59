"""The Redis backend: rate_limit.lua and settle_tokens.lua, each decision one atomic round trip."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.exceptions import NoScriptError

from gateway.config import Limit
from gateway.limits.backend import BackendUnavailable, Verdict
from gateway.limits.redis_link import (
    FAILURES,
    POOL_SIZE,
    Link,
    RedisClient,
    RedisHealth,
    budget_keys_for,
    failure_name,
    key_for,
)

SCRIPT = (files("gateway.limits") / "rate_limit.lua").read_text(encoding="utf-8")
SETTLE_SCRIPT = (files("gateway.limits") / "settle_tokens.lua").read_text(encoding="utf-8")
# Connections opened at start-up, so that a first burst finds most of what it needs.
WARM_CONNECTIONS = 16


def _flat(limits: Sequence[Limit]) -> list[int]:
    return [len(limits), *itertools.chain.from_iterable((w.micros, w.quantity) for w in limits)]


def script_args(
    limits: Sequence[Limit],
    now: int | None,
    member: str,
    budgets: Sequence[Limit] = (),
    need: int | None = None,
) -> list[str | int]:
    """rate_limit.lua's ARGV: the time ("" for Redis TIME), the member, the request windows, then
    (with `need`) the token budgets and the tokens to reserve."""
    args: list[str | int] = ["" if now is None else now, member, *_flat(limits)]
    if need is not None:
        args += [*_flat(budgets), need]
    return args


def parse_reply(reply: Any) -> Verdict:
    values = [int(v) for v in reply]
    pairs = tuple(zip(values[1::2], values[2::2], strict=True))
    return values[0] == 1, pairs


class RedisBackend:
    """Decides in Redis. A call waits for its answer up to REDIS_CALL_TIMEOUT: a busy Redis or a
    busy event loop only makes it wait. A call that fails (Redis refused, reset, unreachable, or
    silent past that deadline) counts towards declaring Redis down (see RedisHealth) and raises
    BackendUnavailable."""

    source = "redis"

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str,
        limits: Sequence[Limit],
        budgets: Sequence[Limit],
        timeout: float,
        probe_timeout: float,
        mode: str,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.limits = tuple(limits)
        self.budgets = tuple(budgets)
        self.timeout = timeout
        self.health = RedisHealth(redis, timeout, probe_timeout, mode)
        self._script = redis.register_script(SCRIPT)
        self._settle = redis.register_script(SETTLE_SCRIPT)
        # One Redis over redis-py's connections: calls go straight on our own; else (a Cluster,
        # fakeredis) through the client's script objects.
        self._link = Link(redis) if Link.fits(redis) else None
        # Calls wait here rather than open a connection each: a burst never storms Redis.
        self._slots = asyncio.Semaphore(POOL_SIZE)

    async def warm(self, connections: int = WARM_CONNECTIONS) -> None:
        """Open a few connections and load both scripts, so that the first burst finds them.
        Raises BackendUnavailable; a Redis that is down is found so by the first calls (refused
        at once), one that is merely slow here is waited for by them."""
        try:
            async with asyncio.timeout(self.timeout):
                if self._link is None:
                    await asyncio.gather(*(self.redis.ping() for _ in range(connections)))
                    for script in (self._script, self._settle):
                        await self.redis.script_load(script.script)
                else:
                    await asyncio.gather(*(self._link.call("PING") for _ in range(connections)))
                    for script in (self._script, self._settle):
                        await self._link.call("SCRIPT", "LOAD", script.script)
        except FAILURES as exc:
            raise BackendUnavailable(failure_name(exc)) from exc

    @property
    def down(self) -> bool:
        return self.health.down

    async def hit(self, key: str, now: int | None, member: str, need: int | None) -> Verdict:
        keys = [key_for(self.prefix, key)]
        if need is not None:
            keys += budget_keys_for(self.prefix, key)
        args = script_args(self.limits, now, member, self.budgets, need)
        return parse_reply(await self._call(self._script, keys, args))

    async def settle(self, key: str, member: str, reserved: int, used: int) -> None:
        args = [f"{member}:{reserved}", f"{member}:{used}", used - reserved]
        args += [budget.micros for budget in self.budgets]
        # A settlement is not a decision: its failures do not count towards declaring Redis down.
        await self._call(self._settle, budget_keys_for(self.prefix, key), args, decides=False)

    async def _call(
        self, script: Any, keys: list[str], args: list[Any], decides: bool = True
    ) -> Any:
        started = time.monotonic()
        try:
            async with self._slots, asyncio.timeout(self.timeout):
                if self._link is None:
                    reply = await script(keys=keys, args=args)
                else:
                    reply = await self._evalsha(self._link, script, keys, args)
        except FAILURES as exc:
            if decides:
                self.health.failed(started, exc)
            raise BackendUnavailable(failure_name(exc)) from exc
        if decides:
            self.health.succeeded()
        return reply

    @staticmethod
    async def _evalsha(link: Link, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await link.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A Redis restarted or flushed since the script was loaded: load it, send again.
            await link.call("SCRIPT", "LOAD", script.script)
            return await link.call("EVALSHA", script.sha, len(keys), *keys, *args)

    async def ready(self) -> bool:
        return not self.health.down and await self.health.ping()

    async def aclose(self) -> None:
        await self.health.aclose()
        if self._link is not None:
            await self._link.aclose()
