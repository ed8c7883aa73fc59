"""Request IDs, upstream timings, request metrics and one access-log line per request."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.keys import (
    CLIENT_IP_KEY,
    DECISION_KEY,
    LIMITER_SECONDS_KEY,
    METRICS_KEY,
    REQUEST_ID_KEY,
    STREAMING_KEY,
)

if TYPE_CHECKING:
    from gateway.decision import Decision

log = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"

# Short and safe to echo into headers and logs; anything else is replaced by our own ID.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# Probes and scrapes arrive every few seconds; they are logged at DEBUG.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass
class Exchange:
    """What the upstream did for the current request; upstream.py fills it in."""

    started: float | None = None
    first_byte: float | None = None
    finished: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


_EXCHANGE: ContextVar[Exchange | None] = ContextVar("gateway_exchange", default=None)


def upstream_started() -> None:
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.started, exchange.first_byte, exchange.finished = time.perf_counter(), None, None


def upstream_first_byte() -> None:
    exchange = _EXCHANGE.get()
    if exchange is not None and exchange.first_byte is None:
        exchange.first_byte = time.perf_counter()


def upstream_finished() -> None:
    exchange = _EXCHANGE.get()
    if exchange is not None and exchange.started is not None:
        exchange.finished = time.perf_counter()


def upstream_tokens(prompt: int, completion: int) -> None:
    exchange = _EXCHANGE.get()
    if exchange is not None:
        exchange.prompt_tokens, exchange.completion_tokens = prompt, completion


def upstream_usage(usage: object) -> None:
    """Note an OpenAI `usage` object (from a JSON body or a stream's last chunk) if it is one."""
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            upstream_tokens(prompt, completion)


def request_id(request: web.BaseRequest) -> str:
    """The client's X-Request-ID if short and safe, else one we make; the same all request long."""
    chosen = request.get(REQUEST_ID_KEY)
    if chosen is None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        chosen = offered if _SAFE_ID.fullmatch(offered) else uuid.uuid4().hex
        request[REQUEST_ID_KEY] = chosen
    return str(chosen)


async def on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Runs as the headers go out, for every response, streamed or not, error or not."""
    response.headers[REQUEST_ID_HEADER] = request_id(request)
    if response.content_type == "text/event-stream" and METRICS_KEY in request.app:
        request.app[METRICS_KEY].streams.inc()
        request[STREAMING_KEY] = True


def _route(request: web.Request) -> str:
    route = request.match_info.route
    if route.resource is None or request.match_info.http_exception is not None:
        return "unmatched"
    return route.resource.canonical


def _seconds(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def _limit(decision: Decision | None) -> str | None:
    if decision is None:
        return None
    return "allowed" if decision.allowed else f"limited:{decision.window or 'unknown'}"


def _observe(
    request: web.Request, route: str, status: int, first_byte: float | None, total: float | None
) -> None:
    metrics = request.app.get(METRICS_KEY)
    if metrics is None:
        return
    metrics.requests.labels(route, request.method, str(status)).inc()
    decision = request.get(DECISION_KEY)
    if decision is not None:
        window = "none" if decision.allowed else (decision.window or "unknown")
        metrics.limiter_decisions.labels(window, "allowed" if decision.allowed else "limited").inc()
    if LIMITER_SECONDS_KEY in request:
        metrics.limiter_seconds.observe(request[LIMITER_SECONDS_KEY])
    if first_byte is not None:
        metrics.upstream_first_byte.observe(first_byte)
    if total is not None:
        metrics.upstream_total.observe(total)
    if request.get(STREAMING_KEY):
        metrics.streams.dec()


def _record(request: web.Request, exchange: Exchange, status: int, elapsed: float) -> None:
    route = _route(request)
    first_byte = _seconds(exchange.started, exchange.first_byte)
    total = _seconds(exchange.started, exchange.finished)
    _observe(request, route, status, first_byte, total)
    decision = request.get(DECISION_KEY)
    fields: dict[str, object] = {
        "request_id": request_id(request),
        "client_ip": request.get(CLIENT_IP_KEY) or request.remote,
        "method": request.method,
        "route": route,
        "status": status,
        "duration_ms": round(elapsed * 1000, 1),
        "limit": _limit(decision),
    }
    if decision is not None:
        fields["limit_source"] = decision.source
    if first_byte is not None:
        fields["upstream_first_byte_ms"] = round(first_byte * 1000, 1)
    if total is not None:
        fields["upstream_ms"] = round(total * 1000, 1)
    if exchange.prompt_tokens is not None:
        fields["prompt_tokens"] = exchange.prompt_tokens
        fields["completion_tokens"] = exchange.completion_tokens
    level = logging.DEBUG if request.path in QUIET_PATHS and status < 500 else logging.INFO
    # The path, never the query string: a client may put a key there.
    log.log(level, "%s %s %s", request.method, request.path, status, extra=fields)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the status error_middleware rendered, and the end of every stream."""
    request_id(request)
    exchange = Exchange()
    token = _EXCHANGE.set(exchange)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        # 499: nginx's code for a client that went away before the answer was complete.
        status = 499
        raise
    finally:
        _EXCHANGE.reset(token)
        _record(request, exchange, status, time.perf_counter() - started)
