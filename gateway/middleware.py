"""Request middleware: errors rendered in the route's envelope (outermost), then rate limits."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge
from gateway.keys import SETTINGS_KEY
from gateway.render import dumps, error_body

log = logging.getLogger(__name__)

_LIMITED = "_gateway_rate_limited"


def rate_limited(handler: Handler) -> Handler:
    """Mark a handler's route as limited: each request to it counts against the client's limits."""
    setattr(handler, _LIMITED, True)
    return handler


def is_rate_limited(request: web.Request) -> bool:
    return bool(getattr(request.match_info.handler, _LIMITED, False))


def _from_http(request: web.Request, exc: web.HTTPException) -> GatewayError | None:
    if exc.status == 404:
        return NotFound()
    if exc.status == 405:
        return MethodNotAllowed(method=request.method)
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
