"""OpenAI's own API relayed to OPENAI_BASE_URL: JSON as it comes, SSE event by event, as bytes."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.body import parse_json_object, read_body
from gateway.budget import Meter, meter_for, with_usage, worst_case
from gateway.errors import GatewayError, NotFound, Unauthorized, UpstreamUnavailable
from gateway.keys import SETTINGS_KEY, UPSTREAM_KEY
from gateway.render import openai_error
from gateway.sse import HEARTBEAT, SSE_HEADERS
from gateway.upstream import map_status

log = logging.getLogger(__name__)

T = TypeVar("T")

_FORWARDED = ("Accept", "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta")
_RELAYED = ("content-encoding", "x-request-id", "x-should-retry", "retry-after", "retry-after-ms")
_RELAYED_PREFIXES = ("openai-", "x-ratelimit-")
# An SSE event ends with a blank line; the spec allows all three line endings.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class ClientGone(Exception):
    """The client hung up. Kept apart from aiohttp's reset error, which is also a ClientError."""


async def _send(response: web.StreamResponse, request: web.Request, data: bytes = b"") -> None:
    try:
        if not response.prepared:
            await response.prepare(request)
        if data:
            await response.write(data)
    except ConnectionResetError as exc:
        raise ClientGone() from exc


class Heartbeat:
    """Waits on the upstream; every STREAM_HEARTBEAT seconds meanwhile, an SSE comment goes out.

    The first comment sends the headers (status 200), so errors known before it still get theirs.
    """

    def __init__(
        self, request: web.Request, response: web.StreamResponse, interval: float | None
    ) -> None:
        self.request = request
        self.response = response
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.due = self.loop.time() + (interval or 0.0)

    async def wait(self, awaitable: Awaitable[T]) -> T:
        if self.interval is None:
            return await awaitable
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, self.due - self.loop.time()))
                if done:
                    return task.result()
                await _send(self.response, self.request, HEARTBEAT)
                self.due += self.interval
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled():
                task.exception()


class EventSplitter:
    """Cuts a byte stream into whole SSE events, each kept byte for byte with its blank line."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self.rest += chunk
        events = []
        start = 0
        for match in _EVENT_END.finditer(self.rest):
            events.append(self.rest[start : match.end()])
            start = match.end()
        self.rest = self.rest[start:]
        return events


def event_data(event: bytes) -> bytes:
    lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    return b"\n".join(data)


def _error_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def _openai_shaped(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data
    return None


def _ends_stream(event: bytes) -> bool:
    data = event_data(event)
    return data.startswith(b"[DONE]") or (b'"error"' in data and _openai_shaped(data) is not None)


def upstream_key(request: web.Request) -> str:
    """The client's bearer token, else API_KEY; with neither, 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = request.app[SETTINGS_KEY].api_key
    if api_key:
        return api_key.reveal()
    raise Unauthorized("missing_api_key")


def _forward_headers(request: web.Request, has_body: bool) -> dict[str, str]:
    headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
    # Bytes are relayed as they come, so nothing may be compressed on the way in.
    headers["Accept-Encoding"] = "identity"
    if has_body:
        headers["Content-Type"] = "application/json"
    return headers


def _relayed_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict[str]:
    relayed: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.headers.items():
        lower = name.lower()
        if lower in _RELAYED or lower.startswith(_RELAYED_PREFIXES):
            relayed.add(name, value)
    return relayed


