"""Reading a request body within MAX_BODY_BYTES, and parsing it as a JSON object."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from gateway.keys import SETTINGS_KEY


async def read_body(request: web.Request) -> bytes:
    limit = request.app[SETTINGS_KEY].max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(limit=limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(limit=limit) from exc


def _is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; a body that isn't one is a translated 400 (or 415)."""
    return parse_json_object(request, await read_body(request))


def parse_json_object(request: web.Request, raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # Forms and plain text that fail to parse get 415; curl's default form type is
        # forgiven when the body is JSON after all.
        declared = request.headers.get("Content-Type")
        if declared and not _is_json_type(request.content_type):
            raise UnsupportedMediaType() from exc
        raise BadRequest("bad_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("body_not_object")
    return data
