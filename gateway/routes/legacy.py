"""The original project's route: validate, ask the upstream (streamed only when the client asked
for a stream), answer in its envelope."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from json.encoder import encode_basestring
from typing import Any, cast

from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from gateway.errors import Forbidden, GatewayError, UpstreamUnavailable
from gateway.http.auth import upstream_key
from gateway.http.body import read_json_object
from gateway.http.caps import check_model
from gateway.http.render import dumps, fail_stream
from gateway.http.sse import SSE_HEADERS, EventStream, sse_event
from gateway.keys import ADMISSION_KEY, EXCHANGE_KEY, SETTINGS_KEY, UPSTREAM_KEY
from gateway.limits.budget import Meter, prompt_estimate
from gateway.routes.legacy_call import Message, parse_request
from gateway.upstream.chat import Answer, ChatRequest, Delta
from gateway.upstream.exchange import Exchange


def success_envelope(messages: list[Message], answer: str) -> dict[str, Any]:
    history = [m.as_dict() for m in messages] + [{"role": "assistant", "content": answer}]
    return {
        "code": 200,
        "msg": "success",
        "data": {"response": answer},
        "current_response": answer,
        "result": history,
    }


async def legacy_get(request: web.Request) -> web.StreamResponse:
    raise Forbidden()


async def legacy_post(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    body = await read_json_object(request)
    call = parse_request(
        body, settings.default_model, settings.default_max_tokens, settings.max_tokens_cap
    )
    check_model(settings, call.model)
    key = upstream_key(request, call.api_key, "unauthorized")
    messages = call.messages()
    sent = [m.as_dict() for m in messages]
    admission = request[ADMISSION_KEY]
    meter = None
    if admission.metered:
        # The prompt as the upstream will receive it, for the worst case the budget reserves.
        size = len(json.dumps(sent, ensure_ascii=False).encode())
        meter = await admission.reserve(size, prompt_estimate(size) + call.max_tokens)
    asked = ChatRequest(
        call.model,
        cast(list[ChatCompletionMessageParam], sent),
        call.max_tokens,
        include_usage=meter is not None,
        stream=call.stream,
    )
    upstream = request.app[UPSTREAM_KEY]
    exchange = request[EXCHANGE_KEY]
    if not call.stream:
        reading = upstream.chat_answer(asked, api_key=key, exchange=exchange)
        answer = await _whole(reading, exchange, meter, admission.settle)
        return web.json_response(success_envelope(messages, answer), dumps=dumps)
    chunks = upstream.chat_chunks(asked, api_key=key, exchange=exchange)
    if meter is not None:
        chunks = _metered(chunks, meter, admission.settle)
    held = Held(settings.max_upstream_body_bytes, exchange)
    async with aclosing(chunks):
        return await _relay(request, chunks, messages, held)


async def _whole(
    reading: Awaitable[Answer],
    exchange: Exchange,
    meter: Meter | None,
    settle: Callable[[], Awaitable[None]],
) -> str:
    """The answer's text; a metered call is settled before the route sends it. An upstream that
    answered (a status below 400) and then broke off is charged the prompt estimate when the
    middleware settles; one that refused, or never answered, nothing."""
    if meter is None:
        return (await reading).text
    try:
        answer = await reading
    finally:
        meter.answered = exchange.status is not None and exchange.status < 400
    meter.usage = answer.usage
    if answer.usage is None:
        # The upstream did not count: the answer is estimated as the prompt is, by its bytes.
        meter.produced = prompt_estimate(len(answer.text.encode()))
    await settle()
    return answer.text


class Held:
    """A stream's answer so far, which the route sends whole in its last event; an answer longer
    than MAX_UPSTREAM_BODY_BYTES (counted in characters) ends the call rather than grow for ever."""

    def __init__(self, cap: int, exchange: Exchange) -> None:
        self.cap = cap
        self.exchange = exchange
        self.parts: list[str] = []
        self.size = 0

    def add(self, texts: list[str]) -> None:
        self.parts += texts
        self.size += sum(map(len, texts))
        if self.size > self.cap:
            self.exchange.failed("oversized answer")
            raise UpstreamUnavailable("upstream_too_large")

    def answer(self) -> str:
        return "".join(self.parts)


async def _metered(
    chunks: AsyncGenerator[list[Delta], None], meter: Meter, settle: Callable[[], Awaitable[None]]
) -> AsyncGenerator[list[Delta], None]:
    """The deltas, counted as they pass, and settled as soon as they end (before the route's
    last event, so the client's next call finds the charge settled)."""
    async with aclosing(chunks):
        async for deltas in chunks:
            meter.answered = True
            for delta in deltas:
                if delta.usage is not None:
                    meter.usage = delta.usage
                elif delta.text:
                    meter.produced += 1
            yield deltas
    await settle()


async def _relay(
    request: web.Request,
    chunks: AsyncIterator[list[Delta]],
    messages: list[Message],
    held: Held,
) -> web.StreamResponse:
    """Send the deltas as they arrive, then the whole envelope; a late failure is an error event.

    The deltas that arrived together leave in one write. Headers wait for the first text, so a
    fault before it is still a plain error."""
    response = EventStream(headers=SSE_HEADERS)
    try:
        async for deltas in chunks:
            texts = [delta.text for delta in deltas if delta.text]
            if texts:
                held.add(texts)
                if not response.prepared:
                    await response.prepare(request)
                await response.write(b"".join(_delta_event(text) for text in texts))
    except ConnectionResetError:
        raise
    except Exception as exc:
        if not response.prepared:
            raise
        # After the headers, any fault (ours included) can only be the stream's error event.
        await fail_stream(
            request, response, exc if isinstance(exc, GatewayError) else GatewayError()
        )
        return response
    if not response.prepared:
        await response.prepare(request)
    envelope = success_envelope(messages, held.answer())
    await response.write_eof(sse_event(envelope, event="done"))
    return response


def _delta_event(text: str) -> bytes:
    # sse_event({"delta": text}, event="delta"), byte for byte, without building an encoder for
    # each of a stream's many deltas.
    return f'event: delta\ndata: {{"delta": {encode_basestring(text)}}}\n\n'.encode()
