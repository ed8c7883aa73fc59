"""Every AppKey and RequestKey, and nothing else, so handlers need not import app.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.config import Settings
from gateway.i18n import Translator
from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.decision import Decision
    from gateway.limiter import Limiter
    from gateway.upstream import Upstream

SETTINGS_KEY = web.AppKey("SETTINGS_KEY", Settings)
TRANSLATOR_KEY = web.AppKey("TRANSLATOR_KEY", Translator)
LIMITER_KEY: web.AppKey[Limiter] = web.AppKey("LIMITER_KEY")
UPSTREAM_KEY: web.AppKey[Upstream] = web.AppKey("UPSTREAM_KEY")
METRICS_KEY = web.AppKey("METRICS_KEY", Metrics)

# Per-request values; aiohttp >= 3.14 warns on plain string keys.
LANGUAGE_KEY = web.RequestKey("LANGUAGE_KEY", str)
CLIENT_IP_KEY = web.RequestKey("CLIENT_IP_KEY", str)
BUCKET_KEY = web.RequestKey("BUCKET_KEY", str)  # the client's limiter key, kept for a late hit
DECISION_KEY: web.RequestKey[Decision] = web.RequestKey("DECISION_KEY")
REQUEST_ID_KEY = web.RequestKey("REQUEST_ID_KEY", str)
LIMITER_SECONDS_KEY = web.RequestKey("LIMITER_SECONDS_KEY", float)
STREAMING_KEY = web.RequestKey("STREAMING_KEY", bool)
