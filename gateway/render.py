"""Gateway errors as the client reads them: translated, in the envelope of the route asked."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError
from gateway.i18n import negotiate
from gateway.keys import LANGUAGE_KEY, SETTINGS_KEY, TRANSLATOR_KEY


def dumps(data: Any) -> str:
    """JSON as people read it: Chinese and Russian reasons stay readable, not \\u-escaped."""
    return json.dumps(data, ensure_ascii=False)


def language(request: web.Request) -> str:
    """The request's language: Accept-Language first, else LANG; worked out once per request."""
    chosen = request.get(LANGUAGE_KEY)
    if chosen is None:
        default = request.app[SETTINGS_KEY].language
        chosen = request[LANGUAGE_KEY] = negotiate(request.headers.get("Accept-Language"), default)
    return chosen


def message(request: web.Request, exc: GatewayError) -> str:
    translator = request.app[TRANSLATOR_KEY]
    lang = language(request)
    params = dict(exc.params)
    if isinstance(params.get("window"), str):
        params["window"] = translator.translate(lang, f"window_{params['window']}")
    return translator.translate(lang, exc.code, **params)


def failure_envelope(request: web.Request, exc: GatewayError) -> dict[str, Any]:
    return {"code": exc.status, "msg": "failed", "data": {"response": message(request, exc)}}


def openai_error(request: web.Request, exc: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": message(request, exc),
            "type": exc.openai_type,
            "param": exc.param,
            "code": exc.code,
        }
    }


def is_openai_route(request: web.Request) -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


def error_body(request: web.Request, exc: GatewayError) -> dict[str, Any]:
    return (
        openai_error(request, exc) if is_openai_route(request) else failure_envelope(request, exc)
    )
