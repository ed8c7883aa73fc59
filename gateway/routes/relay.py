"""A call relayed to the upstream and its answer back: JSON whole, SSE event by event, as bytes."""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import GatewayError, UpstreamUnavailable
from gateway.http.render import dumps, fail_stream, openai_error
from gateway.http.sse import (
    SSE_HEADERS,
    ClientGone,
    EventStream,
    Heartbeat,
    end_with,
    send,
    sse_event,
)
from gateway.keys import ADMISSION_KEY, EXCHANGE_KEY, SETTINGS_KEY, UPSTREAM_KEY
from gateway.limits.admission import Admission
from gateway.upstream.client import map_status
from gateway.upstream.events import EventSplitter, EventTooLarge, event_data
from gateway.upstream.exchange import Exchange, body_usage
from gateway.upstream.redact import scrub_error

# The relay's lines keep the logger name they had when it lived in routes/openai.py.
log = logging.getLogger("gateway.routes.openai")

# Without a token budget an answer is parsed only for the access log's token counts: small ones.
USAGE_SCAN_BYTES = 256 * 1024

_FORWARDED = ("Accept", "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta")
_RELAYED = (
    "content-encoding",
    "x-request-id",
    "x-should-retry",
    "retry-after",
    "retry-after-ms",
    "openai-processing-ms",
    "openai-version",
)
# Never openai-organization, openai-project or the like: they name the operator's account.
_RELAYED_PREFIXES = ("x-ratelimit-",)
# A Responses API stream ends with one of these events; it sends no [DONE].
_FINAL_EVENTS = (b"response.completed", b"response.failed", b"response.incomplete", b"error")


