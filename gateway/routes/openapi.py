"""The OpenAPI document of the gateway's own routes, read off its router, served at /openapi.json.

Which paths and methods exist, and which envelope each one's errors take, come from the route
table's policies as the app was built; this module only says what each handler reads and writes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from gateway.config import Settings
from gateway.http.policy import Policy
from gateway.keys import POLICIES_KEY, SETTINGS_KEY
from gateway.observe.request_id import REQUEST_ID_HEADER
from gateway.routes.legacy import legacy_get, legacy_post
from gateway.routes.openai import relay_models, relay_post, relay_upload

Schema = dict[str, Any]

LEGACY_ERROR: Schema = {
    "type": "object",
    "required": ["code", "msg", "data"],
    "properties": {
        "code": {"type": "integer", "minimum": 400, "maximum": 599},
        "msg": {"const": "failed"},
        "data": {
            "type": "object",
            "required": ["response"],
            "properties": {"response": {"type": "string"}},
        },
    },
}
OPENAI_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}
_ROLE = {"enum": ["system", "user", "assistant"]}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {"role": _ROLE, "content": {"type": "string"}},
}
_LEGACY_SUCCESS: Schema = {
    "type": "object",
    "required": ["code", "msg", "data"],
    "properties": {
        "code": {"const": 200},
        "msg": {"const": "success"},
        "data": {"type": "object", "properties": {"response": {"type": "string"}}},
        "current_response": {"type": "string"},
        "result": {"type": "array", "items": _MESSAGE},
    },
}
_OBJECT: Schema = {"type": "object"}
_TEXT: Schema = {"type": "string", "minLength": 1, "pattern": r"\S"}
# What each relayed POST must carry, by OpenAI's path; OpenAI's other fields pass as they are.
_OPENAI_FIELDS: dict[str, Schema] = {
    "chat/completions": {
        "messages": {"type": "array", "minItems": 1, "maxItems": 4, "items": _MESSAGE},
    },
    "completions": {"prompt": {"type": "string"}},
    "embeddings": {"input": {"type": "string"}},
    "responses": {"input": {"type": "string"}},
    "moderations": {"input": {"type": "string"}},
    "images/generations": {"prompt": _TEXT},
    "audio/speech": {"input": _TEXT, "voice": {"enum": ["alloy", "echo", "nova"]}},
}
_STREAMED = ("chat/completions", "completions", "responses")
_STREAM_NOTE = (
    "With `stream: true`, server-sent events. A fault after the headers ends the stream with "
    "one error event: OpenAI's error object as a data event."
)
_LEGACY_STREAM_NOTE = (
    "With `stream: true`, `event: delta` events, then `event: done` with the whole envelope; a "
    "fault after the headers ends the stream with `event: error` carrying the error envelope."
)
_REQUEST_ID = {
    REQUEST_ID_HEADER: {
        "description": "The client's id if short and safe, else the gateway's own",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
}
_QUERY = {"name": "api-version", "in": "query", "required": False, "schema": {"type": "string"}}


def _limits(settings: Settings) -> tuple[Schema, Schema]:
    """The model and max_tokens a legacy call may ask, as the settings hold them."""
    model: Schema = {"type": "string", "minLength": 1}
    if settings.allowed_models:
        model = {"enum": list(settings.allowed_models)}
    tokens = {"type": "integer", "minimum": 1, "maximum": settings.max_tokens_cap}
    return model, tokens


def _whole(cap: int) -> Schema:
    # JSON Schema counts 2.0 an integer; the caps take only JSON integers, so 2.0 is refused.
    described = {"description": "a JSON integer (2.0 is refused)"}
    return {"type": "integer", "minimum": 1, **({"maximum": cap} if cap > 0 else {}), **described}


def _legacy_body(settings: Settings) -> Schema:
    model, tokens = _limits(settings)
    history = {"type": "array", "maxItems": 4, "items": _MESSAGE}
    return {
        "type": "object",
        "required": ["user_content"],
        "properties": {
            "user_content": _TEXT,
            "system_content": {"type": "string"},
            "sys_content": {"type": "string"},
            "continuous_dialogue": history,
            "continuous": history,
            "model": model,
            "api_key": {"type": "string", "pattern": r"^[\x20-\x7e]{0,512}$"},
            "max_tokens": tokens,
            "stream": {"type": "boolean"},
        },
    }


def _openai_body(settings: Settings, path: str) -> Schema:
    model, _ = _limits(settings)
    fields = _OPENAI_FIELDS.get(path, {})
    properties: Schema = {"model": model, **fields}
    if path in _STREAMED:
        properties["stream"] = {"type": "boolean"}
    if path != "embeddings" and path in _OPENAI_FIELDS:
        cap = settings.max_completion_tokens_cap
        properties |= {"max_tokens": _whole(cap), "n": _whole(settings.max_n)}
    # Moderations pick a model of their own, unless ALLOWED_MODELS asks every call to name one.
    named = path != "moderations" or bool(settings.allowed_models)
    required = ["model", *fields] if named else list(fields)
    return {
        "type": "object",
        "description": "OpenAI's request body for this path, relayed as it is",
        "required": required,
        "properties": properties,
    }


def _json(schema: Schema) -> Schema:
    return {"schema": schema}


def _response(description: str, content: Schema | None = None) -> Schema:
    response: Schema = {"description": description, "headers": _REQUEST_ID}
    if content is not None:
        response["content"] = content
    return response


def _answer(route: AbstractRoute, settings: Settings) -> tuple[Schema | None, Schema | None]:
    """What the handler answers and reads: its 200 (None if it has none) and its request body."""
    handler = route.handler
    path = route.resource.canonical if route.resource is not None else ""
    relayed = path.removeprefix("/v1/")
    if handler is legacy_post:
        content = {"application/json": _json(_LEGACY_SUCCESS), "text/event-stream": {}}
        body = {"application/json": _json(_legacy_body(settings))}
        return _response(_LEGACY_STREAM_NOTE, content), body
    if handler is legacy_get:
        return None, None
    if handler is relay_post:
        content = {"application/json": _json(_OBJECT)}
        note = "OpenAI's answer, relayed"
        if relayed in _STREAMED:
            content["text/event-stream"] = {}
            note = f"{note}. {_STREAM_NOTE}"
        if relayed == "audio/speech":
            content = {"audio/*": {}}
        return _response(note, content), {
            "application/json": _json(_openai_body(settings, relayed))
        }
    if handler is relay_upload:
        model, _ = _limits(settings)
        form = {
            "type": "object",
            "required": ["file", "model"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "model": model,
                "language": {"type": "string", "pattern": "^[a-z]{2}$"},
                "response_format": {"enum": ["json", "text"]},
            },
            "additionalProperties": False,
        }
        content = {"application/json": _json(_OBJECT), "text/plain": {}}
        return _response("OpenAI's answer, relayed", content), {"multipart/form-data": _json(form)}
    if handler is relay_models:
        return _response("OpenAI's answer, relayed", {"application/json": _json(_OBJECT)}), None
    return _response("the answer"), None


def _operation(route: AbstractRoute, policy: Policy, settings: Settings) -> Schema:
    ok, body = _answer(route, settings)
    error = OPENAI_ERROR if policy.envelope == "openai" else LEGACY_ERROR
    content = {"application/json": _json(error)}
    responses = {"default": _response(f"an error, in the {policy.envelope} envelope", content)}
    if ok is None:
        responses["403"] = _response("always refused, as in the original project", content)
    else:
        responses["200"] = ok
    operation: Schema = {"responses": responses}
    summary = _summary(route)
    if summary:
        operation["summary"] = summary
    if body is not None:
        operation["requestBody"] = {"required": True, "content": body}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_parameter(settings)}
        for name in _path_names(route)
    ]
    if route.handler in (relay_post, relay_upload, relay_models):
        parameters.append(_QUERY)
    if parameters:
        operation["parameters"] = parameters
    if policy.guarded and settings.gateway_keys:
        operation["security"] = [{"gatewayKey": []}]
    elif policy.private:
        operation["security"] = [{"opsToken": []}, {}]
    return operation


def _summary(route: AbstractRoute) -> str:
    handler = route.handler
    if handler in (relay_post, relay_upload, relay_models):
        return f"OpenAI's {route.method} {route.resource and route.resource.canonical}, relayed"
    if handler in (legacy_post, legacy_get):
        return "The original project's route (ROUTE)"
    return (handler.__doc__ or "").strip().split(":")[0].split("\n")[0]


def _path_names(route: AbstractRoute) -> list[str]:
    info = route.get_info()
    formatter = str(info.get("formatter", ""))
    return [part[1:-1] for part in formatter.split("/") if part.startswith("{")]


def _path_parameter(settings: Settings) -> Schema:
    if settings.allowed_models:
        return {"enum": list(settings.allowed_models)}
    # A model id as the relay takes it: never a path, never only dots.
    return {"type": "string", "pattern": "^[A-Za-z0-9_:-][A-Za-z0-9._:-]{0,255}$"}


def document(app: web.Application) -> Schema:
    """The document of the routes `app` serves (a GET's HEAD twin left out), as it was built."""
    settings = app[SETTINGS_KEY]
    paths: dict[str, Schema] = {}
    for route, policy in app[POLICIES_KEY].routes.items():
        if route.method == "HEAD" or route.resource is None:
            continue
        item = paths.setdefault(route.resource.canonical, {})
        item[route.method.lower()] = _operation(route, policy, settings)
    schemes = {
        "gatewayKey": {"type": "http", "scheme": "bearer", "description": "a GATEWAY_KEYS key"},
        "opsToken": {"type": "http", "scheme": "bearer", "description": "OPS_TOKEN"},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ChatGPT API gateway", "version": "1"},
        "components": {"securitySchemes": schemes},
        "paths": paths,
    }


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(document(request.app))
