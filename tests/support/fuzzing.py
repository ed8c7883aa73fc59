"""What the fuzz tests share: the gateway's settings, drawing examples, and the envelope checks."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

KEY = "fuzz-key-0123456789abcdef"
ENV = {
    "GATEWAY_KEYS": f"fuzz:{KEY}",
    "ALLOWED_MODELS": "gpt-4o-mini,gpt-4o",
    "MAX_N": "2",
    "MAX_COMPLETION_TOKENS_CAP": "1000",
    "CORS_ORIGINS": "https://app.example",
    "MAX_BODY_BYTES": "4096",
    "UPSTREAM_TIMEOUT": "5",
    "BODY_TIMEOUT": "5",
}


def generate(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    made: list[Any] = []

    @hsettings(
        max_examples=count,
        database=None,
        deadline=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: Any) -> None:
        made.append(example)

    collect()
    return made


def check_envelope(v1: bool, status: int, raw: bytes) -> None:
    data = json.loads(raw)
    if v1:
        assert set(data) == {"error"}, data
        assert isinstance(data["error"]["message"], str) and "code" in data["error"]
    else:
        assert data["code"] == status and data["msg"] == "failed", data
        assert isinstance(data["data"]["response"], str)


def check_stream(v1: bool, raw: bytes) -> None:
    events = [e for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    events = [e for e in events if not e.startswith(b":")]
    assert events, raw
    last = events[-1]
    if v1:
        # Chat ends with [DONE]; the Responses API with its final named event; faults with an error.
        name, _, data = last.rpartition(b"data: ")
        final = name.startswith(b"event: response.") and name.strip().endswith(
            (b"completed", b"failed", b"incomplete")
        )
        assert data == b"[DONE]" or final or "error" in json.loads(data), last
    else:
        kind, _, data = last.partition(b"\n")
        assert kind in (b"event: done", b"event: error"), last
        envelope = json.loads(data.removeprefix(b"data: "))
        if kind == b"event: error":
            check_envelope(False, envelope["code"], data.removeprefix(b"data: "))
