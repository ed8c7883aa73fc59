"""The original project's request body, read and checked: what the legacy route is asked."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from gateway.errors import BadRequest

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
# Keys travel in an HTTP header: printable ASCII only (the README's "Your API Key" included).
_KEY = re.compile(r"[\x20-\x7e]{1,512}")


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class LegacyRequest:
    user_content: str
    system_content: str | None
    history: tuple[Message, ...]
    model: str
    api_key: str | None
    max_tokens: int
    stream: bool

    def messages(self) -> list[Message]:
        """System prompt first and once (replacing any in the history), history, then user."""
        if self.system_content:
            history = [m for m in self.history if m.role != "system"]
            head = [Message("system", self.system_content)]
        else:
            history, head = list(self.history), []
        return [*head, *history, Message("user", self.user_content)]


def _either(body: Mapping[str, Any], name: str, alias: str) -> tuple[str, Any]:
    if body.get(name) is not None:
        return name, body[name]
    return alias, body.get(alias)


def _text(field: str, value: str) -> str:
    # JSON can escape lone surrogates (\ud800) that no UTF-8 request to the upstream can carry.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("field_bad_text", param=field, field=field) from None
    return value


def _optional_string(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("field_not_string", param=field, field=field)
    return _text(field, value)


def _api_key(value: Any) -> str | None:
    key = _optional_string("api_key", value)
    if not key or not key.strip():
        return None
    if not _KEY.fullmatch(key.strip()):
        raise BadRequest("field_bad_key", param="api_key")
    return key.strip()


def _history(field: str, value: Any) -> tuple[Message, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest("field_not_list", param=field, field=field)
    messages = []
    for index, item in enumerate(value):
        role = item.get("role") if isinstance(item, dict) else None
        content = item.get("content") if isinstance(item, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise BadRequest("field_bad_message", param=field, field=field, index=index)
        messages.append(Message(cast(Role, role), _text(field, content)))
    return tuple(messages)


def _max_tokens(value: Any, default: int, cap: int) -> int:
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
        raise BadRequest("max_tokens_range", param="max_tokens", cap=cap)
    return value


def parse_request(
    body: Mapping[str, Any], default_model: str, default_max: int, cap: int
) -> LegacyRequest:
    user = body.get("user_content")
    if user is not None and not isinstance(user, str):
        raise BadRequest("field_not_string", param="user_content", field="user_content")
    if not user or not user.strip():
        raise BadRequest("field_missing", param="user_content", field="user_content")
    _text("user_content", user)
    system = _optional_string(*_either(body, "system_content", "sys_content"))
    history = _history(*_either(body, "continuous_dialogue", "continuous"))
    model = _optional_string("model", body.get("model"))
    api_key = _api_key(body.get("api_key"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("field_not_boolean", param="stream", field="stream")
    return LegacyRequest(
        user_content=user,
        system_content=system or None,
        history=history,
        model=model.strip() if model and model.strip() else default_model,
        api_key=api_key,
        max_tokens=_max_tokens(body.get("max_tokens"), default_max, cap),
        stream=stream,
    )
