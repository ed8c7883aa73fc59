"""The composition root: resources, middleware order and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from gateway.config import Settings
from gateway.i18n import Translator
from gateway.keys import SETTINGS_KEY, TRANSLATOR_KEY, UPSTREAM_KEY
from gateway.legacy import legacy_get, legacy_post
from gateway.middleware import error_middleware, rate_limited
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


def create_app(settings: Settings, *, translator: Translator | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=settings.max_body_bytes,
        handler_args={"handler_cancellation": True},
    )
    app[SETTINGS_KEY] = settings
    app[TRANSLATOR_KEY] = translator or Translator.load()
    app.cleanup_ctx.append(upstream_ctx)
    app.router.add_post(settings.route, rate_limited(legacy_post))
    app.router.add_get(settings.route, rate_limited(legacy_get))
    return app
