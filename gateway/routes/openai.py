"""OpenAI's own API under /v1: each call read and checked, then relayed to OPENAI_BASE_URL."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from aiohttp import web

from gateway.errors import BadRequest, NotFound, UnsupportedMediaType
from gateway.http.auth import bearer, upstream_key
from gateway.http.body import parse_json_object, read_body
from gateway.http.caps import check_call, model_allowed
from gateway.keys import ADMISSION_KEY, EXCHANGE_KEY, SETTINGS_KEY
from gateway.limits.budget import with_usage, worst_case
from gateway.routes.relay import relay


async def relay_post(request: web.Request) -> web.StreamResponse:
    """POST a JSON body: chat completions, completions, embeddings, responses, moderations,
    image generations, speech."""
    key = upstream_key(request, bearer(request), "missing_api_key")
    raw = await read_body(request)
    call = parse_json_object(request, raw)
    check_call(request.app[SETTINGS_KEY], call)
    if isinstance(call.get("model"), str):
        request[EXCHANGE_KEY].model = call["model"]
    path = request.path.removeprefix("/v1/")
    stream = call.get("stream") is True
    admission = request[ADMISSION_KEY]
    if admission.metered:
        reserve = request.app[SETTINGS_KEY].default_reserve_tokens
        worst = worst_case(call, len(raw), reserve, completes=path != "embeddings")
        meter = await admission.reserve(len(raw), worst)
        # The Responses API always ends its stream with the usage; the others must be asked.
        if meter is not None and stream and path != "responses":
            raw, meter.hide_usage = with_usage(raw, call)
    return await relay(
        request, "POST", _with_query(request, path), key=key, body=raw, stream=stream
    )


async def relay_upload(request: web.Request) -> web.StreamResponse:
    """POST /v1/audio/transcriptions: the multipart form relayed as bytes, boundary and all."""
    key = upstream_key(request, bearer(request), "missing_api_key")
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType()
    raw = await read_body(request)
    path = _with_query(request, request.path.removeprefix("/v1/"))
    content_type = request.headers["Content-Type"]
    return await relay(
        request, "POST", path, key=key, body=raw, stream=False, content_type=content_type
    )


async def relay_models(request: web.Request) -> web.StreamResponse:
    """GET /v1/models and /v1/models/{model}."""
    settings = request.app[SETTINGS_KEY]
    model = request.match_info.get("model")
    if model is not None and (model.strip(".") == "" or not _MODEL_ID.fullmatch(model)):
        raise BadRequest("bad_path_parameter", param="model")
    if model is not None and not model_allowed(settings, model):
        raise NotFound()
    path = "models" if model is None else "models/" + model
    key = upstream_key(request, bearer(request), "missing_api_key")
    return await relay(request, "GET", _with_query(request, path), key=key, body=None, stream=False)


# The only query parameter relayed: Azure-style servers take their API version there. OpenAI
# defines none for the routes we relay, so anything else stays here.
RELAYED_QUERY = ("api-version",)
# A model id: letters, digits and . _ : - (fine-tuned ids have colons), never a path.
_MODEL_ID = re.compile(r"[A-Za-z0-9._:-]{1,256}")


def _with_query(request: web.Request, path: str) -> str:
    kept = [(k, v) for k, v in request.query.items() if k in RELAYED_QUERY]
    return f"{path}?{urlencode(kept)}" if kept else path
