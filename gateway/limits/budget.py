"""Token budgets: what a call may cost before it is made, and what it cost as it goes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.upstream.exchange import Usage, body_usage, parse_usage

# Tokens are counted by the upstream; before it has, a prompt is taken as one token per four bytes
# of the request body (tools and schemas count as prompt too), which errs on the high side.
BYTES_PER_TOKEN = 4
_INJECTED = b'"stream_options":{"include_usage":true},'


def prompt_estimate(size: int) -> int:
    return -(-size // BYTES_PER_TOKEN)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def worst_case(call: Mapping[str, Any], size: int, default_reserve: int, *, completes: bool) -> int:
    """The prompt estimate plus every completion the call may ask for (max_tokens times n)."""
    if not completes:
        return prompt_estimate(size)
    limit = (
        _count(call.get("max_completion_tokens"))
        or _count(call.get("max_tokens"))
        or _count(call.get("max_output_tokens"))  # the Responses API's name
    )
    choices = max(_count(call.get("n")) or 1, _count(call.get("best_of")) or 1)
    return prompt_estimate(size) + (limit or default_reserve) * choices


def with_usage(raw: bytes, call: Mapping[str, Any]) -> tuple[bytes, bool]:
    """The body asking for a usage chunk at the stream's end, and whether the client had not asked.

    A body without stream_options gets the field spliced in, so every other byte stays as sent.
    """
    options = call.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return raw, False
    if "stream_options" not in call:
        head = raw.index(b"{") + 1
        return raw[:head] + _INJECTED + raw[head:], True
    merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps({**call, "stream_options": merged}, ensure_ascii=False).encode(), True


def _produced(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls") or delta.get("refusal"))
    return bool(choice.get("text"))


class Meter:
    """What one call has cost so far: the upstream's usage once known, else an estimate.

    Until the usage arrives, each streamed chunk that carries output counts as one token (what
    OpenAI sends), on top of the prompt estimate: the charge for a stream cut short.
    """

    def __init__(self, prompt: int, *, hide_usage: bool = False) -> None:
        self.prompt = prompt
        self.hide_usage = hide_usage
        self.usage: Usage | None = None
        self.produced = 0
        self.answered = False

    def observe_event(self, data: bytes) -> bool:
        """Count one streamed event's data; False if the client must not see the event."""
        if not data.startswith(b"{"):
            return True
        try:
            chunk = json.loads(data)
        except ValueError:
            return True
        if not isinstance(chunk, dict):
            return True
        choices = chunk.get("choices")
        kind = chunk.get("type")
        if kind == "response.output_text.delta" or (
            isinstance(choices, list) and any(_produced(c) for c in choices)
        ):
            self.produced += 1
        usage = parse_usage(chunk.get("usage"))
        response = chunk.get("response")
        if usage is None and kind == "response.completed" and isinstance(response, dict):
            # The Responses API reports usage once, inside its last event's response.
            usage = parse_usage(response.get("usage"))
        if usage is None:
            return True
        self.usage = usage
        return not (self.hide_usage and not choices)

    def observe_body(self, body: bytes) -> None:
        self.usage = body_usage(body)

    def charge(self) -> int:
        """The usage reported, else the estimate; nothing if the upstream refused or was silent."""
        if self.usage is not None:
            return self.usage.total
        return self.prompt + self.produced if self.answered else 0
