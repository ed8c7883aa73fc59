"""The original project's route: validate, stream from the upstream, answer in its envelope."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal, cast

from aiohttp import web
from openai.types.chat import ChatCompletionMessageParam

from gateway.errors import BadRequest, Forbidden, GatewayError
from gateway.http.auth import upstream_key
from gateway.http.body import read_json_object
from gateway.http.caps import check_model
from gateway.http.render import dumps, fail_stream
from gateway.http.sse import SSE_HEADERS, EventStream, sse_event
from gateway.keys import ADMISSION_KEY, EXCHANGE_KEY, SETTINGS_KEY, UPSTREAM_KEY
from gateway.limits.budget import Meter, prompt_estimate
from gateway.upstream.chat import ChatRequest, Delta

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


def success_envelope(messages: list[Message], answer: str) -> dict[str, Any]:
    history = [m.as_dict() for m in messages] + [{"role": "assistant", "content": answer}]
    return {
        "code": 200,
        "msg": "success",
        "data": {"response": answer},
        "current_response": answer,
        "result": history,
    }


async def legacy_get(request: web.Request) -> web.StreamResponse:
    raise Forbidden()


async def legacy_post(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    body = await read_json_object(request)
    call = parse_request(
        body, settings.default_model, settings.default_max_tokens, settings.max_tokens_cap
    )
    check_model(settings, call.model)
    key = upstream_key(request, call.api_key, "unauthorized")
    messages = call.messages()
    sent = [m.as_dict() for m in messages]
    admission = request[ADMISSION_KEY]
    meter = None
    if admission.metered:
        # The prompt as the upstream will receive it, for the worst case the budget reserves.
        size = len(json.dumps(sent, ensure_ascii=False).encode())
        meter = await admission.reserve(size, prompt_estimate(size) + call.max_tokens)
    asked = ChatRequest(
        call.model,
        cast(list[ChatCompletionMessageParam], sent),
        call.max_tokens,
        include_usage=meter is not None,
    )
    upstream = request.app[UPSTREAM_KEY]
    chunks = upstream.chat_chunks(asked, api_key=key, exchange=request[EXCHANGE_KEY])
    if meter is not None:
        chunks = _metered(chunks, meter, admission.settle)
    async with aclosing(chunks):
        if call.stream:
            return await _relay(request, chunks, messages)
        answer = "".join([delta.text async for deltas in chunks for delta in deltas])
    return web.json_response(success_envelope(messages, answer), dumps=dumps)


async def _metered(
    chunks: AsyncGenerator[list[Delta], None], meter: Meter, settle: Callable[[], Awaitable[None]]
) -> AsyncGenerator[list[Delta], None]:
    """The deltas, counted as they pass, and settled as soon as they end (before the route's
    last event, so the client's next call finds the charge settled)."""
    async with aclosing(chunks):
        async for deltas in chunks:
            meter.answered = True
            for delta in deltas:
                if delta.usage is not None:
                    meter.usage = delta.usage
                elif delta.text:
                    meter.produced += 1
            yield deltas
    await settle()


async def _relay(
    request: web.Request, chunks: AsyncIterator[list[Delta]], messages: list[Message]
) -> web.StreamResponse:
    """Send the deltas as they arrive, then the whole envelope; a late failure is an error event.

    The deltas that arrived together leave in one write. Headers wait for the first text, so a
    fault before it is still a plain error."""
    response = EventStream(headers=SSE_HEADERS)
    parts: list[str] = []
    try:
        async for deltas in chunks:
            texts = [delta.text for delta in deltas if delta.text]
            if texts:
                if not response.prepared:
                    await response.prepare(request)
                parts += texts
                await response.write(b"".join(_delta_event(text) for text in texts))
    except ConnectionResetError:
        raise
    except Exception as exc:
        if not response.prepared:
            raise
        # After the headers, any fault (ours included) can only be the stream's error event.
        await fail_stream(
            request, response, exc if isinstance(exc, GatewayError) else GatewayError()
        )
        return response
    if not response.prepared:
        await response.prepare(request)
    envelope = success_envelope(messages, "".join(parts))
    await response.write_eof(sse_event(envelope, event="done"))
    return response


def _delta_event(text: str) -> bytes:
    return sse_event({"delta": text}, event="delta")
