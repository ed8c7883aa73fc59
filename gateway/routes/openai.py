"""OpenAI's own API relayed to OPENAI_BASE_URL: JSON as it comes, SSE event by event, as bytes."""

from __future__ import annotations

import json
import logging
import re
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    UnsupportedMediaType,
    UpstreamUnavailable,
)
from gateway.http.auth import bearer, upstream_key
from gateway.http.body import parse_json_object, read_body
from gateway.http.caps import check_call, model_allowed
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
from gateway.limits.budget import with_usage, worst_case
from gateway.upstream.client import map_status
from gateway.upstream.events import EventSplitter, EventTooLarge, event_data
from gateway.upstream.exchange import Exchange, body_usage
from gateway.upstream.redact import scrub_error

log = logging.getLogger(__name__)

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


def _ends_stream(event: bytes) -> bool:
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
            data = await beat.wait(opened.read())
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
        shaped = _upstream_error(request, opened.status, await opened.read())
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
        else:
            # Unmetered, only the chunk that carries the usage is parsed, for the log and trace.
            for event in events:
                if b'"prompt_tokens"' in event:
                    exchange.usage = body_usage(event_data(event)) or exchange.usage
        for index, event in enumerate(events):
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
        # The whole events of one upstream chunk leave in one write.
        if events:
            await send(response, request, b"".join(events))
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


async def relay_post(request: web.Request) -> web.StreamResponse:
    """POST a JSON body: chat completions, completions, embeddings, responses, moderations,
    image generations, speech."""
    key = upstream_key(request, bearer(request), "missing_api_key")
    raw = await read_body(request)
    call = parse_json_object(request, raw)
    check_call(request.app[SETTINGS_KEY], call)
    if isinstance(call.get("model"), str):
        request[EXCHANGE_KEY].model = call["model"]
    path = request.path.removeprefix("/v1/")
    stream = call.get("stream") is True
    admission = request[ADMISSION_KEY]
    if admission.metered:
        reserve = request.app[SETTINGS_KEY].default_reserve_tokens
        worst = worst_case(call, len(raw), reserve, completes=path != "embeddings")
        meter = await admission.reserve(len(raw), worst)
        # The Responses API always ends its stream with the usage; the others must be asked.
        if meter is not None and stream and path != "responses":
            raw, meter.hide_usage = with_usage(raw, call)
    return await relay(
        request, "POST", _with_query(request, path), key=key, body=raw, stream=stream
    )


async def relay_upload(request: web.Request) -> web.StreamResponse:
    """POST /v1/audio/transcriptions: the multipart form relayed as bytes, boundary and all."""
    key = upstream_key(request, bearer(request), "missing_api_key")
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType()
    raw = await read_body(request)
    path = _with_query(request, request.path.removeprefix("/v1/"))
    content_type = request.headers["Content-Type"]
    return await relay(
        request, "POST", path, key=key, body=raw, stream=False, content_type=content_type
    )


async def relay_models(request: web.Request) -> web.StreamResponse:
    """GET /v1/models and /v1/models/{model}."""
    settings = request.app[SETTINGS_KEY]
    model = request.match_info.get("model")
    if model is not None and (model.strip(".") == "" or not _MODEL_ID.fullmatch(model)):
        raise BadRequest("bad_path_parameter", param="model")
    if model is not None and not model_allowed(settings, model):
        raise NotFound()
    path = "models" if model is None else "models/" + model
    key = upstream_key(request, bearer(request), "missing_api_key")
    return await relay(request, "GET", _with_query(request, path), key=key, body=None, stream=False)


# The only query parameter relayed: Azure-style servers take their API version there. OpenAI
# defines none for the routes we relay, so anything else stays here.
RELAYED_QUERY = ("api-version",)
# A model id: letters, digits and . _ : - (fine-tuned ids have colons), never a path.
_MODEL_ID = re.compile(r"[A-Za-z0-9._:-]{1,256}")


def _with_query(request: web.Request, path: str) -> str:
    kept = [(k, v) for k, v in request.query.items() if k in RELAYED_QUERY]
    return f"{path}?{urlencode(kept)}" if kept else path
