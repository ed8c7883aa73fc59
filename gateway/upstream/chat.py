"""A chat completion read as bytes: the request's body, and each streamed event's delta or the
whole answer of one that is not streamed."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any, NamedTuple

from openai.types.chat import ChatCompletionMessageParam

from gateway.errors import UpstreamUnavailable
from gateway.upstream.events import EventSplitter, event_data
from gateway.upstream.exchange import Usage, parse_usage

_DECODER = json.JSONDecoder()
# The decoder's own scanner (the C one); typeshed mistypes what make_scanner takes.
_SCAN: Callable[[str, int], tuple[Any, int]] = make_scanner(_DECODER)  # type: ignore[arg-type]


def _json(data: bytes) -> Any:
    """json.loads(data), for the many small chunks of a stream: an event stream is UTF-8 by
    definition (no encoding to guess), and a chunk that starts and ends with its value (nearly
    every one) is scanned once, without the decoder's checks for whitespace around it."""
    text = data.decode()
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        return _DECODER.decode(text)  # whitespace first, or no JSON: its own error
    return value if end == len(text) else _DECODER.decode(text)


class Delta(NamedTuple):
    """One piece of a streamed answer; usage arrives on the last chunk only when asked for."""

    text: str
    usage: Usage | None = None


@dataclass(frozen=True)
class Answer:
    """A whole chat completion: its first choice's text, and the usage the upstream reported."""

    text: str
    usage: Usage | None = None


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion to ask for, streamed unless `stream` is False; with include_usage, a
    stream's last chunk says the usage (a JSON answer always does)."""

    model: str
    messages: Sequence[ChatCompletionMessageParam]
    max_tokens: int
    include_usage: bool = False
    stream: bool = True

    def body(self) -> bytes:
        call: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "stream": self.stream,
        }
        if self.stream and self.include_usage:
            call["stream_options"] = {"include_usage": True}
        return json.dumps(call, ensure_ascii=False).encode()


def _broken() -> UpstreamUnavailable:
    return UpstreamUnavailable("upstream_stream_broken")


class ChatStream:
    """Turns the bytes of a chat completion stream into deltas, as the upstream sends them.

    An error event, or data that is not a JSON chunk, means the answer broke. `finished` tells
    whether a choice said why it stopped; a stream without it was cut short.
    """

    def __init__(self) -> None:
        self.splitter = EventSplitter()
        self.finished = False
        self.done = False
        self.usage: Usage | None = None

    def feed(self, chunk: bytes) -> list[Delta]:
        deltas: list[Delta] = []
        for event in self.splitter.feed(chunk):
            data = event_data(event)
            if self.done or not data:
                continue
            if data.startswith(b"[DONE]"):
                self.done = True
                continue
            self._read(data, deltas)
        return deltas

    def _read(self, data: bytes, deltas: list[Delta]) -> None:
        try:
            chunk = _json(data)
        except (ValueError, RecursionError):
            raise _broken() from None
        if not isinstance(chunk, dict) or chunk.get("error"):
            raise _broken()
        if chunk.get("usage") is not None:
            self.usage = parse_usage(chunk["usage"])
            if self.usage is None:
                raise _broken()
            deltas.append(Delta("", self.usage))
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return
        choice = choices[0]
        if not isinstance(choice, dict):
            raise _broken()
        self.finished = self.finished or choice.get("finish_reason") is not None
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        deltas.append(Delta(content if isinstance(content, str) else ""))


def read_answer(body: bytes) -> Answer:
    """The answer in a chat completion's JSON body. Anything else (not JSON, an error object, no
    choice, content neither text nor null, usage that is not one) means the answer broke."""
    try:
        completion = json.loads(body)
    except (ValueError, RecursionError):
        raise _broken() from None
    if not isinstance(completion, dict) or completion.get("error"):
        raise _broken()
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or "content" not in message:
        raise _broken()
    content = message["content"]
    # Null with a refusal or tool calls: no text, as a stream of the same answer gave none.
    if content is not None and not isinstance(content, str):
        raise _broken()
    usage = completion.get("usage")
    parsed = parse_usage(usage) if usage is not None else None
    if usage is not None and parsed is None:
        raise _broken()
    return Answer(content or "", parsed)
