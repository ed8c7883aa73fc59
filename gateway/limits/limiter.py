"""The rate limiter: one sliding-log decision per request over a backend, and what to do when
Redis fails."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence

from gateway.config import Settings, redis_location
from gateway.errors import LimiterUnavailable
from gateway.limits.backend import Backend, BackendUnavailable, Subject, Verdict
from gateway.limits.decision import Decision, Reservation, decide
from gateway.limits.memory import MemoryBackend
from gateway.limits.redis_backend import RedisBackend
from gateway.limits.redis_link import RedisClient
from gateway.quota import Limit

log = logging.getLogger(__name__)

REFUSALS_CACHED = 100_000
LOOKS_AT_ONCE = 4  # GET /v1/usage calls asking Redis at once, per process

Clock = Callable[[], int]  # microseconds
Limits = tuple[tuple[Limit, ...], tuple[Limit, ...]]  # a subject's request windows and budgets


def _monotonic_us() -> int:
    return time.monotonic_ns() // 1000


def share(limit: Limit, replicas: int) -> Limit:
    """What one of `replicas` replicas may admit alone: rounded down, so that together they
    never admit more than the limit."""
    return Limit(limit.name, limit.seconds, limit.quantity // replicas, limit.unit)


class Limiter:
    """Decides whether a client may make one more request, and records it if so.

    A call is held to its subjects: the client's address (its bucket, with the settings' limits)
    and, when it presents a gateway key with limits of its own, that key; one decision covers
    them all. Without Redis the embedded backend decides. With Redis, a call that fails is
    decided by REDIS_FAILURE_MODE: in process (local), admitted (open), or LimiterUnavailable
    (closed). In local mode this replica admits at most its share of each limit (the limit
    divided by REPLICAS), counting the calls Redis admitted through it. `clock` (microseconds)
    replaces Redis TIME and the process's clocks, for tests.
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
        self.replicas = 1 if redis is None else settings.replicas
        self._local = MemoryBackend()
        # One entry per set of limits (the settings', each key's), never one per client.
        self._shares: dict[Limits, Limits] = {}
        self._looks = asyncio.Semaphore(LOOKS_AT_ONCE)
        self._redis = (
            RedisBackend(
                redis,
                prefix=self.prefix,
                timeout=settings.redis_call_timeout,
                probe_timeout=settings.redis_timeout,
                mode=self.mode,
            )
            if redis is not None
            else None
        )
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex()
        # bucket -> (sent, refused until, its request windows, their states), on the cache's clock
        self._refused: dict[str, tuple[int, int, tuple[Limit, ...], tuple[tuple[int, int], ...]]]
        self._refused = {}

    @property
    def state(self) -> str:
        """embedded (no Redis configured), redis, or the failure mode while Redis is down."""
        if self._redis is None:
            return "embedded"
        return self.mode if self._redis.down else "redis"

    def subjects(self, bucket: str, others: Sequence[Subject] = ()) -> tuple[Subject, ...]:
        """The address's subject (the settings' limits), then the others (a key's)."""
        return (Subject(bucket, self.limits, self.budgets), *others)

    async def hit(
        self, key: str, *, tokens: int | None = None, others: Sequence[Subject] = ()
    ) -> Decision:
        """Count one request of client `key` (and of every subject in `others`) if every window
        admits it.

        With `tokens`, the same round trip also reserves that many tokens if every token budget
        still has room for them; settle() later charges what the call used instead.
        """
        every = self.subjects(key, others)
        need = tokens if tokens is not None and any(s.budgets for s in every) else None
        subjects = tuple(s for s in every if s.limits or (need is not None and s.budgets))
        if not subjects:
            return Decision(True, 0, source="none")
        now = self.clock() if self.clock is not None else None
        if self._redis is None:
            return await self._decide(self._local, subjects, need, now, "embedded")
        sent = now if now is not None else _monotonic_us()
        cached = self._cached_refusal(subjects, sent)
        if cached is not None:
            return cached
        if self._redis.down:
            return await self._fallback(subjects, need, now)
        member = self._member()
        try:
            verdict = await self._redis.hit(subjects, now, member, need)
        except BackendUnavailable as exc:
            return await self._fallback(subjects, need, now, exc)
        if verdict[0]:
            # Known here too, should this replica have to decide alone (REDIS_FAILURE_MODE=local).
            self._local.record(self._share(subjects), now)
        else:
            self._remember_refusal(subjects, sent, verdict, need is not None)
        return self._decision(subjects, verdict, "redis", member, need)

    async def peek(self, subject: Subject) -> Decision:
        """What `subject` holds now, its budgets included; counts nothing. Where Redis cannot
        answer, what this process knows (source local)."""
        now = self.clock() if self.clock is not None else None
        checks = subject.checks(True)
        if self._redis is not None and not self._redis.down:
            try:
                # Looks are not calls: however many come, they hold few of Redis's connections,
                # and the decisions keep the rest.
                async with self._looks:
                    return decide(checks, await self._redis.peek(subject, now), "redis")
            except BackendUnavailable:
                pass
        source = "embedded" if self._redis is None else "local"
        local = self._share((subject,))[0]
        return decide(local.checks(True), await self._local.peek(local, now), source)

    async def settle(
        self, key: str, reservation: Reservation, tokens: int, *, others: Sequence[Subject] = ()
    ) -> None:
        """Charge what an admitted call used in place of what it reserved; never raises.

        A reservation Redis held while Redis is unreachable stays charged in full until its
        windows pass: the budget errs towards the client having spent more, never less.
        """
        backend: Backend | None = self._redis if reservation.source == "redis" else self._local
        assert backend is not None
        subjects = self.subjects(key, others)
        if reservation.source == "local":
            subjects = self._share(subjects)
        try:
            await backend.settle(subjects, reservation.member, reservation.tokens, tokens)
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

    def _share(self, subjects: Sequence[Subject]) -> tuple[Subject, ...]:
        """The subjects as this replica counts them alone: each limit its share."""
        if self.replicas == 1:
            return tuple(subjects)
        shared = []
        for subject in subjects:
            whole = (subject.limits, subject.budgets)
            mine = self._shares.get(whole)
            if mine is None:
                limits = tuple(share(w, self.replicas) for w in subject.limits)
                budgets = tuple(share(b, self.replicas) for b in subject.budgets)
                mine = self._shares[whole] = (limits, budgets)
            shared.append(Subject(subject.bucket, *mine))
        return tuple(shared)

    async def _decide(
        self,
        backend: MemoryBackend,
        subjects: tuple[Subject, ...],
        need: int | None,
        now: int | None,
        source: str,
    ) -> Decision:
        member = self._member()
        verdict = await backend.hit(subjects, now, member, need)
        return self._decision(subjects, verdict, source, member, need)

    def _decision(
        self,
        subjects: tuple[Subject, ...],
        verdict: Verdict,
        source: str,
        member: str,
        need: int | None,
    ) -> Decision:
        checks = tuple(itertools.chain.from_iterable(s.checks(need is not None) for s in subjects))
        if need is None:
            return decide(checks, verdict, source)
        return decide(checks, verdict, source, Reservation(member, need, source))

    async def _fallback(
        self,
        subjects: tuple[Subject, ...],
        need: int | None,
        now: int | None,
        exc: BaseException | None = None,
    ) -> Decision:
        if self.mode == "open":
            return Decision(True, 0, source="open")
        if self.mode == "closed":
            raise LimiterUnavailable(headers={"Retry-After": "1"}) from exc
        return await self._decide(self._local, self._share(subjects), need, now, "local")

    def _cached_refusal(self, subjects: tuple[Subject, ...], now: int) -> Decision | None:
        for subject in subjects:
            entry = self._refused.get(subject.bucket)
            if entry is None:
                continue
            sent, until, limits, states = entry
            if now >= until:
                del self._refused[subject.bucket]
                continue
            elapsed = now - sent
            shifted = tuple((remaining, max(reset - elapsed, 0)) for remaining, reset in states)
            return decide(limits, (False, shifted), "cache")
        return None

    def _remember_refusal(
        self, subjects: tuple[Subject, ...], sent: int, verdict: Verdict, metered: bool
    ) -> None:
        # Measured from when the call was sent, before Redis read its clock: the earliest moment
        # Redis could admit the client, so the cache never refuses what Redis would admit.
        # Only request windows are remembered: a token refusal depends on the call's size.
        at = 0
        for subject in subjects:
            states = verdict[1][at : at + len(subject.limits)]
            at += len(subject.checks(metered))
            if not any(remaining == 0 for remaining, _ in states):
                continue
            wait = max(reset for remaining, reset in states if remaining == 0)
            if len(self._refused) >= REFUSALS_CACHED:
                self._refused = {k: v for k, v in self._refused.items() if v[1] > sent}
                if len(self._refused) >= REFUSALS_CACHED:
                    self._refused.clear()
            self._refused[subject.bucket] = (sent, sent + wait, subject.limits, states)
