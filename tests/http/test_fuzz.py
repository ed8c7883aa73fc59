"""Generated requests against a live gateway and the fake upstream in every misbehaviour:
no 500, no 5xx while the upstream behaves, every error in its route's envelope with an
X-Request-ID, every stream ending in its done or error event; malformed HTTP over raw sockets.

Hypothesis generates the requests up front (derandomized, so a run is repeatable); each is sent
under several of the fake upstream's behaviours, concurrently, grouped by behaviour. Drawing
5,000 requests one by one would take longer than sending them on a busy machine.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from hypothesis import strategies as st
from yarl import URL

from tests.support.fake_upstream import FakeUpstream
from tests.support.fuzzing import ENV, KEY, check_envelope, check_stream, generate

# Each generated request is sent under MODES_EACH of the upstream's behaviours: 1,300 x 4.
GENERATED = 1300
MODES_EACH = 4
RAW_REQUESTS = 400
MODES: dict[str, dict[str, Any]] = {
    "normal": {},
    # Each stream fault beside its like in a JSON answer, for the calls that are not streamed.
    "cut": {"cut_after": 1, "answer_fault": "reset"},
    "garbage": {"garbage_after": 1, "answer_fault": "truncated"},
    "garbage first": {"garbage_after": 0, "answer_fault": "garbage"},
    "error event": {"error_event_after": 1, "answer_fault": "error"},
    "500": {"status": 500},
    "429": {"status": 429},
    "400": {"status": 400, "error_message": "bad sk-secret0123 Bearer abc"},
}
# Header values a client may send; drawn from lists, since 5,000 calls must be drawn quickly.
ODD = ["", " ", "x" * 300, "Bearer", "Bearer  ", "\\x", "a,b", "1.2.3.4, ::1", "unknown", "é"]
PRINTABLE = st.sampled_from(ODD)
# Odd JSON values, from a fixed list: cheaper to draw than recursive ones, which 5,000 calls need.
JSON = st.sampled_from(
    [None, True, False, 0, -1, 1.5, 10**20, "", "x", "\u2028", [], {}, [1, "a"], {"a": None}]
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool", ""]),
        "content": st.text(max_size=12),
    }
)
MODEL = st.sampled_from(["gpt-4o-mini", "gpt-4o", "gpt-4-32k"]) | JSON
LEGACY = st.fixed_dictionaries(
    {},
    optional={
        "user_content": st.text(max_size=20) | JSON,
        "system_content": st.text(max_size=10) | JSON,
        "sys_content": st.text(max_size=10),
        "continuous_dialogue": st.lists(MESSAGE, max_size=3) | JSON,
        "continuous": st.lists(MESSAGE, max_size=3),
        "model": MODEL,
        "api_key": PRINTABLE | JSON,
        "max_tokens": st.integers(-5, 5000) | JSON,
        "stream": st.booleans() | JSON,
    },
)
OPENAI = st.fixed_dictionaries(
    {},
    optional={
        "model": MODEL,
        "messages": st.lists(MESSAGE, max_size=3) | JSON,
        "prompt": st.text(max_size=10),
        "input": st.text(max_size=10),
        "stream": st.booleans() | JSON,
        "max_tokens": st.integers(-5, 2000) | JSON,
        "max_completion_tokens": st.integers(-5, 2000),
        "n": st.integers(-1, 4) | JSON,
    },
)
SEGMENT = st.text(st.characters(codec="utf-8", exclude_characters="./%?#"), min_size=1, max_size=8)
PATHS = (
    st.sampled_from(
        [
            "/api",
            "/api/",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/models",
            "/v1/models/gpt-4o",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/",
            "/v1",
            "/v1/nothing",
            "/playground",
        ]
    )
    | st.builds(lambda t: "/v1/models/" + quote(t, safe=""), st.text(max_size=12))
    | st.builds(
        lambda s: "/" + "/".join(quote(x, safe="") for x in s), st.lists(SEGMENT, max_size=3)
    )
)
BODIES = (
    st.none()
    | st.binary(max_size=64)
    | st.builds(lambda d: json.dumps(d).encode(), LEGACY | OPENAI | JSON)
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.sampled_from([f"Bearer {KEY}"] * 4 + [f"Bearer {KEY}x", "Basic a"])
        | PRINTABLE,
        "Content-Type": st.sampled_from(["application/json", "text/plain", "multipart/form-data"]),
        "Accept-Language": st.sampled_from(["zh-CN", "ru", "zh-TW, en;q=0.5", "xx", "*"])
        | PRINTABLE,
        "X-Request-ID": PRINTABLE,
        "Origin": st.sampled_from(["https://app.example", "https://evil.example"]),
        "Access-Control-Request-Method": st.just("POST"),
        "X-Forwarded-For": PRINTABLE,
    },
)
QUERIES = st.sampled_from(["", "?api-version=2024-10-21", "?key=sk-x&x=%0A", "?a"])


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes | None


CALLS = st.builds(
    Call,
    method=st.sampled_from(
        ["POST"] * 6 + ["GET"] * 3 + ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
    ),
    path=PATHS,
    query=QUERIES,
    headers=HEADERS,
    body=BODIES,
)


def _valid(path: str, stream: bool, model: str, extra: dict[str, Any]) -> Call:
    body: dict[str, Any] = {"model": model, "stream": stream, **extra}
    if path == "/api":
        body = {"user_content": "Hi", "model": model, "stream": stream}
    elif path.endswith("chat/completions"):
        body["messages"] = [{"role": "user", "content": "Hi"}]
    else:
        body["prompt" if path.endswith("/completions") else "input"] = "Hi"
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    return Call("POST", path, "", auth, json.dumps(body).encode())


# Calls that pass every check of the gateway, so that the upstream's behaviours are met.
VALID = st.builds(
    _valid,
    st.sampled_from(["/api", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"]),
    st.booleans(),
    st.sampled_from(["gpt-4o-mini", "gpt-4o"]),
    st.fixed_dictionaries(
        {}, optional={"max_tokens": st.integers(1, 1000), "n": st.integers(1, 2)}
    ),
)


async def send(client, mode: str, call: Call, problems: list[str]) -> None:
    url = URL(call.path + call.query, encoded=True)
    response = await client.request(call.method, url, data=call.body, headers=call.headers)
    raw = await response.read()
    v1 = unquote(call.path).rstrip("/") in ("/v1",) or unquote(call.path).startswith("/v1/")
    try:
        assert "X-Request-ID" in response.headers
        # /v1 passes the upstream's own error status on; nothing else may answer 500.
        assert response.status != 500 or (v1 and mode == "500")
        if mode == "normal":
            assert response.status < 500
        if response.status >= 400 and call.method != "HEAD":
            check_envelope(v1, response.status, raw)
        if response.content_type == "text/event-stream" and call.method != "HEAD":
            check_stream(v1, raw)
        assert b"sk-secret0123" not in raw and KEY.encode() not in raw
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        problems.append(f"{mode}: {call!r} -> {response.status} {raw[:300]!r}: {exc!r}")


async def test_generated_requests_get_well_formed_answers(make_client, fake: FakeUpstream):
    client = await make_client(**ENV)
    calls = generate(VALID | CALLS, GENERATED)
    names = list(MODES)
    # Call n goes out under modes n, n+1, ... (mod 8): every call meets several behaviours.
    plan = [
        (names[(n + k) % len(names)], c) for n, c in enumerate(calls) for k in range(MODES_EACH)
    ]
    assert len(plan) >= 5000
    problems: list[str] = []
    gate = asyncio.Semaphore(16)

    async def one(mode: str, call: Call) -> None:
        async with gate:
            await send(client, mode, call, problems)

    for mode, switches in MODES.items():
        fresh = FakeUpstream()
        for name in (
            "status",
            "error_message",
            "cut_after",
            "garbage_after",
            "error_event_after",
            "answer_fault",
        ):
            setattr(fake, name, switches.get(name, getattr(fresh, name)))
        await asyncio.gather(*(one(m, c) for m, c in plan if m == mode))
    assert not problems, "\n".join(problems[:10])
    assert len(fake.received) > 1000  # the upstream, in each of its behaviours, was reached


TOKEN = st.sampled_from([b"GET", b"POST", b"OPTIONS", b"G(T", b"", b"\x16\x03\x01", b"PRI"])
RAW_LINE = st.binary(max_size=40) | st.builds(lambda n: b"a" * n, st.integers(8000, 9000))
RAW = st.builds(
    lambda method, path, version, headers, body: (
        method
        + b" "
        + path
        + b" "
        + version
        + b"\r\n"
        + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        + b"\r\n"
        + body
    ),
    TOKEN,
    st.sampled_from([b"/api", b"/v1/models", b"/healthz"]) | RAW_LINE,
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTX/1.1"]),
    st.lists(
        st.tuples(
            st.sampled_from(
                [b"Host", b"Content-Length", b"Transfer-Encoding", b"X-A", b"Bad Name"]
            ),
            st.sampled_from([b"5", b"chunked", b"x"]) | RAW_LINE,
        ),
        max_size=4,
    ),
    st.binary(max_size=16),
)


async def test_malformed_http_gets_the_envelope(client):
    raws = generate(RAW, RAW_REQUESTS)
    problems: list[str] = []
    gate = asyncio.Semaphore(16)

    async def one(raw: bytes) -> None:
        async with gate:
            reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
            try:
                writer.write(raw)
                writer.write_eof()
                answer = await asyncio.wait_for(reader.read(), timeout=20)
            finally:
                writer.close()
        if not answer:
            return  # nothing the server could read as a request: closed without a word
        head, _, body = answer.partition(b"\r\n\r\n")
        try:
            assert head.startswith(b"HTTP/1."), head
            status = int(head.split(b" ", 2)[1])
            assert status != 500 and b"X-Request-ID: " in head, head
            if status >= 400 and body:
                check_envelope(False, status, body.split(b"HTTP/1.")[0])
        except (AssertionError, ValueError, KeyError) as exc:
            problems.append(f"{raw[:200]!r} -> {answer[:300]!r}: {exc!r}")

    await asyncio.gather(*(one(raw) for raw in raws))
    assert not problems, "\n".join(problems[:10])
