"""Request ids: the client's X-Request-ID if it is safe to echo, else one of ours."""

from __future__ import annotations

import os
import re

from aiohttp import web

from gateway.keys import REQUEST_ID_KEY

REQUEST_ID_HEADER = "X-Request-ID"

# Short and safe to echo into headers and logs; anything else is replaced by our own ID.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def request_id(request: web.BaseRequest) -> str:
    """The client's X-Request-ID if short and safe, else one we make; the same all request long."""
    chosen = request.get(REQUEST_ID_KEY)
    if chosen is None:
        offered = request.headers.get(REQUEST_ID_HEADER, "")
        chosen = offered if _SAFE_ID.fullmatch(offered) else os.urandom(16).hex()
        request[REQUEST_ID_KEY] = chosen
    return str(chosen)
