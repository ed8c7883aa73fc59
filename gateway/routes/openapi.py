"""The OpenAPI document of the gateway's own routes, served at /openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.config import Settings
from gateway.keys import SETTINGS_KEY

_LEGACY_ERROR = {
    "type": "object",
    "required": ["code", "msg", "data"],
    "properties": {
        "code": {"type": "integer"},
        "msg": {"const": "failed"},
        "data": {"type": "object", "properties": {"response": {"type": "string"}}},
    },
}
_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
}
_LEGACY_BODY = {
    "type": "object",
    "required": ["user_content"],
    "properties": {
        "user_content": {"type": "string", "minLength": 1},
        "system_content": {"type": "string"},
        "sys_content": {"type": "string"},
        "continuous_dialogue": {"type": "array", "items": _MESSAGE},
        "continuous": {"type": "array", "items": _MESSAGE},
        "model": {"type": "string"},
        "api_key": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
    },
}
_OPENAI_BODY = {
    "type": "object",
    "description": "OpenAI's request body for this path, relayed as it is.",
    "properties": {
        "model": {"type": "string"},
        "stream": {"type": "boolean"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "n": {"type": "integer", "minimum": 1},
    },
}
_QUERY = [{"name": "api-version", "in": "query", "required": False, "schema": {"type": "string"}}]


def _errors(schema: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    return {"default": {"description": "an error, in this route's envelope", "content": content}}


def _operation(summary: str, error: dict[str, Any], body: dict[str, Any] | None = None) -> Any:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "the answer"}, **_errors(error)},
    }
    if body is not None:
        json_body = {"application/json": {"schema": body}}
        operation["requestBody"] = {"required": True, "content": json_body}
    return operation


def document(settings: Settings) -> dict[str, Any]:
    """The document for these settings (the legacy route's path is ROUTE)."""
    relay = {
        path: {"post": {**_operation(summary, _OPENAI_ERROR, _OPENAI_BODY), "parameters": _QUERY}}
        for family, path, summary in (
            ("chat", "/v1/chat/completions", "OpenAI chat completions, relayed (JSON or SSE)"),
            ("completions", "/v1/completions", "OpenAI completions, relayed (JSON or SSE)"),
            ("embeddings", "/v1/embeddings", "OpenAI embeddings, relayed"),
            ("responses", "/v1/responses", "OpenAI responses, relayed (JSON or SSE)"),
            ("moderations", "/v1/moderations", "OpenAI moderations, relayed"),
            ("images", "/v1/images/generations", "OpenAI image generations, relayed"),
            ("audio", "/v1/audio/speech", "OpenAI speech, relayed as its bytes come"),
        )
        if family in settings.openai_routes
    }
    if "audio" in settings.openai_routes:
        upload = _operation("OpenAI transcriptions, the multipart form relayed", _OPENAI_ERROR)
        form = {"multipart/form-data": {"schema": {"type": "object"}}}
        upload["requestBody"] = {"required": True, "content": form}
        relay["/v1/audio/transcriptions"] = {"post": {**upload, "parameters": _QUERY}}
    pattern = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,256}$"}
    model = {"name": "model", "in": "path", "required": True, "schema": pattern}
    one_model = {**_operation("One model, relayed", _OPENAI_ERROR), "parameters": [model, *_QUERY]}
    ops = {"summary": "", "responses": {"200": {"description": "ok"}}}
    paths: dict[str, Any] = {
        settings.route: {
            "post": _operation("The original project's chat route", _LEGACY_ERROR, _LEGACY_BODY),
            "get": _operation("Always 403, as in the original", _LEGACY_ERROR),
        },
        **relay,
        "/v1/usage": {"get": _operation("The caller's limits, used and left", _OPENAI_ERROR)},
        "/healthz": {"get": {**ops, "summary": "Liveness"}},
        "/readyz": {"get": {**ops, "summary": "Readiness (OPS_ALLOW or OPS_TOKEN)"}},
        "/metrics": {"get": {**ops, "summary": "Prometheus metrics (OPS_ALLOW or OPS_TOKEN)"}},
        "/openapi.json": {"get": {**ops, "summary": "This document"}},
    }
    if "models" in settings.openai_routes:
        models = {"get": {**_operation("Models, relayed", _OPENAI_ERROR), "parameters": _QUERY}}
        paths |= {"/v1/models": models, "/v1/models/{model}": {"get": one_model}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ChatGPT API gateway", "version": "1"},
        "components": {"securitySchemes": {"gatewayKey": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(document(request.app[SETTINGS_KEY]))
