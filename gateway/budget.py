"""Token budgets: what a call may cost, reserved at admission, and what it cost, at its end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

from aiohttp import web

from gateway.access import upstream_usage
from gateway.config import Settings
from gateway.errors import BadRequest
from gateway.keys import BUCKET_KEY, LIMITER_KEY, SETTINGS_KEY
from gateway.middleware import admit
from gateway.upstream import Delta

Settle = Callable[[int], Awaitable[None]]

# Tokens are counted by the upstream; before it has, a prompt is taken as one token per four bytes
# of the request body (tools and schemas count as prompt too), which errs on the high side.
BYTES_PER_TOKEN = 4
_INJECTED = b'"stream_options":{"include_usage":true},'


def prompt_estimate(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def worst_case(call: Mapping[str, Any], size: int, default_reserve: int, *, completes: bool) -> int:
    """The prompt estimate plus every completion the call may ask for (max_tokens times n)."""
    if not completes:
        return prompt_estimate(size)
    limit = _count(call.get("max_completion_tokens")) or _count(call.get("max_tokens"))
    choices = max(_count(call.get("n")) or 1, _count(call.get("best_of")) or 1)
    return prompt_estimate(size) + (limit or default_reserve) * choices


def with_usage(raw: bytes, call: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The body asking for a usage chunk at the stream's end, and whether the client had not asked.

    A body without stream_options gets the field spliced in, so every other byte stays as sent.
    """
    options = call.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return raw, False
    if "stream_options" not in call:
        head = raw.index(b"{") + 1
        return raw[:head] + _INJECTED + raw[head:], True
    merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps({**call, "stream_options": merged}, ensure_ascii=False).encode(), True


def body_usage(body: bytes) -> Any:
    """The `usage` member of a JSON answer, if it has one."""
    try:
        return json.loads(body).get("usage")
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None


def usage_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt + completion
    total = usage.get("total_tokens")
    return total if isinstance(total, int) else None


def _produced(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls") or delta.get("refusal"))
    return bool(choice.get("text"))


class Meter:
    """What one call has cost so far: the upstream's usage once known, else an estimate.

    Until the usage arrives, each streamed chunk that carries output counts as one token (what
    OpenAI sends), on top of the prompt estimate: the charge for a stream cut short.
    """

    def __init__(
        self, prompt: int, *, hide_usage: bool = False, settle: Settle | None = None
    ) -> None:
        self.prompt = prompt
        self.hide_usage = hide_usage
        self.usage: int | None = None
        self.produced = 0
        self.answered = False
        self._settle = settle

    def observe_event(self, data: bytes) -> bool:
        """Count one streamed event's data; False if the client must not see the event."""
        if not data.startswith(b"{"):
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            return True
        if not isinstance(chunk, dict):
            return True
        choices = chunk.get("choices")
        if isinstance(choices, list) and any(_produced(c) for c in choices):
            self.produced += 1
        used = usage_tokens(chunk.get("usage"))
        if used is None:
            return True
        upstream_usage(chunk["usage"])
        self.usage = used
        return not (self.hide_usage and not choices)

    def observe_body(self, body: bytes) -> None:
        usage = body_usage(body)
        self.usage = usage_tokens(usage)
        upstream_usage(usage)

    async def settle(self) -> None:
        """Charge the call once; shielded, so a client hanging up cannot stop it halfway."""
        settle, self._settle = self._settle, None
        if settle is not None:
            await asyncio.shield(settle(self.charge()))

    def charge(self) -> int:
        """The usage reported, else the estimate; nothing if the upstream refused or was silent."""
        if self.usage is not None:
            return self.usage
        return self.prompt + self.produced if self.answered else 0


async def reserve(request: web.Request, tokens: int) -> Settle | None:
    """Admit a metered call: count the request and reserve `tokens` in one limiter round trip.

    Raises the 429; returns what settles the reservation, or None if nothing was reserved
    (REDIS_FAILURE_MODE=open while Redis is down).
    """
    settings: Settings = request.app[SETTINGS_KEY]
    for window, _, budget in settings.budgets:
        if tokens > budget:
            # Waiting would not help, so this is the request's fault (a 400), not a 429.
            raise BadRequest(
                "token_request_too_large",
                param="max_tokens",
                tokens=tokens,
                limit=budget,
                window=window,
            )
    limiter = request.app[LIMITER_KEY]
    key = request[BUCKET_KEY]
    reservation = (await admit(request, key, tokens)).reservation
    if reservation is None:
        return None

    async def settle(used: int) -> None:
        await limiter.settle(key, reservation, used)

    return settle


async def meter_for(request: web.Request, size: int, worst: int) -> Meter | None:
    """A meter for a metered call whose prompt is `size` bytes, admitted with `worst` tokens
    reserved; None when nothing was reserved."""
    settle = await reserve(request, worst)
    return None if settle is None else Meter(prompt_estimate(size), settle=settle)


async def metered_deltas(
    deltas: AsyncGenerator[Delta, None], meter: Meter
) -> AsyncGenerator[Delta, None]:
    """The legacy route's deltas, counted as they pass, and settled as soon as they end (before
    the route's last event, so the client's next call finds the charge settled)."""
    async with aclosing(deltas):
        async for delta in deltas:
            meter.answered = True
            if delta.prompt_tokens or delta.completion_tokens:
                meter.usage = delta.prompt_tokens + delta.completion_tokens
            elif delta.text:
                meter.produced += 1
            yield delta
    await meter.settle()
