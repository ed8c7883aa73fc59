"""The access log and request metrics: one line and one set of observations per request."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.keys import (
    ADMISSION_KEY,
    CLIENT_IP_KEY,
    CUT_KEY,
    EXCHANGE_KEY,
    KEY_NAME_KEY,
    METRICS_KEY,
    STREAMING_KEY,
)
from gateway.limits.admission import Admission
from gateway.limits.decision import Decision
from gateway.observe.logs import log_fields
from gateway.observe.request_id import REQUEST_ID_HEADER, request_id
from gateway.upstream.exchange import Exchange

log = logging.getLogger("gateway.access")
upstream_log = logging.getLogger("gateway.upstream")

# Probes and scrapes arrive every few seconds; they are logged at DEBUG.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@functools.lru_cache(maxsize=1024)
def _quoted(path: str) -> str:
    # A gateway sees few paths: each is quoted once, not on every request.
    return quote(path, safe=_PATH_SAFE)


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


def _limit(decision: Decision | None) -> str | None:
    if decision is None:
        return None
    return "allowed" if decision.allowed else f"limited:{decision.window or 'unknown'}"


def _observe(
    request: web.Request, route: str, status: int, admission: Admission | None, exchange: Exchange
) -> None:
    metrics = request.app.get(METRICS_KEY)
    if metrics is None:
        return
    metrics.count_request(route, request.method, status)
    if KEY_NAME_KEY in request:
        metrics.key_requests.labels(request[KEY_NAME_KEY], str(status)).inc()
    decision = admission.decision if admission is not None else None
    if decision is not None:
        window = "none" if decision.allowed else (decision.window or "unknown")
        metrics.count_decision(window, "allowed" if decision.allowed else "limited")
    if admission is not None and admission.seconds is not None:
        metrics.limiter_seconds.observe(admission.seconds)
    first_byte, total = exchange.seconds_to_first_byte(), exchange.seconds()
    if first_byte is not None:
        metrics.upstream_first_byte.observe(first_byte)
    if total is not None:
        metrics.upstream_total.observe(total)
    if request.get(STREAMING_KEY):
        metrics.streams.dec()


def _record(request: web.Request, exchange: Exchange, status: int, elapsed: float) -> None:
    route = _route(request)
    admission = request.get(ADMISSION_KEY)
    _observe(request, route, status, admission, exchange)
    if exchange.failure is not None:
        # The one line that says where a call failed, whatever the route made of it.
        upstream_log.warning(
            "upstream %s failed %s %s: %s",
            exchange.host,
            request.method,
            route,
            exchange.failure,
            extra={"request_id": request_id(request)},
        )
    level = logging.DEBUG if request.path in QUIET_PATHS and status < 500 else logging.INFO
    if not log.isEnabledFor(level):
        return
    decision = admission.decision if admission is not None else None
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
    if KEY_NAME_KEY in request:
        fields["key_name"] = request[KEY_NAME_KEY]
    first_byte, total = exchange.seconds_to_first_byte(), exchange.seconds()
    if first_byte is not None:
        fields["upstream_first_byte_ms"] = round(first_byte * 1000, 1)
    if total is not None:
        fields["upstream_ms"] = round(total * 1000, 1)
    if request.get(CUT_KEY):
        fields["cut"] = "shutdown"
    if exchange.usage is not None:
        fields["prompt_tokens"] = exchange.usage.prompt
        fields["completion_tokens"] = exchange.usage.completion
    # The path, never the query string: a client may put a key there. Quoted, so that it is
    # one word without spaces or control bytes whatever the client sent.
    path = _quoted(request.path)
    log_fields(log, level, "%s %s %s", (request.method, path, status), fields)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the status error_middleware rendered, and the end of every stream."""
    request_id(request)
    exchange = request[EXCHANGE_KEY] = Exchange()
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
        _record(request, exchange, status, time.perf_counter() - started)
