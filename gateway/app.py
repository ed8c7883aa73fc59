"""The composition root: resources, middleware order, and the route table with its policies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.config import Settings
from gateway.http.cors import add_cors_headers, cors_middleware
from gateway.http.drain import DRAIN_KEY, Drain
from gateway.http.middleware import add_rate_limit_headers, admission_middleware, error_middleware
from gateway.http.policy import OPS, Policies, Policy
from gateway.http.protocol import install as install_error_pages
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
from gateway.observe.tracing import build_tracer_provider, tracing_middleware
from gateway.routes.legacy import legacy_get, legacy_post
from gateway.routes.openai import relay_models, relay_post, relay_upload
from gateway.routes.openapi import openapi
from gateway.routes.ops import healthz, metrics, readyz
from gateway.routes.playground import playground_routes
from gateway.routes.usage import usage
from gateway.upstream.client import Upstream, client_timeout

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

LEGACY = Policy(limited=True, envelope="legacy", guarded=True)
LEGACY_METERED = Policy(limited=True, metered=True, envelope="legacy", guarded=True)
OPENAI = Policy(limited=True, envelope="openai", guarded=True)
OPENAI_METERED = Policy(limited=True, metered=True, envelope="openai", guarded=True)
OPS_PRIVATE = Policy(private=True)
# The caller's own counts: behind its gateway key, but not itself a call.
USAGE = Policy(envelope="openai", guarded=True)
LINGER_SECONDS = 2.0

# The /v1 routes, each with the family OPENAI_ROUTES turns on and off: (family, method, path,
# handler, policy). Calls that produce tokens are metered; the others only counted.
OPENAI_ROUTE_TABLE: tuple[tuple[str, str, str, Handler, Policy], ...] = (
    ("chat", "POST", "/v1/chat/completions", relay_post, OPENAI_METERED),
    ("completions", "POST", "/v1/completions", relay_post, OPENAI_METERED),
    ("embeddings", "POST", "/v1/embeddings", relay_post, OPENAI_METERED),
    ("responses", "POST", "/v1/responses", relay_post, OPENAI_METERED),
    ("models", "GET", "/v1/models", relay_models, OPENAI),
    ("models", "GET", "/v1/models/{model}", relay_models, OPENAI),
    ("moderations", "POST", "/v1/moderations", relay_post, OPENAI),
    ("images", "POST", "/v1/images/generations", relay_post, OPENAI),
    ("audio", "POST", "/v1/audio/speech", relay_post, OPENAI),
    ("audio", "POST", "/v1/audio/transcriptions", relay_upload, OPENAI),
)


def add_routes(app: web.Application, settings: Settings) -> None:
    routes = app[POLICIES_KEY]
    routes.add(app, "POST", settings.route, legacy_post, LEGACY_METERED)
    routes.add(app, "GET", settings.route, legacy_get, LEGACY)
    for family, method, path, handler, policy in OPENAI_ROUTE_TABLE:
        if family in settings.openai_routes:
            routes.add(app, method, path, handler, policy)
    routes.add(app, "GET", "/v1/usage", usage, USAGE)
    # What no route under /v1 takes still answers in OpenAI's shape (its 404 or 405).
    routes.unmatched("/v1", Policy(envelope="openai"))
    routes.add(app, "GET", "/healthz", healthz, OPS)
    routes.add(app, "GET", "/readyz", readyz, OPS_PRIVATE)
    routes.add(app, "GET", "/metrics", metrics, OPS_PRIVATE)
    routes.add(app, "GET", "/openapi.json", openapi, OPS)
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


async def tracing_ctx(app: web.Application, *, provider: TracerProvider) -> AsyncIterator[None]:
    """The spans still batched are sent when the app stops."""
    yield
    await asyncio.to_thread(provider.shutdown)


async def limiter_ctx(
    app: web.Application, *, redis: RedisClient | None = None, clock: Clock | None = None
) -> AsyncIterator[None]:
    """The limiter on the given client, on one built from REDIS_URL, or embedded without it.

    It connects and loads the scripts, but starts even while Redis is down.
    """
    settings = app[SETTINGS_KEY]
    owned = connect_redis(settings) if redis is None and settings.redis_url else None
    limiter = Limiter(settings, redis or owned, clock=clock)
    app[LIMITER_KEY] = limiter
    await limiter.start()
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
    tracer_provider: TracerProvider | None = None,
) -> web.Application:
    """The gateway. `redis` is a client to use instead of one built from REDIS_URL (the app
    leaves it open); `clock` replaces the limiter's clocks, and `tracer_provider` the one built
    from OTEL_EXPORTER_OTLP_ENDPOINT, for tests."""
    drain = Drain(settings.shutdown_grace)
    owned = None if tracer_provider is not None else build_tracer_provider(settings)
    provider = tracer_provider or owned
    # Without tracing there is no tracing layer at all: nothing to pay per request.
    tracing = [tracing_middleware(provider)] if provider is not None else []
    app = web.Application(
        middlewares=[
            access_middleware,
            *tracing,
            drain.middleware,
            error_middleware,
            cors_middleware,
            admission_middleware,
        ],
        client_max_size=settings.max_body_bytes,
        # After an answer sent before its body was read (401, 408, 413), what the client still
        # sends is read and dropped for at most LINGER_SECONDS, then the connection closes.
        handler_args={"handler_cancellation": True, "lingering_time": LINGER_SECONDS},
    )
    app[SETTINGS_KEY] = settings
    app[DRAIN_KEY] = drain
    app[TRANSLATOR_KEY] = translator or Translator.load()
    app[METRICS_KEY] = Metrics()
    app[POLICIES_KEY] = Policies()
    app.on_response_prepare.append(on_response_prepare)
    app.on_response_prepare.append(add_rate_limit_headers)
    app.on_response_prepare.append(drain.on_prepare)
    app.on_shutdown.append(drain.on_shutdown)
    app.on_response_prepare.append(add_cors_headers)
    app.cleanup_ctx.append(partial(limiter_ctx, redis=redis, clock=clock))
    app.cleanup_ctx.append(upstream_ctx)
    if owned is not None:
        app.cleanup_ctx.append(partial(tracing_ctx, provider=owned))
    add_routes(app, settings)
    install_error_pages(app)
    return app