def _openai_shaped(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data
    return None


def _event_name(event: bytes) -> bytes:
    if b"event:" not in event:
        # Chat completions name no events: most events need no splitting into lines.
        return b""
    for line in event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip()
    return b""


def _may_end(data: bytes) -> bool:
    """Whether an event of these bytes could end the stream: no need to look closer if not."""
    return b"[DONE]" in data or b"event:" in data or b'"error"' in data


def _ends_stream(event: bytes) -> bool:
    if not _may_end(event):
        return False
    data = event_data(event)
    if data.startswith(b"[DONE]") or _event_name(event) in _FINAL_EVENTS:
        return True
    return b'"error"' in data and _openai_shaped(data) is not None


def _forward_headers(request: web.Request, content_type: str | None, key: str) -> dict[str, str]:
    api_key = request.app[SETTINGS_KEY].api_key
    # A client may pick the organization or project of its own key, never of API_KEY.
    own = api_key is None or key != api_key.reveal()
    names = _FORWARDED if own else _FORWARDED[:1] + _FORWARDED[3:]
    headers = {name: request.headers[name] for name in names if name in request.headers}
    # Bytes are relayed as they come, so nothing may be compressed on the way in.
    headers["Accept-Encoding"] = "identity"
    if content_type is not None:
        headers["Content-Type"] = content_type
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


def _is_json(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.content_type in ("application/json", "application/octet-stream") or (
        upstream.content_type.endswith("+json")
    )


async def relay(
    request: web.Request,
    method: str,
    path: str,
    *,
    key: str,
    body: bytes | None,
    stream: bool,
    content_type: str = "application/json",
) -> web.StreamResponse:
    """Send the call upstream and relay what comes back: JSON whole, SSE event by event, anything
    else (speech, plain text) as its bytes come.

    A metered call is settled before the upstream response is let go, so that a client that
    hangs up is charged before anyone can see the upstream stop.
    """
    upstream = request.app[UPSTREAM_KEY]
    interval = request.app[SETTINGS_KEY].stream_heartbeat
    admission = request.get(ADMISSION_KEY)
    meter = admission.meter if admission is not None else None
    exchange = request[EXCHANGE_KEY]
    response = EventStream(headers=SSE_HEADERS.copy())
    beat = Heartbeat(request, response, interval if stream else None)
    headers = _forward_headers(request, content_type if body is not None else None, key)
    try:
        async with AsyncExitStack() as stack:
            opening = upstream.request(
                method, path, api_key=key, body=body, headers=headers, exchange=exchange
            )
            opened = await beat.wait(stack.enter_async_context(opening))
            if admission is not None and meter is not None:
                meter.answered = opened.status < 400
                stack.push_async_callback(admission.settle)
            if response.prepared or (opened.status == 200 and _is_sse(opened) and stream):
                return await _relay_stream(request, response, beat, opened, admission)
            if opened.status == 200 and not _is_sse(opened) and not _is_json(opened):
                return await _relay_bytes(request, opened)
            data = await beat.wait(upstream.read(opened, exchange))
            if meter is not None and meter.answered:
                meter.observe_body(data)
                exchange.usage = meter.usage
            elif opened.status < 400 and len(data) <= USAGE_SCAN_BYTES:
                exchange.usage = body_usage(data)
            relayed = _relayed_headers(opened)
            relayed["Content-Type"] = opened.headers.get("Content-Type", "application/json")
            if opened.status >= 400:
                data = dumps(_upstream_error(request, opened.status, data)).encode()
                relayed.popall("Content-Encoding", None)
                relayed["Content-Type"] = "application/json"
            return web.Response(body=data, status=opened.status, headers=relayed)
    except ClientGone:
        log.info("client went away during %s", path)
        return response
    except GatewayError as exc:
        if not response.prepared:
            raise
        await fail_stream(request, response, exc)
        return response


def _upstream_error(request: web.Request, status: int, body: bytes) -> dict[str, Any]:
    """What a client sees of an upstream error: OpenAI's shape, masked, or our own words."""
    return scrub_error(body) or openai_error(request, map_status(status, ""))


async def _read(opened: aiohttp.ClientResponse, exchange: Exchange) -> bytes:
    try:
        return await opened.content.readany()
    except aiohttp.ClientPayloadError as exc:
        exchange.failed("reset mid-stream")
        raise UpstreamUnavailable("upstream_stream_broken") from exc


def _buffered(opened: aiohttp.ClientResponse, exchange: Exchange) -> bytes:
    """What already arrived, often the first events with the headers: no waiting, no heartbeat."""
    try:
        return opened.content.read_nowait()
    except aiohttp.ClientPayloadError as exc:
        exchange.failed("reset mid-stream")
        raise UpstreamUnavailable("upstream_stream_broken") from exc


async def _relay_stream(
    request: web.Request,
    response: web.StreamResponse,
    beat: Heartbeat,
    opened: aiohttp.ClientResponse,
    admission: Admission | None,
) -> web.StreamResponse:
    if opened.status != 200:
        # Headers went out with a heartbeat: the upstream's refusal can only be an error event.
        data = await request.app[UPSTREAM_KEY].read(opened, request[EXCHANGE_KEY])
        shaped = _upstream_error(request, opened.status, data)
        await end_with(request, response, sse_event(shaped))
        return response
    meter = admission.meter if admission is not None else None
    if not response.prepared:
        response.headers.update(_relayed_headers(opened))
        await send(response, request)
    splitter = EventSplitter()
    ended = False
    exchange = request[EXCHANGE_KEY]
    chunk = _buffered(opened, exchange) or await beat.wait(_read(opened, exchange))
    while chunk:
        try:
            events = splitter.feed(chunk)
        except EventTooLarge as exc:
            exchange.failed("oversized event")
            raise UpstreamUnavailable("upstream_stream_broken") from exc
        if meter is not None:
            events = [event for event in events if meter.observe_event(event_data(event))]
            if meter.usage is not None:
                exchange.usage = meter.usage
        joined = b"".join(events)
        if meter is None and b'"prompt_tokens"' in joined:
            # Unmetered, only the chunk that carries the usage is parsed, for the log and trace.
            for event in events:
                if b'"prompt_tokens"' in event:
                    exchange.usage = body_usage(event_data(event)) or exchange.usage
        for index, event in enumerate(events if _may_end(joined) else ()):
            if not _ends_stream(event):
                continue
            if not ended and admission is not None:
                # Charged before the client sees the end, so its next call finds it settled.
                await admission.settle()
            ended = True
            data = event_data(event)
            if _openai_shaped(data) is not None:
                # The upstream's own error event, reshaped and masked like its error bodies.
                events[index] = sse_event(_upstream_error(request, 502, data))
                joined = b"".join(events)
        # The whole events of one upstream chunk leave in one write.
        if joined:
            await send(response, request, joined)
        chunk = await _read(opened, exchange)
    if not ended:
        exchange.failed("stream ended early")
        raise UpstreamUnavailable("upstream_stream_broken")
    if splitter.rest:
        await send(response, request, splitter.rest)
    await end_with(request, response, b"")
    return response


async def _relay_bytes(request: web.Request, opened: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(headers=_relayed_headers(opened))
    response.content_type = opened.content_type
    if opened.charset:
        response.charset = opened.charset
    await send(response, request)
    try:
        async for chunk in opened.content.iter_any():
            await send(response, request, chunk)
    except aiohttp.ClientPayloadError as exc:
        # No error event fits audio: the client sees the body cut short.
        request[EXCHANGE_KEY].failed("reset mid-stream")
        raise UpstreamUnavailable("upstream_stream_broken") from exc
    await response.write_eof()
    return response
