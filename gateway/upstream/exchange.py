"""What one call to the upstream did: when it started, answered and ended, and the tokens it
reported. The caller hands the record in; the access log and metrics read it afterwards."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Usage(NamedTuple):
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def parse_usage(usage: Any) -> Usage | None:
    """An OpenAI `usage` object (a JSON body's, or a stream's last chunk's), if it is one; chat's
    prompt/completion names or the Responses API's input/output ones."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    if prompt is None:
        # The Responses API's names.
        prompt, completion = usage.get("input_tokens"), usage.get("output_tokens", 0)
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    total = usage.get("total_tokens")
    return Usage(0, total) if isinstance(total, int) else None


def body_usage(body: bytes) -> Usage | None:
    """The usage of a JSON answer, if it has one."""
    try:
        return parse_usage(json.loads(body).get("usage"))
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None


@dataclass
class Exchange:
    started: float | None = None
    first_byte: float | None = None
    finished: float | None = None
    usage: Usage | None = None
    host: str | None = None  # the upstream's host:port
    status: int | None = None  # the upstream's HTTP status, once its headers came
    model: str | None = None  # the model the call asked for, when the route knows it
    # Headers the call carries upstream besides its own (a trace's traceparent)
    headers: dict[str, str] = field(default_factory=dict)
    failure: str | None = None  # why the upstream failed the call: refused, timed out, status 500

    def failed(self, cause: str) -> None:
        """Note why the call failed; the first cause is the one that counts."""
        if self.failure is None:
            self.failure = cause

    def start(self) -> None:
        self.started, self.first_byte, self.finished = time.perf_counter(), None, None

    def answered(self) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()

    def finish(self) -> None:
        if self.started is not None:
            self.finished = time.perf_counter()

    def seconds_to_first_byte(self) -> float | None:
        return _between(self.started, self.first_byte)

    def seconds(self) -> float | None:
        return _between(self.started, self.finished)


def _between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start
