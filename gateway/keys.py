"""Every AppKey and RequestKey, and nothing else, so handlers need not import app.py."""

from __future__ import annotations

from aiohttp import web

from gateway.config import Settings
from gateway.http.policy import Policies
from gateway.i18n import Translator
from gateway.keyring import GatewayKey
from gateway.limits.admission import Admission
from gateway.limits.limiter import Limiter
from gateway.observe.metrics import Metrics
from gateway.upstream.client import Upstream
from gateway.upstream.exchange import Exchange

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("SETTINGS_KEY")
TRANSLATOR_KEY: web.AppKey[Translator] = web.AppKey("TRANSLATOR_KEY")
LIMITER_KEY: web.AppKey[Limiter] = web.AppKey("LIMITER_KEY")
UPSTREAM_KEY: web.AppKey[Upstream] = web.AppKey("UPSTREAM_KEY")
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("METRICS_KEY")
POLICIES_KEY: web.AppKey[Policies] = web.AppKey("POLICIES_KEY")

# Per-request values; aiohttp >= 3.14 warns on plain string keys.
LANGUAGE_KEY = web.RequestKey("LANGUAGE_KEY", str)
CLIENT_IP_KEY = web.RequestKey("CLIENT_IP_KEY", str)
ADMISSION_KEY = web.RequestKey("ADMISSION_KEY", Admission)
EXCHANGE_KEY = web.RequestKey("EXCHANGE_KEY", Exchange)
REQUEST_ID_KEY = web.RequestKey("REQUEST_ID_KEY", str)
STREAMING_KEY = web.RequestKey("STREAMING_KEY", bool)
RESPONSE_KEY = web.RequestKey("RESPONSE_KEY", web.StreamResponse)  # once its headers are out
CUT_KEY = web.RequestKey("CUT_KEY", bool)  # cut by the server at the end of SHUTDOWN_GRACE
KEY_NAME_KEY = web.RequestKey("KEY_NAME_KEY", str)  # the gateway key presented, by its name
GATEWAY_KEY_KEY = web.RequestKey("GATEWAY_KEY_KEY", GatewayKey)  # and its own limits
