"""Request middleware: errors rendered in the route's envelope (outermost), then admission."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
)
from gateway.http.auth import authenticate, bearer
from gateway.http.caps import check_address, check_ops
from gateway.http.client_ip import address_text, bucket, client_address
from gateway.http.render import dumps, error_body
from gateway.keys import (
    ADMISSION_KEY,
    CLIENT_IP_KEY,
    GATEWAY_KEY_KEY,
    LIMITER_KEY,
    POLICIES_KEY,
    SETTINGS_KEY,
)
from gateway.limits.admission import Admission
from gateway.limits.headers import rate_limit_headers

log = logging.getLogger(__name__)

DEGRADED_HEADER = "X-RateLimit-Degraded"
DEGRADED = frozenset({"local", "open"})


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
    response = web.json_response(body, status=exc.status, headers=exc.headers, dumps=dumps)
    if isinstance(exc, RequestTimeout):
        # The rest of a late body may still come: the connection cannot carry another request.
        response.force_close()
    return response


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
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the client; on a limited route, admit the request before its body is read (or, on a
    metered one, leave that to the handler's reservation) and settle it on the way out."""
    settings = request.app[SETTINGS_KEY]
    forwarded = request.headers.getall("X-Forwarded-For", ())
    address = client_address(request.remote, forwarded, settings.trusted_proxies)
    if address is not None:
        request[CLIENT_IP_KEY] = address_text(address)
    policy = request.app[POLICIES_KEY].of(request)
    if policy.private:
        check_ops(settings, address, bearer(request))
    if policy.guarded:
        check_address(settings, address)
        authenticate(request)
    if not policy.limited:
        return await handler(request)
    key = request.get(GATEWAY_KEY_KEY)
    others = (key.subject,) if key is not None and key.subject is not None else ()
    client = bucket(address, settings.ipv6_prefix)
    admission = Admission(request.app[LIMITER_KEY], client, others, metered=policy.metered)
    request[ADMISSION_KEY] = admission
    if not admission.metered:
        await admission.admit()
        return await handler(request)
    try:
        return await handler(request)
    except GatewayError:
        await admission.count_refused()
        raise
    finally:
        await admission.settle()


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response of a limited route, errors and streams included, shows the limits."""
    if request.app[POLICIES_KEY].of(request).limited:
        admission = request.get(ADMISSION_KEY)
        decision = admission.decision if admission is not None else None
        limits = admission.limits if admission is not None else request.app[SETTINGS_KEY].limits
        response.headers.update(rate_limit_headers(limits, decision))
        if decision is not None and decision.source in DEGRADED:
            # Decided without Redis: by this replica alone (local), or not at all (open).
            response.headers[DEGRADED_HEADER] = decision.source
