"""CORS for the origins in CORS_ORIGINS: preflights answered, and the limit headers exposed."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.keys import SETTINGS_KEY

# What scripts may read of a response: the limits, when to retry, and the id to quote.
EXPOSED = (
    "RateLimit, RateLimit-Policy, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, "
    "X-RateLimit-Limit-Tokens, X-RateLimit-Remaining-Tokens, X-RateLimit-Reset-Tokens, "
    "X-RateLimit-Degraded, Retry-After, X-Request-ID"
)
ALLOWED_HEADERS = "Authorization, Content-Type, Accept-Language, X-Request-ID, OpenAI-Beta"
MAX_AGE = "600"


def _allowed(request: web.Request) -> str | None:
    """The request's Origin, if CORS_ORIGINS lets it in."""
    origin = request.headers.get("Origin")
    origins = request.app[SETTINGS_KEY].cors_origins
    if origin and (origin in origins or "*" in origins):
        return origin
    return None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A preflight for one of our paths from an allowed origin gets 204 and the methods the path
    takes; any other OPTIONS goes on to its 404 or 405. No key or limit applies to a preflight:
    browsers send neither the Authorization header nor a body with it."""
    origin = _allowed(request)
    error = request.match_info.http_exception
    preflight = "Access-Control-Request-Method" in request.headers
    if request.method != "OPTIONS" or not preflight or origin is None:
        return await handler(request)
    if not isinstance(error, web.HTTPMethodNotAllowed):
        return await handler(request)
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": ", ".join(sorted(error.allowed_methods)),
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
        },
    )


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    origin = _allowed(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED
        response.headers.add("Vary", "Origin")