def _is_sse(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.content_type == "text/event-stream"


async def relay(
    request: web.Request,
    method: str,
    path: str,
    *,
    key: str,
    body: bytes | None,
    stream: bool,
    meter: Meter | None = None,
) -> web.StreamResponse:
    """Send the call upstream and relay what comes back: JSON whole, SSE event by event.

    With a meter, what the call cost is settled before the upstream response is let go, so that
    a client that hangs up is charged before anyone can see the upstream stop.
    """
    upstream = request.app[UPSTREAM_KEY]
    interval = request.app[SETTINGS_KEY].stream_heartbeat
    response = web.StreamResponse(headers=SSE_HEADERS.copy())
    beat = Heartbeat(request, response, interval if stream else None)
    headers = _forward_headers(request, body is not None)
    try:
        async with AsyncExitStack() as stack:
            opening = upstream.request(method, path, api_key=key, body=body, headers=headers)
            opened = await beat.wait(stack.enter_async_context(opening))
            if meter is not None:
                meter.answered = opened.status < 400
                stack.push_async_callback(meter.settle)
            if response.prepared or (opened.status == 200 and _is_sse(opened) and stream):
                return await _relay_stream(request, response, beat, opened, meter)
            data = await beat.wait(opened.read())
            if meter is not None and meter.answered:
                meter.observe_body(data)
            relayed = _relayed_headers(opened)
            relayed["Content-Type"] = opened.headers.get("Content-Type", "application/json")
            return web.Response(body=data, status=opened.status, headers=relayed)
    except ClientGone:
        log.info("client went away during %s", path)
        return response
    except GatewayError as exc:
        if not response.prepared:
            raise
        log.warning("upstream failed mid-stream: %s", exc.code)
        await _finish(request, response, _error_event(openai_error(request, exc)))
        return response


async def _finish(request: web.Request, response: web.StreamResponse, last: bytes) -> None:
    try:
        await _send(response, request, last)
        await response.write_eof()
    except (ClientGone, ConnectionResetError):
        log.info("client went away before the stream's end")


async def _read(opened: aiohttp.ClientResponse) -> bytes:
    try:
        return await opened.content.readany()
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamUnavailable("upstream_stream_broken") from exc


async def _relay_stream(
    request: web.Request,
    response: web.StreamResponse,
    beat: Heartbeat,
    opened: aiohttp.ClientResponse,
    meter: Meter | None,
) -> web.StreamResponse:
    if opened.status != 200:
        # Headers went out with a heartbeat: the upstream's refusal can only be an error event.
        body = await opened.read()
        shaped = _openai_shaped(body)
        if shaped is None:
            shaped = openai_error(request, map_status(opened.status, ""))
        await _finish(request, response, _error_event(shaped))
        return response
    if not response.prepared:
        response.headers.update(_relayed_headers(opened))
        await _send(response, request)
    splitter = EventSplitter()
    ended = False
    chunk = await beat.wait(_read(opened))
    while chunk:
        for event in splitter.feed(chunk):
            last = _ends_stream(event)
            ended = ended or last
            shown = meter is None or meter.observe_event(event_data(event))
            if last and meter is not None:
                # Charged before the client sees the end, so its next call finds it settled.
                await meter.settle()
            if shown:
                await _send(response, request, event)
        chunk = await _read(opened)
    if not ended:
        raise UpstreamUnavailable("upstream_stream_broken")
    if splitter.rest:
        await _send(response, request, splitter.rest)
    await _finish(request, response, b"")
    return response


async def relay_post(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings."""
    key = upstream_key(request)
    raw = await read_body(request)
    call = parse_json_object(request, raw)
    path = request.path.removeprefix("/v1/")
    stream = call.get("stream") is True
    reserve = request.app[SETTINGS_KEY].default_reserve_tokens
    worst = worst_case(call, len(raw), reserve, completes=path != "embeddings")
    meter = await meter_for(request, len(raw), worst)
    if meter is not None and stream:
        raw, meter.hide_usage = with_usage(raw, call)
    try:
        return await relay(request, "POST", path, key=key, body=raw, stream=stream, meter=meter)
    finally:
        if meter is not None:
            await meter.settle()


async def relay_models(request: web.Request) -> web.StreamResponse:
    """GET /v1/models and /v1/models/{model}."""
    model = request.match_info.get("model")
    if model in (".", ".."):
        raise NotFound()
    path = "models" if model is None else "models/" + quote(model, safe="")
    if request.query_string:
        path += "?" + request.query_string
    key = upstream_key(request)
    return await relay(request, "GET", path, key=key, body=None, stream=False)
