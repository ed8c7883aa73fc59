"""The Redis backend: rate_limit.lua and settle_tokens.lua, each decision one atomic round trip
(on a Cluster, one for each subject of a call)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from importlib.resources import files
from typing import Any, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from gateway.limits.backend import BackendUnavailable, Subject, Verdict
from gateway.limits.link import Link
from gateway.limits.redis_link import (
    FAILURES,
    POOL_SIZE,
    RedisClient,
    RedisHealth,
    budget_keys_for,
    failure_name,
    key_for,
)
from gateway.quota import Limit

SCRIPT = (files("gateway.limits") / "rate_limit.lua").read_text(encoding="utf-8")
SETTLE_SCRIPT = (files("gateway.limits") / "settle_tokens.lua").read_text(encoding="utf-8")
TAKE_BACK_SCRIPT = (files("gateway.limits") / "take_back.lua").read_text(encoding="utf-8")

log = logging.getLogger(__name__)

# Connections opened at start-up, so that a first burst finds most of what it needs.
WARM_CONNECTIONS = 16


def _flat(limits: Sequence[Limit]) -> list[int]:
    return [len(limits), *itertools.chain.from_iterable((w.micros, w.quantity) for w in limits)]


def script_args(
    subjects: Sequence[Subject], now: int | None, member: str, need: int | None = None
) -> list[str | int]:
    """rate_limit.lua's ARGV: the time ("" for Redis TIME), the member, then each subject's
    request windows and (with `need`) its token budgets, then the tokens to reserve."""
    args: list[str | int] = ["" if now is None else now, member, len(subjects)]
    for subject in subjects:
        args += _flat(subject.limits)
        args += _flat(subject.budgets if need is not None else ())
    args.append(need or 0)
    return args


def script_keys(prefix: str, subjects: Sequence[Subject]) -> list[str]:
    return [
        k for s in subjects for k in (key_for(prefix, s.bucket), *budget_keys_for(prefix, s.bucket))
    ]


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
        timeout: float,
        probe_timeout: float,
        mode: str,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.timeout = timeout
        self.health = RedisHealth(redis, timeout, probe_timeout, mode)
        self._script = redis.register_script(SCRIPT)
        self._settle = redis.register_script(SETTLE_SCRIPT)
        self._take_back_script = redis.register_script(TAKE_BACK_SCRIPT)
        # A Cluster keeps each subject in its own slot: one script cannot reach them all.
        self.cluster = isinstance(redis, RedisCluster)
        # One Redis over redis-py's connections: calls go straight on our own; else (a Cluster,
        # fakeredis) through the client's script objects.
        self._link = Link(redis, timeout) if Link.fits(redis) else None
        # Calls wait here rather than open a connection each: a burst never storms Redis.
        self._slots = asyncio.Semaphore(POOL_SIZE)

    async def warm(self, connections: int = WARM_CONNECTIONS) -> None:
        """Open a few connections and load the scripts, so that the first burst finds them.
        Raises BackendUnavailable; a Redis that is down is found so by the first calls (refused
        at once), one that is merely slow here is waited for by them."""
        try:
            async with asyncio.timeout(self.timeout):
                scripts = (self._script, self._settle, self._take_back_script)
                if self._link is None:
                    await asyncio.gather(*(self.redis.ping() for _ in range(connections)))
                    for script in scripts:
                        await self.redis.script_load(script.script)
                else:
                    await self._link.open(connections)
                    for script in scripts:
                        await self._link.call("SCRIPT", "LOAD", cast(str, script.script))
        except FAILURES as exc:
            raise BackendUnavailable(failure_name(exc)) from exc

    @property
    def down(self) -> bool:
        return self.health.down

    async def hit(
        self, subjects: Sequence[Subject], now: int | None, member: str, need: int | None
    ) -> Verdict:
        if len(subjects) == 1 or not self.cluster:
            keys = script_keys(self.prefix, subjects)
            return parse_reply(
                await self._call(self._script, keys, script_args(subjects, now, member, need))
            )
        return await self._hit_in_turn(subjects, now, member, need)

    async def _hit_in_turn(
        self, subjects: Sequence[Subject], now: int | None, member: str, need: int | None
    ) -> Verdict:
        """On a Cluster, each subject in its own slot: decided one after the other, the client's
        address first. Once one refuses, the rest are only looked at, and the call is taken back
        from those that admitted it. No subject ever admits more than its limit; a concurrent
        call may find a subject full for the moment a call it then gives back holds a place."""
        states: list[tuple[int, int]] = []
        admitted: list[Subject] = []
        for subject in subjects:
            keys = script_keys(self.prefix, (subject,))
            args = script_args((subject,), now, member, need)
            try:
                allowed, pairs = parse_reply(await self._call(self._script, keys, args))
            except BackendUnavailable:
                await asyncio.shield(self._take_back(admitted, member, need))
                raise
            if not allowed:
                break
            states += pairs
            admitted.append(subject)
        else:
            return True, tuple(states)
        # Refused: taken back (shielded, so a client hanging up cannot leave a place held), and
        # reported as a refused call finds each subject, without this call's place.
        await asyncio.shield(self._take_back(admitted, member, need))
        given = [
            1 if limit.unit == "requests" else need or 0
            for s in admitted
            for limit in s.checks(need is not None)
        ]
        states = [(left + back, reset) for (left, reset), back in zip(states, given, strict=True)]
        states += pairs
        for rest in subjects[len(admitted) + 1 :]:
            states += await self._look(rest, now, need is not None)
        return False, tuple(states)

    async def _look(
        self, subject: Subject, now: int | None, metered: bool
    ) -> tuple[tuple[int, int], ...]:
        """A subject's states without counting; as if empty where Redis does not answer."""
        try:
            return (await self.peek(subject, now, metered))[1]
        except BackendUnavailable:
            return tuple((limit.quantity, 0) for limit in subject.checks(metered))

    async def _take_back(self, subjects: list[Subject], member: str, need: int | None) -> None:
        for subject in subjects:
            tokens = "" if need is None or not subject.budgets else need
            args = [member, tokens, *(budget.micros for budget in subject.budgets)]
            keys = script_keys(self.prefix, (subject,))
            try:
                await self._call(self._take_back_script, keys, args, decides=False)
            except BackendUnavailable as exc:
                log.warning("could not take back a call another limit refused (%s)", exc)

    async def peek(self, subject: Subject, now: int | None, metered: bool = True) -> Verdict:
        """rate_limit.lua with no member: the subject's states (its budgets too, if `metered`)
        as if a call of no tokens were admitted, nothing counted."""
        keys = script_keys(self.prefix, (subject,))
        args = script_args((subject,), now, "", 0 if metered else None)
        return parse_reply(await self._call(self._script, keys, args, decides=False))

    async def settle(
        self, subjects: Sequence[Subject], member: str, reserved: int, used: int
    ) -> None:
        metered = [s for s in subjects if s.budgets]
        # A settlement is not a decision: its failures do not count towards declaring Redis down.
        for group in ([s] for s in metered) if self.cluster else (metered,):
            args: list[Any] = [f"{member}:{reserved}", f"{member}:{used}", used - reserved]
            for subject in group:
                args += [len(subject.budgets), *(b.micros for b in subject.budgets)]
            keys = [k for s in group for k in budget_keys_for(self.prefix, s.bucket)]
            await self._call(self._settle, keys, args, decides=False)

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
            await link.call("SCRIPT", "LOAD", cast(str, script.script))
            return await link.call("EVALSHA", script.sha, len(keys), *keys, *args)

    async def ready(self) -> bool:
        return not self.health.down and await self.health.ping()

    async def aclose(self) -> None:
        await self.health.aclose()
        if self._link is not None:
            await self._link.aclose()
