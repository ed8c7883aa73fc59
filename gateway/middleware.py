"""Request middleware: errors rendered in the route's envelope (outermost), then rate limits."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.client_ip import bucket, client_address
from gateway.decision import Decision, rate_limit_headers
from gateway.errors import GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge, RateLimited
from gateway.keys import (
    BUCKET_KEY,
    CLIENT_IP_KEY,
    DECISION_KEY,
    LIMITER_KEY,
    LIMITER_SECONDS_KEY,
    SETTINGS_KEY,
)
from gateway.render import dumps, error_body

log = logging.getLogger(__name__)

_LIMITED = "_gateway_rate_limited"
_METERED = "_gateway_metered"


def rate_limited(handler: Handler) -> Handler:
    """Mark a handler's route as limited: each request to it counts against the client's limits."""
    setattr(handler, _LIMITED, True)
    return handler


def is_rate_limited(request: web.Request) -> bool:
    return bool(getattr(request.match_info.handler, _LIMITED, False))


def metered(handler: Handler) -> Handler:
    """Mark a limited handler that counts tokens: with a token budget set, it is admitted by
    budget.reserve once it has read its body, in the same round trip as the request count."""
    setattr(handler, _METERED, True)
    return handler


def is_metered(request: web.Request) -> bool:
    if not request.app[SETTINGS_KEY].budgets:
        return False
    return bool(getattr(request.match_info.handler, _METERED, False))


def refuse(decision: Decision) -> None:
    """Raise the 429 for a refused decision: a request window's, or a token budget's."""
    blocked = decision.blocked_by
    if decision.allowed or blocked is None:
        return
    code = "token_budget_exceeded" if blocked.unit == "tokens" else "too_many_requests"
    raise RateLimited(
        code,
        headers={"Retry-After": str(decision.retry_after)},
        limit=blocked.limit,
        window=blocked.name,
        seconds=decision.retry_after,
    )


def _from_http(request: web.Request, exc: web.HTTPException) -> GatewayError | None:
    if exc.status == 404:
        return NotFound()
    if exc.status == 405:
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return MethodNotAllowed(method=request.method, headers=allow)
    if exc.status == 413:
        return PayloadTooLarge(limit=request.app[SETTINGS_KEY].max_body_bytes)
    return None


def render_error(request: web.Request, exc: GatewayError) -> web.Response:
    body = error_body(request, exc)
    return web.json_response(body, status=exc.status, headers=exc.headers, dumps=dumps)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return render_error(request, exc)
    except web.HTTPException as exc:
        mapped = _from_http(request, exc)
        if mapped is None:
            raise
        return render_error(request, mapped)
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return render_error(request, GatewayError())


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count a request to a limited route before its body is read; refuse it with a 429."""
    settings = request.app[SETTINGS_KEY]
    forwarded = request.headers.getall("X-Forwarded-For", ())
    address = client_address(request.remote, forwarded, settings.trusted_proxies)
    if address is not None:
        request[CLIENT_IP_KEY] = str(address)
    if not is_rate_limited(request):
        return await handler(request)
    key = bucket(address, settings.ipv6_prefix)
    if not is_metered(request):
        await admit(request, key)
        return await handler(request)
    request[BUCKET_KEY] = key
    try:
        return await handler(request)
    except GatewayError:
        if DECISION_KEY not in request:
            # Refused before its tokens could be weighed (bad body, no key): it still counts.
            await admit(request, key)
        raise


async def admit(request: web.Request, key: str, tokens: int | None = None) -> Decision:
    """One limiter decision for this request (with `tokens` reserved, if given), timed and kept
    on the request for the headers, the log and the metrics; a refusal raises the 429."""
    started = time.perf_counter()
    try:
        decision = await request.app[LIMITER_KEY].hit(key, tokens=tokens)
    finally:
        request[LIMITER_SECONDS_KEY] = time.perf_counter() - started
    request[DECISION_KEY] = decision
    refuse(decision)
    return decision


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response of a limited route, errors and streams included, shows the limits."""
    if is_rate_limited(request):
        limits = request.app[SETTINGS_KEY].limits
        response.headers.update(rate_limit_headers(limits, request.get(DECISION_KEY)))
