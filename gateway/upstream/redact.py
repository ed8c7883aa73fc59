"""What of an upstream error may reach a client: OpenAI's error shape, with secrets masked."""

from __future__ import annotations

import json
import re
from typing import Any

# OpenAI keys (sk-..., sk-proj-...), bearer tokens, and key=... pairs in a message.
_SECRET = re.compile(
    r"(?P<keep>\bsk-|\bBearer\s+|\b(?:api[_-]?key|token|secret)[\"']?\s*[:=]\s*[\"']?)"
    r"[A-Za-z0-9_\-.~+/=*]+",
    re.IGNORECASE,
)


def mask(text: str) -> str:
    """The text with anything that looks like a key replaced by `****` after its prefix."""
    return _SECRET.sub(lambda m: m.group("keep") + "****", text)


def _field(value: Any) -> str | int | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return mask(value) if isinstance(value, str) else value


def scrub_error(body: bytes) -> dict[str, Any] | None:
    """An upstream error body rebuilt in OpenAI's shape with its strings masked, or None when it
    is not one (anything beyond message, type, param and code is dropped)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    inner = data.get("error") if isinstance(data, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("message"), str):
        return None
    return {
        "error": {name: _field(inner.get(name)) for name in ("message", "type", "param", "code")}
    }
