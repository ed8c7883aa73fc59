"""One limited request's dealings with the limiter: admitted once, reserved once, settled once."""

from __future__ import annotations

import asyncio
import time

from gateway.errors import BadRequest, RateLimited
from gateway.limits.backend import Subject
from gateway.limits.budget import Meter, prompt_estimate
from gateway.limits.decision import Decision, Reservation
from gateway.limits.limiter import Limiter
from gateway.quota import Limit


def refuse(decision: Decision) -> None:
    """Raise the 429 for a refused decision: a request window's, or a token budget's."""
    blocked = decision.blocked_by
    if decision.allowed or blocked is None:
        return
    code = "token_budget_exceeded" if blocked.limit.unit == "tokens" else "too_many_requests"
    raise RateLimited(
        code,
        headers={"Retry-After": str(decision.retry_after)},
        limit=blocked.quantity,
        window=blocked.name,
        seconds=decision.retry_after,
    )


class Admission:
    """Created by the middleware for each request to a limited route, and finished by it.

    A plain limited call is admitted before its handler runs. A metered call (a token budget is
    set and the route counts tokens) is admitted by its handler through reserve(), once the body
    says what the call may cost; the request count and the reservation share one limiter call.
    Its tokens are settled by settle() exactly once, whichever way the call ends.
    """

    def __init__(
        self,
        limiter: Limiter,
        bucket: str,
        others: tuple[Subject, ...] = (),
        *,
        metered: bool = False,
    ) -> None:
        """`others`: the subjects besides the client's address (a gateway key with its own
        limits); `metered`: the route counts tokens, so the call is held to every budget."""
        self.limiter = limiter
        self.bucket = bucket
        self.others = others
        every = limiter.budgets + tuple(b for s in others for b in s.budgets)
        self.budgets = every if metered else ()
        self.decision: Decision | None = None
        self.started: float | None = None  # when the decision was asked (time.perf_counter)
        self.seconds: float | None = None  # how long the limiter took to decide
        self.meter: Meter | None = None
        self._reservation: Reservation | None = None

    @property
    def metered(self) -> bool:
        return bool(self.budgets)

    @property
    def limits(self) -> tuple[Limit, ...]:
        """Every request window the call is held to: the address's, then its key's."""
        return self.limiter.limits + tuple(w for s in self.others for w in s.limits)

    async def admit(self, tokens: int | None = None) -> Decision:
        """The one limiter decision for this request; a refusal raises the 429."""
        started = self.started = time.perf_counter()
        try:
            decision = await self.limiter.hit(self.bucket, tokens=tokens, others=self.others)
        finally:
            self.seconds = time.perf_counter() - started
        self.decision = decision
        refuse(decision)
        return decision

    async def reserve(self, prompt_bytes: int, worst: int) -> Meter | None:
        """Admit a metered call whose prompt is `prompt_bytes` long with `worst` tokens reserved.

        Returns the meter that the handler feeds with what the call costs, or None when nothing
        was reserved (REDIS_FAILURE_MODE=open while Redis is down).
        """
        for budget in self.budgets:
            if worst > budget.quantity:
                # Waiting would not help, so this is the request's fault (a 400), not a 429.
                raise BadRequest(
                    "token_request_too_large",
                    param="max_tokens",
                    tokens=worst,
                    limit=budget.quantity,
                    window=budget.name,
                )
        reservation = (await self.admit(worst)).reservation
        if reservation is None:
            return None
        self._reservation = reservation
        self.meter = Meter(prompt_estimate(prompt_bytes))
        return self.meter

    async def settle(self) -> None:
        """Charge the call what its meter says in place of its reservation, the first time only.

        Handlers call it as soon as the answer is complete (before the client sees its end, so
        the client's next call finds the charge settled); the middleware calls it on every exit.
        Shielded, so a client hanging up cannot stop it halfway.
        """
        reservation, self._reservation = self._reservation, None
        if reservation is None or self.meter is None:
            return
        settling = self.limiter.settle(
            self.bucket, reservation, self.meter.charge(), others=self.others
        )
        await asyncio.shield(settling)

    async def count_refused(self) -> None:
        """A metered call refused before its tokens could be weighed (bad body, no key) still
        counts once against the request limits."""
        if self.decision is None:
            await self.admit()
