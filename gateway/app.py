"""The composition root: resources, middleware order and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import aiohttp
from aiohttp import web

from gateway.access import access_middleware, on_response_prepare
from gateway.config import Settings
from gateway.i18n import Translator
from gateway.keys import LIMITER_KEY, METRICS_KEY, SETTINGS_KEY, TRANSLATOR_KEY, UPSTREAM_KEY
from gateway.legacy import legacy_get, legacy_post
from gateway.limiter import Limiter
from gateway.metrics import Metrics
from gateway.middleware import (
    add_rate_limit_headers,
    error_middleware,
    metered,
    rate_limit_middleware,
    rate_limited,
)
from gateway.ops import add_ops_routes
from gateway.passthrough import relay_models, relay_post
from gateway.redis_link import RedisClient, connect_redis
from gateway.routes.playground import add_playground_routes
from gateway.upstream import Upstream, client_timeout


async def upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    session = aiohttp.ClientSession(
        timeout=client_timeout(settings),
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        auto_decompress=False,
    )
    upstream = Upstream(settings, session)
    app[UPSTREAM_KEY] = upstream
    yield
    await upstream.close()
    await session.close()


async def limiter_ctx(
    app: web.Application, *, redis: RedisClient | None = None
) -> AsyncIterator[None]:
    """The limiter on the given client, on one built from REDIS_URL, or embedded without it.

    Nothing connects here: the gateway starts even while Redis is down.
    """
    settings = app[SETTINGS_KEY]
    owned = connect_redis(settings) if redis is None and settings.redis_url else None
    limiter = Limiter(settings, redis or owned)
    app[LIMITER_KEY] = limiter
    yield
    await limiter.aclose()
    if owned is not None:
        await owned.aclose()


def create_app(
    settings: Settings, *, translator: Translator | None = None, redis: RedisClient | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[access_middleware, error_middleware, rate_limit_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"handler_cancellation": True},
    )
    app[SETTINGS_KEY] = settings
    app[TRANSLATOR_KEY] = translator or Translator.load()
    app[METRICS_KEY] = Metrics()
    app.on_response_prepare.append(on_response_prepare)
    app.on_response_prepare.append(add_rate_limit_headers)
    app.cleanup_ctx.append(partial(limiter_ctx, redis=redis))
    app.cleanup_ctx.append(upstream_ctx)
    app.router.add_post(settings.route, rate_limited(metered(legacy_post)))
    app.router.add_get(settings.route, rate_limited(legacy_get))
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        app.router.add_post(path, rate_limited(metered(relay_post)))
    app.router.add_get("/v1/models", rate_limited(relay_models))
    app.router.add_get("/v1/models/{model}", rate_limited(relay_models))
    add_ops_routes(app)
    add_playground_routes(app)
    return app
