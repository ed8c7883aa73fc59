"""Server-sent events as bytes, and the headers a reverse proxy needs to pass them on at once."""

from __future__ import annotations

import json
from typing import Any

from multidict import CIMultiDict

SSE_HEADERS = CIMultiDict(
    {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
)


def sse_event(data: Any, *, event: str | None = None) -> bytes:
    """One event; JSON keeps newlines escaped, so `data` always fits on one line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


HEARTBEAT = b": keep-alive\n\n"
