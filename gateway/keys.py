"""Every AppKey, and nothing else, so handlers need not import app.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.config import Settings
from gateway.i18n import Translator

if TYPE_CHECKING:
    from gateway.limiter import Limiter
    from gateway.upstream import Upstream

SETTINGS_KEY = web.AppKey("SETTINGS_KEY", Settings)
TRANSLATOR_KEY = web.AppKey("TRANSLATOR_KEY", Translator)
LIMITER_KEY: web.AppKey[Limiter] = web.AppKey("LIMITER_KEY")
UPSTREAM_KEY: web.AppKey[Upstream] = web.AppKey("UPSTREAM_KEY")
