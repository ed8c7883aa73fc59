"""The rate limiter: one sliding-log decision per request over a backend, and what to do when
Redis fails."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable

from gateway.config import Limit, Settings, redis_location
from gateway.errors import LimiterUnavailable
from gateway.limits.backend import BackendUnavailable, Verdict
from gateway.limits.decision import Decision, Reservation, decide
from gateway.limits.memory import MemoryBackend
from gateway.limits.redis_backend import RedisBackend
from gateway.limits.redis_link import RedisClient

log = logging.getLogger(__name__)

REFUSALS_CACHED = 100_000

Clock = Callable[[], int]  # microseconds


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


def share(limit: Limit, replicas: int) -> Limit:
    """What one of `replicas` replicas may admit alone: rounded down, so that together they
    never admit more than the limit."""
    return Limit(limit.name, limit.seconds, limit.quantity // replicas, limit.unit)


class Limiter:
    """Decides whether a client may make one more request, and records it if so.

    Without Redis the embedded backend decides. With Redis, a call that fails is decided by
    REDIS_FAILURE_MODE: in process (local), admitted (open), or LimiterUnavailable (closed). In
    local mode this replica admits at most its share of each limit (the limit divided by
    REPLICAS), counting the calls Redis admitted through it. `clock` (microseconds) replaces
    Redis TIME and the process's clocks, for tests.
    """

    def __init__(
        self, settings: Settings, redis: RedisClient | None = None, *, clock: Clock | None = None
    ) -> None:
        self.limits = settings.limits
        self.budgets = settings.budgets
        self.prefix = settings.key_prefix
        self.mode = settings.redis_failure_mode
        self.clock = clock
        self.where = (
            redis_location(settings.redis_url, settings.redis_cluster) if settings.redis_url else ""
        )
        if redis is None:
            self._local_limits, self._local_budgets = self.limits, self.budgets
        else:
            self._local_limits = tuple(share(w, settings.replicas) for w in self.limits)
            self._local_budgets = tuple(share(b, settings.replicas) for b in self.budgets)
        self._local = MemoryBackend(self._local_limits, self._local_budgets)
        self._redis = (
            RedisBackend(
                redis,
                prefix=self.prefix,
                limits=self.limits,
                budgets=self.budgets,
                timeout=settings.redis_call_timeout,
                probe_timeout=settings.redis_timeout,
                mode=self.mode,
            )
            if redis is not None
            else None
        )
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex()
        # client -> (sent, refused until, states), on the cache's clock
        self._refused: dict[str, tuple[int, int, tuple[tuple[int, int], ...]]] = {}

    @property
    def state(self) -> str:
        """embedded (no Redis configured), redis, or the failure mode while Redis is down."""
        if self._redis is None:
            return "embedded"
        return self.mode if self._redis.down else "redis"

    async def hit(self, key: str, *, tokens: int | None = None) -> Decision:
        """Count one request of client `key` if every window admits it.

        With `tokens`, the same round trip also reserves that many tokens if every token budget
        still has room for them; settle() later charges what the call used instead.
        """
        need = tokens if tokens is not None and self.budgets else None
        if not self.limits and need is None:
            return Decision(True, 0, source="none")
        now = self.clock() if self.clock is not None else None
        if self._redis is None:
            return await self._decide(self._local, key, need, now, "embedded")
        sent = now if now is not None else _monotonic_us()
        cached = self._cached_refusal(key, sent)
        if cached is not None:
            return cached
        if self._redis.down:
            return await self._fallback(key, need, now)
        member = self._member()
        try:
            verdict = await self._redis.hit(key, now, member, need)
        except BackendUnavailable as exc:
            return await self._fallback(key, need, now, exc)
        if verdict[0]:
            # Known here too, should this replica have to decide alone (REDIS_FAILURE_MODE=local).
            self._local.record(key, now)
        else:
            self._remember_refusal(key, sent, verdict)
        return self._decision(verdict, "redis", member, need)

    async def settle(self, key: str, reservation: Reservation, tokens: int) -> None:
        """Charge what an admitted call used in place of what it reserved; never raises.

        A reservation Redis held while Redis is unreachable stays charged in full until its
        windows pass: the budget errs towards the client having spent more, never less.
        """
        backend = self._redis if reservation.source == "redis" else self._local
        assert backend is not None
        try:
            await backend.settle(key, reservation.member, reservation.tokens, tokens)
        except BackendUnavailable as exc:
            log.warning("could not settle a token reservation (%s); it stays charged", exc)

    async def start(self) -> None:
        """Open connections to Redis and load its scripts, and say in one line whether it
        answered; the gateway starts either way."""
        if self._redis is None:
            return
        where = self.where or "Redis"
        try:
            await self._redis.warm()
        except BackendUnavailable as exc:
            log.warning(
                "%s did not answer at start-up (%s); REDIS_FAILURE_MODE=%s decides until it does",
                where,
                exc,
                self.mode,
            )
        else:
            log.info("%s answered; REDIS_FAILURE_MODE=%s while it does not", where, self.mode)

    async def ready(self) -> bool:
        """Whether requests can be decided: always, unless closed mode has no Redis to ask."""
        if self._redis is None or self.mode != "closed":
            return True
        return await self._redis.ready()

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _member(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    async def _decide(
        self, backend: MemoryBackend, key: str, need: int | None, now: int | None, source: str
    ) -> Decision:
        member = self._member()
        return self._decision(await backend.hit(key, now, member, need), source, member, need)

    def _decision(self, verdict: Verdict, source: str, member: str, need: int | None) -> Decision:
        limits, budgets = (
            (self._local_limits, self._local_budgets)
            if source == "local"
            else (self.limits, self.budgets)
        )
        if need is None:
            return decide(limits, verdict, source)
        return decide(limits, verdict, source, budgets, Reservation(member, need, source))

    async def _fallback(
        self, key: str, need: int | None, now: int | None, exc: BaseException | None = None
    ) -> Decision:
        if self.mode == "open":
            return Decision(True, 0, source="open")
        if self.mode == "closed":
            raise LimiterUnavailable(headers={"Retry-After": "1"}) from exc
        return await self._decide(self._local, key, need, now, "local")

    def _cached_refusal(self, key: str, now: int) -> Decision | None:
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

    def _remember_refusal(self, key: str, sent: int, verdict: Verdict) -> None:
        # Measured from when the call was sent, before Redis read its clock: the earliest moment
        # Redis could admit the client, so the cache never refuses what Redis would admit.
        # Only request windows are remembered: a token refusal depends on the call's size.
        states = verdict[1][: len(self.limits)]
        if not any(remaining == 0 for remaining, _ in states):
            return
        wait = max(reset for remaining, reset in states if remaining == 0)
        if len(self._refused) >= REFUSALS_CACHED:
            self._refused = {k: v for k, v in self._refused.items() if v[1] > sent}
            if len(self._refused) >= REFUSALS_CACHED:
                self._refused.clear()
        self._refused[key] = (sent, sent + wait, states)
