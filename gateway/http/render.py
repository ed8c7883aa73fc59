"""Gateway errors as the client reads them: translated, in the envelope of the route asked."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError
from gateway.http.sse import end_with, sse_event
from gateway.i18n import negotiate
from gateway.keys import LANGUAGE_KEY, POLICIES_KEY, SETTINGS_KEY, TRANSLATOR_KEY

log = logging.getLogger(__name__)


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


def error_body(request: web.Request, exc: GatewayError) -> dict[str, Any]:
    """The error in the envelope the route table gives the request's route."""
    if request.app[POLICIES_KEY].of(request).envelope == "openai":
        return openai_error(request, exc)
    return failure_envelope(request, exc)


async def fail_stream(
    request: web.Request, response: web.StreamResponse, exc: GatewayError
) -> None:
    """End a stream whose headers are out with the route's error event: the legacy envelope as
    `event: error`, or OpenAI's error object as a data event."""
    # The upstream's failure, if it was one, gets its own warning with the access line.
    log.info("stream ended with an error event: %s", exc.code)
    if request.app[POLICIES_KEY].of(request).envelope == "openai":
        event = sse_event(openai_error(request, exc))
    else:
        event = sse_event(failure_envelope(request, exc), event="error")
    await end_with(request, response, event)
