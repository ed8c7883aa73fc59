"""OpenAI's own API relayed to OPENAI_BASE_URL: JSON as it comes, SSE event by event, as bytes."""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import GatewayError, NotFound, Unauthorized, UpstreamUnavailable
from gateway.http.body import parse_json_object, read_body
from gateway.http.render import fail_stream, openai_error
from gateway.http.sse import SSE_HEADERS, ClientGone, Heartbeat, end_with, send, sse_event
from gateway.keys import ADMISSION_KEY, EXCHANGE_KEY, SETTINGS_KEY, UPSTREAM_KEY
from gateway.limits.admission import Admission
from gateway.limits.budget import with_usage, worst_case
from gateway.upstream.client import map_status
from gateway.upstream.events import EventSplitter, event_data
from gateway.upstream.exchange import body_usage

log = logging.getLogger(__name__)

# Without a token budget an answer is parsed only for the access log's token counts: small ones.
USAGE_SCAN_BYTES = 256 * 1024

_FORWARDED = ("Accept", "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta")
_RELAYED = ("content-encoding", "x-request-id", "x-should-retry", "retry-after", "retry-after-ms")
_RELAYED_PREFIXES = ("openai-", "x-ratelimit-")


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
) -> web.StreamResponse:
    """Send the call upstream and relay what comes back: JSON whole, SSE event by event.

    A metered call is settled before the upstream response is let go, so that a client that
    hangs up is charged before anyone can see the upstream stop.
    """
    upstream = request.app[UPSTREAM_KEY]
    interval = request.app[SETTINGS_KEY].stream_heartbeat
    admission = request.get(ADMISSION_KEY)
    meter = admission.meter if admission is not None else None
    exchange = request[EXCHANGE_KEY]
    response = web.StreamResponse(headers=SSE_HEADERS.copy())
    beat = Heartbeat(request, response, interval if stream else None)
    headers = _forward_headers(request, body is not None)
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
            data = await beat.wait(opened.read())
            if meter is not None and meter.answered:
                meter.observe_body(data)
                exchange.usage = meter.usage
            elif opened.status < 400 and len(data) <= USAGE_SCAN_BYTES:
                exchange.usage = body_usage(data)
            relayed = _relayed_headers(opened)
            relayed["Content-Type"] = opened.headers.get("Content-Type", "application/json")
            return web.Response(body=data, status=opened.status, headers=relayed)
    except ClientGone:
        log.info("client went away during %s", path)
        return response
    except GatewayError as exc:
        if not response.prepared:
            raise
        await fail_stream(request, response, exc)
        return response


async def _read(opened: aiohttp.ClientResponse) -> bytes:
    try:
        return await opened.content.readany()
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamUnavailable("upstream_stream_broken") from exc


def _buffered(opened: aiohttp.ClientResponse) -> bytes:
    """What already arrived, often the first events with the headers: no waiting, no heartbeat."""
    try:
        return opened.content.read_nowait()
    except aiohttp.ClientPayloadError as exc:
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
        body = await opened.read()
        shaped = _openai_shaped(body)
        if shaped is None:
            shaped = openai_error(request, map_status(opened.status, ""))
        await end_with(request, response, sse_event(shaped))
        return response
    meter = admission.meter if admission is not None else None
    if not response.prepared:
        response.headers.update(_relayed_headers(opened))
        await send(response, request)
    splitter = EventSplitter()
    ended = False
    chunk = _buffered(opened) or await beat.wait(_read(opened))
    while chunk:
        # The whole events of one upstream chunk leave in one write.
        events = splitter.feed(chunk)
        if meter is not None:
            events = [event for event in events if meter.observe_event(event_data(event))]
            if meter.usage is not None:
                request[EXCHANGE_KEY].usage = meter.usage
        if not ended and any(_ends_stream(event) for event in events):
            ended = True
            if admission is not None:
                # Charged before the client sees the end, so its next call finds it settled.
                await admission.settle()
        if events:
            await send(response, request, b"".join(events))
        chunk = await _read(opened)
    if not ended:
        raise UpstreamUnavailable("upstream_stream_broken")
    if splitter.rest:
        await send(response, request, splitter.rest)
    await end_with(request, response, b"")
    return response


async def relay_post(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions, /v1/completions, /v1/embeddings."""
    key = upstream_key(request)
    raw = await read_body(request)
    call = parse_json_object(request, raw)
    path = request.path.removeprefix("/v1/")
    stream = call.get("stream") is True
    admission = request[ADMISSION_KEY]
    if admission.metered:
        reserve = request.app[SETTINGS_KEY].default_reserve_tokens
        worst = worst_case(call, len(raw), reserve, completes=path != "embeddings")
        meter = await admission.reserve(len(raw), worst)
        if meter is not None and stream:
            raw, meter.hide_usage = with_usage(raw, call)
    return await relay(
        request, "POST", _with_query(request, path), key=key, body=raw, stream=stream
    )


async def relay_models(request: web.Request) -> web.StreamResponse:
    """GET /v1/models and /v1/models/{model}."""
    model = request.match_info.get("model")
    if model in (".", ".."):
        raise NotFound()
    path = "models" if model is None else "models/" + quote(model, safe="")
    key = upstream_key(request)
    return await relay(request, "GET", _with_query(request, path), key=key, body=None, stream=False)


def _with_query(request: web.Request, path: str) -> str:
    # Some OpenAI-compatible servers (Azure's api-version) take parameters in the query.
    return f"{path}?{request.query_string}" if request.query_string else path
