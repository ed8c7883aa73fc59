"""The composition root: resources, middleware order, and the route table with its policies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import aiohttp
from aiohttp import web

from gateway.config import Settings
from gateway.http.middleware import add_rate_limit_headers, admission_middleware, error_middleware
from gateway.http.policy import OPS, Policies, Policy
from gateway.i18n import Translator
from gateway.keys import (
    LIMITER_KEY,
    METRICS_KEY,
    POLICIES_KEY,
    SETTINGS_KEY,
    TRANSLATOR_KEY,
    UPSTREAM_KEY,
)
from gateway.limits.limiter import Clock, Limiter
from gateway.limits.redis_link import RedisClient, connect_redis
from gateway.observe.access import access_middleware, on_response_prepare
from gateway.observe.metrics import Metrics
from gateway.routes.legacy import legacy_get, legacy_post
from gateway.routes.openai import relay_models, relay_post
from gateway.routes.ops import healthz, metrics, readyz
from gateway.routes.playground import playground_routes
from gateway.upstream.client import Upstream, client_timeout

LEGACY = Policy(limited=True, envelope="legacy")
LEGACY_METERED = Policy(limited=True, metered=True, envelope="legacy")
OPENAI = Policy(limited=True, envelope="openai")
OPENAI_METERED = Policy(limited=True, metered=True, envelope="openai")


def add_routes(app: web.Application, settings: Settings) -> None:
    routes = app[POLICIES_KEY]
    routes.add(app, "POST", settings.route, legacy_post, LEGACY_METERED)
    routes.add(app, "GET", settings.route, legacy_get, LEGACY)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        routes.add(app, "POST", path, relay_post, OPENAI_METERED)
    routes.add(app, "GET", "/v1/models", relay_models, OPENAI)
    routes.add(app, "GET", "/v1/models/{model}", relay_models, OPENAI)
    # What no route under /v1 takes still answers in OpenAI's shape (its 404 or 405).
    routes.unmatched("/v1", Policy(envelope="openai"))
    routes.add(app, "GET", "/healthz", healthz, OPS)
    routes.add(app, "GET", "/readyz", readyz, OPS)
    routes.add(app, "GET", "/metrics", metrics, OPS)
    if settings.playground:
        for path, page in playground_routes(settings).items():
            routes.add(app, "GET", path, page, OPS)


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
    await session.close()


async def limiter_ctx(
    app: web.Application, *, redis: RedisClient | None = None, clock: Clock | None = None
) -> AsyncIterator[None]:
    """The limiter on the given client, on one built from REDIS_URL, or embedded without it.

    Nothing connects here: the gateway starts even while Redis is down.
    """
    settings = app[SETTINGS_KEY]
    owned = connect_redis(settings) if redis is None and settings.redis_url else None
    limiter = Limiter(settings, redis or owned, clock=clock)
    app[LIMITER_KEY] = limiter
    yield
    await limiter.aclose()
    if owned is not None:
        await owned.aclose()


def create_app(
    settings: Settings,
    *,
    translator: Translator | None = None,
    redis: RedisClient | None = None,
    clock: Clock | None = None,
) -> web.Application:
    """The gateway. `redis` is a client to use instead of one built from REDIS_URL (the app
    leaves it open); `clock` replaces the limiter's clocks, for tests."""
    app = web.Application(
        middlewares=[access_middleware, error_middleware, admission_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"handler_cancellation": True},
    )
    app[SETTINGS_KEY] = settings
    app[TRANSLATOR_KEY] = translator or Translator.load()
    app[METRICS_KEY] = Metrics()
    app[POLICIES_KEY] = Policies()
    app.on_response_prepare.append(on_response_prepare)
    app.on_response_prepare.append(add_rate_limit_headers)
    app.cleanup_ctx.append(partial(limiter_ctx, redis=redis, clock=clock))
    app.cleanup_ctx.append(upstream_ctx)
    add_routes(app, settings)
    return app
