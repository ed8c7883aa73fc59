"""Operations endpoints: liveness, readiness and Prometheus metrics; none counts against limits."""

from __future__ import annotations

from aiohttp import web

from gateway.keys import LIMITER_KEY, METRICS_KEY


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness: the process answers. It never touches Redis or the upstream."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Readiness: the limiter can decide (Redis up, or a failure mode covers it)."""
    limiter = request.app.get(LIMITER_KEY)
    checks = {"limiter": limiter is None or await limiter.ready()}
    ready = all(checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "limiter": limiter.state if limiter is not None else "none",
        "checks": checks,
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    instruments = request.app[METRICS_KEY]
    limiter = request.app.get(LIMITER_KEY)
    if limiter is not None:
        instruments.limiter_state.state(limiter.state)
    body, content_type = instruments.exposition()
    response = web.Response(body=body)
    # Set whole: aiohttp's content_type setter would drop the version parameter.
    response.headers["Content-Type"] = content_type
    return response
