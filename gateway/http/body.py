"""Reading a request body within MAX_BODY_BYTES, and parsing it as a JSON object."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from gateway.keys import SETTINGS_KEY

# Between two pieces of a body, at most this long (or BODY_TIMEOUT, if shorter).
BODY_IDLE_SECONDS = 10.0


async def read_body(request: web.Request) -> bytes:
    """The whole body, within MAX_BODY_BYTES and BODY_TIMEOUT (and BODY_IDLE_SECONDS between
    two pieces of it): a client that trickles its body is cut off with a 408."""
    settings = request.app[SETTINGS_KEY]
    limit = settings.max_body_bytes
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(limit=limit)
    if request.content.is_eof():
        # The whole body came with the head, as nearly every API call's does: nothing to wait for.
        whole = request.content.read_nowait()
        if len(whole) > limit:
            raise PayloadTooLarge(limit=limit)
        return whole
    idle = min(BODY_IDLE_SECONDS, settings.body_timeout)
    body = bytearray()
    try:
        async with asyncio.timeout(settings.body_timeout):
            while chunk := await asyncio.wait_for(request.content.readany(), idle):
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLarge(limit=limit)
    except TimeoutError as exc:
        raise RequestTimeout(seconds=f"{settings.body_timeout:g}") from exc
    return bytes(body)


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
