"""The /v1 pass-through over raw HTTP: bytes, headers, keys, errors, heartbeats, disconnects."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.http.sse import HEARTBEAT
from gateway.keys import POLICIES_KEY
from gateway.upstream.events import EventSplitter, event_data
from tests.support.fake_upstream import FakeUpstream

CHAT = "/v1/chat/completions"
SECRET = "sk-client-secret-1234567890"
# Fields the gateway does not know must reach the upstream byte for byte, spacing included.
RAW_CHAT = (
    b'{"model": "gpt-4o-mini",  "messages": [{"role": "user", "content": "Hi \\u00e9"}],'
    b' "n": 1, "seed": 7, "logprobs": true, "response_format": {"type": "json_object"},'
    b' "tools": [], "x_unknown": {"nested": [1, 2.50]}%s}'
)


def chat(stream: bool = False) -> bytes:
    return RAW_CHAT % (b', "stream": true' if stream else b"")


def bearer(key: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def sent_stream(fake: FakeUpstream) -> bytes:
    return b"".join(fake.stream_bytes)


def events(body: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in body.split(b"\n\n") if e]


async def test_chat_json_relayed_untouched_both_ways(client, fake):
    response = await client.post(CHAT, data=chat(), headers=bearer())
    assert response.status == 200
    sent = fake.received[-1]
    assert (sent.method, sent.path, sent.raw, sent.key) == ("POST", CHAT, chat(), SECRET)
    assert sent.headers["Accept-Encoding"] == "identity"
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "Hello, world!"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    assert response.headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    ("path", "payload", "kind"),
    [
        ("/v1/completions", {"model": "i", "prompt": "Hi", "echo": True}, "text_completion"),
        ("/v1/embeddings", {"model": "e", "input": ["a", "b"], "dimensions": 3}, "list"),
    ],
)
async def test_other_post_routes_reach_their_upstream_path(client, fake, path, payload, kind):
    response = await client.post(path, json=payload, headers={"Authorization": "Bearer sk-x"})
    assert response.status == 200
    assert (await response.json())["object"] == kind
    assert fake.received[-1].path == path
    assert fake.received[-1].body == payload


async def test_models_list_and_one_model(client, fake):
    listed = await client.get("/v1/models?limit=2")
    assert listed.status == 200
    assert [m["id"] for m in (await listed.json())["data"]][:2] == ["gpt-4o-mini", "gpt-4o"]
    assert fake.received[-1].path == "/v1/models"
    assert fake.received[-1].key == "sk-server-key"
    one = await client.get("/v1/models/gpt-4o")
    assert (await one.json())["id"] == "gpt-4o"
    missing = await client.get("/v1/models/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "model_not_found"
    assert fake.received[-1].path == "/v1/models/nope"


async def test_stream_is_relayed_byte_for_byte_with_sse_headers(client, fake):
    response = await client.post(
        CHAT, data=chat(stream=True), headers={**bearer(), "Accept-Encoding": "gzip, br"}
    )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in response.headers
    assert response.headers["Transfer-Encoding"] == "chunked"
    body = await response.read()
    assert fake.stream_bytes and body == sent_stream(fake)
    assert body.endswith(b"data: [DONE]\n\n")
    assert fake.received[-1].raw == chat(stream=True)


async def test_first_event_arrives_before_the_upstream_finishes(client, fake):
    fake.hold_after_first = asyncio.Event()
    response = await client.post(CHAT, data=chat(stream=True), headers=bearer())
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
    assert first == fake.stream_bytes[0]
    assert not fake.finished.is_set()
    fake.hold_after_first.set()
    assert first + await response.read() == sent_stream(fake)


@pytest.mark.parametrize(
    ("chunks", "expected", "rest"),
    [
        ([b"data: a\n\n"], [b"data: a\n\n"], b""),
        ([b"da", b"ta: a\n", b"\ndata: b\n\nda"], [b"data: a\n\n", b"data: b\n\n"], b"da"),
        ([b"data: a\r\n\r", b"\n: c\r\r"], [b"data: a\r\n\r\n", b": c\r\r"], b""),
        ([b"event: x\ndata: 1\ndata: 2\n\n"], [b"event: x\ndata: 1\ndata: 2\n\n"], b""),
    ],
)
def test_event_splitter_keeps_whole_events_byte_for_byte(chunks, expected, rest):
    splitter = EventSplitter()
    got = [event for chunk in chunks for event in splitter.feed(chunk)]
    assert (got, splitter.rest) == (expected, rest)


def test_event_data_joins_data_lines():
    assert event_data(b"event: x\ndata: 1\ndata:2\r\n\r\n") == b"1\n2"


async def test_bearer_key_wins_then_api_key_then_401(make_client, fake, translator):
    client = await make_client()
    await client.post(CHAT, data=chat(), headers=bearer("sk-mine"))
    await client.post(CHAT, data=chat(), headers={"Authorization": "Bearer  "})
    await client.post(CHAT, data=chat())
    assert [r.key for r in fake.received] == ["sk-mine", "sk-server-key", "sk-server-key"]

    keyless = await make_client(API_KEY=None)
    response = await keyless.post(CHAT, data=chat(), headers={"Accept-Language": "zh-TW"})
    assert response.status == 401
    assert await response.json() == {
        "error": {
            "message": translator.translate("zh_TW", "missing_api_key"),
            "type": "invalid_request_error",
            "param": None,
            "code": "missing_api_key",
        }
    }
    assert len(fake.received) == 3


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [400, 401, 404, 429, 500])
async def test_upstream_error_status_and_body_relayed(client, fake, status, stream):
    fake.status = status
    response = await client.post(CHAT, data=chat(stream=stream), headers=bearer())
    assert response.status == status
    body = await response.json()
    assert body["error"]["message"] in (fake.error_message, f"fake upstream {status}")
    if status == 429:
        assert response.headers["Retry-After"] == "7"


async def test_our_own_errors_in_openai_schema_translated(make_client, translator):
    client = await make_client(MAX_BODY_BYTES="1000")
    bad = await client.post(CHAT, data=b"{nope", headers={**bearer(), "Accept-Language": "ru"})
    assert bad.status == 400
    assert await bad.json() == {
        "error": {
            "message": translator.translate("ru_RU", "bad_json"),
            "type": "invalid_request_error",
            "param": None,
            "code": "bad_json",
        }
    }
    big = await client.post(CHAT, data=b"[" + b"1," * 600 + b"1]", headers=bearer())
    assert big.status == 413
    assert (await big.json())["error"]["code"] == "body_too_large"
    wrong = await client.get(CHAT)
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "method_not_allowed"


async def test_upstream_down_is_502_and_slow_upstream_is_504(make_client, fake, unused_tcp_port):
    down = await make_client(OPENAI_BASE_URL=f"http://127.0.0.1:{unused_tcp_port}/v1")
    response = await down.post(CHAT, data=chat(), headers=bearer())
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_unavailable"

    fake.hold_first_byte = asyncio.Event()
    slow = await make_client(UPSTREAM_TIMEOUT="0.2")
    for stream in (False, True):
        response = await slow.post(CHAT, data=chat(stream=stream), headers=bearer())
        assert response.status == 504
        assert (await response.json())["error"]["type"] == "upstream_error"
    fake.hold_first_byte.set()


@pytest.mark.parametrize("language", ["en", "ru_RU"])
async def test_cut_stream_ends_with_an_openai_error_event(client, fake, translator, language):
    fake.cut_after = 2
    headers = {**bearer(), "Accept-Language": language.replace("_", "-")}
    response = await client.post(CHAT, data=chat(stream=True), headers=headers)
    assert response.status == 200
    body = await response.read()
    relayed = sent_stream(fake)
    assert body.startswith(relayed) and len(events(relayed)) == 3
    tail = events(body[len(relayed) :])
    assert len(tail) == 1
    assert json.loads(event_data(tail[0])) == {
        "error": {
            "message": translator.translate(language, "upstream_stream_broken"),
            "type": "upstream_error",
            "param": None,
            "code": "upstream_stream_broken",
        }
    }


async def test_upstream_error_event_is_relayed_alone(client, fake):
    fake.error_event_after = 1
    response = await client.post(CHAT, data=chat(stream=True), headers=bearer())
    body = await response.read()
    assert body == sent_stream(fake)
    assert json.loads(event_data(events(body)[-1]))["error"]["type"] == "server_error"


async def test_heartbeats_while_upstream_is_silent_then_the_whole_answer(make_client, fake):
    fake.hold_first_byte = asyncio.Event()
    client = await make_client(STREAM_HEARTBEAT="0.01")
    response = await client.post(CHAT, data=chat(stream=True), headers=bearer())
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    first = await asyncio.wait_for(response.content.readexactly(len(HEARTBEAT)), timeout=5)
    assert first == HEARTBEAT == b": keep-alive\n\n"
    assert not fake.stream_bytes
    fake.hold_first_byte.set()
    rest = await response.read()
    answer = sent_stream(fake)
    beats = rest[: len(rest) - len(answer)]
    assert rest.endswith(answer) and answer.endswith(b"data: [DONE]\n\n")
    assert beats == HEARTBEAT * (len(beats) // len(HEARTBEAT))


async def test_heartbeats_with_a_slow_first_byte(make_client, fake):
    fake.first_byte_delay = 0.3
    client = await make_client(STREAM_HEARTBEAT="0.05")
    response = await client.post(CHAT, data=chat(stream=True), headers=bearer())
    body = await response.read()
    answer = sent_stream(fake)
    beats = body[: len(body) - len(answer)]
    assert body.endswith(answer) and beats.startswith(HEARTBEAT)
    assert beats == HEARTBEAT * (len(beats) // len(HEARTBEAT))


async def test_no_heartbeat_for_an_early_refusal_nor_a_json_call(make_client, fake):
    fake.status = 400
    client = await make_client(STREAM_HEARTBEAT="10")
    response = await client.post(CHAT, data=chat(stream=True), headers=bearer())
    assert response.status == 400
    assert (await response.json())["error"]["message"] == fake.error_message
    fake.status = 200
    fake.first_byte_delay = 0.1
    quick = await make_client(STREAM_HEARTBEAT="0.01")
    response = await quick.post(CHAT, data=chat(), headers=bearer())
    assert (await response.read()).startswith(b"{")


async def test_refusal_after_a_heartbeat_becomes_an_error_event(make_client, fake):
    fake.hold_first_byte = asyncio.Event()
    fake.status = 404
    client = await make_client(STREAM_HEARTBEAT="0.01")
    response = await client.post(CHAT, data=chat(stream=True), headers=bearer())
    assert response.status == 200
    await asyncio.wait_for(response.content.readexactly(len(HEARTBEAT)), timeout=5)
    fake.hold_first_byte.set()
    last = events(await response.read())[-1]
    error = json.loads(event_data(last))["error"]
    assert (error["message"], error["code"]) == (fake.error_message, "model_not_found")


async def test_client_going_away_stops_the_upstream_read(client, fake):
    fake.hold_after_first = asyncio.Event()
    response = await client.post(CHAT, data=chat(stream=True), headers=bearer())
    await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
    response.close()
    await asyncio.wait_for(fake.cancelled.wait(), timeout=5)
    assert not fake.finished.is_set()


async def test_upstream_key_never_in_logs_or_error_bodies(make_client, fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.accepted_keys = {"sk-other"}
    client = await make_client(API_KEY=SECRET, UPSTREAM_TIMEOUT="0.3")
    seen = []
    for path in (CHAT, "/v1/embeddings", "/v1/models"):
        response = await client.request("GET" if "models" in path else "POST", path, data=chat())
        assert response.status == 401
        seen.append(await response.read())
    fake.accepted_keys = None
    fake.cut_after = 1
    seen.append(await (await client.post(CHAT, data=chat(stream=True))).read())
    fake.cut_after = None
    fake.hold_first_byte = asyncio.Event()
    seen.append(await (await client.post(CHAT, data=chat())).read())
    fake.hold_first_byte.set()
    assert fake.received and all(r.key == SECRET for r in fake.received)
    assert caplog.records
    for text in [caplog.text, *(s.decode() for s in seen)]:
        assert SECRET not in text and SECRET[3:] not in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", CHAT),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/gpt-4o"),
    ],
)
async def test_every_v1_route_counts_against_the_limits(client, method, path):
    app = client.server.app
    info = await app.router.resolve(make_mocked_request(method, path, app=app))
    assert info.http_exception is None
    request = SimpleNamespace(match_info=info, path=path)
    policy = app[POLICIES_KEY].of(request)
    assert policy.limited and policy.envelope == "openai"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models"])
async def test_query_string_reaches_the_upstream(client, fake, path):
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    method = "POST" if path.endswith("completions") else "GET"
    kwargs = {"json": body} if method == "POST" else {}
    response = await client.request(method, path + "?api-version=2024-10-21", **kwargs)
    assert response.status == 200
    assert (fake.received[-1].path, fake.received[-1].query) == (path, "api-version=2024-10-21")
