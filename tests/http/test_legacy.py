"""The legacy route, end to end: the running app, the fake upstream, every envelope."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from gateway.i18n import LANGUAGES
from tests.support.fake_upstream import ANSWER_FAULTS, FakeUpstream

ANSWER = "Hello, world!"


async def post(client, body, **kwargs):
    response = await client.post("/api", json=body, **kwargs)
    return response, await response.json()


def failed(status: int, message: str) -> dict:
    """The legacy route's envelope for a refused or failed call."""
    return {"code": status, "msg": "failed", "data": {"response": message}}


async def expect_failure(client, status: int, message: str) -> None:
    response, body = await post(client, {"user_content": "Hi"})
    assert response.status == status
    assert body == failed(status, message)


async def test_answer_has_every_success_shape(client, fake: FakeUpstream):
    response, body = await post(client, {"user_content": "Hi"})
    assert response.status == 200
    assert response.content_type == "application/json"
    assert body == {
        "code": 200,
        "msg": "success",
        "data": {"response": ANSWER},
        "current_response": ANSWER,
        "result": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": ANSWER},
        ],
    }
    sent = fake.received[-1]
    assert sent.path == "/v1/chat/completions"
    # Not streamed here, so not asked for a stream upstream: one JSON answer, read once.
    assert sent.body["stream"] is False and "stream_options" not in sent.body
    assert (sent.model, sent.max_tokens, sent.key) == ("gpt-4o-mini", 100, "sk-server-key")


@pytest.mark.parametrize("metered", [False, True])
async def test_a_streamed_call_asks_the_upstream_for_a_stream(make_client, fake, metered):
    client = await make_client(TOKENS_PER_MINUTE=100_000 if metered else None)
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    assert response.status == 200
    await response.read()
    sent = fake.received[-1].body
    assert sent["stream"] is True
    assert sent.get("stream_options") == ({"include_usage": True} if metered else None)


@pytest.mark.parametrize(
    ("system_field", "history_field"),
    [
        ("system_content", "continuous_dialogue"),
        ("sys_content", "continuous"),
        ("system_content", "continuous"),
        ("sys_content", "continuous_dialogue"),
    ],
)
async def test_both_spellings_send_the_same_messages(client, fake, system_field, history_field):
    history = [
        {"role": "system", "content": "old system prompt"},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    response, body = await post(
        client, {system_field: "Be brief.", history_field: history, "user_content": "And 3+3?"}
    )
    assert response.status == 200
    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert fake.received[-1].messages == expected
    assert body["result"] == [*expected, {"role": "assistant", "content": ANSWER}]


async def test_history_system_message_kept_when_no_system_prompt(client, fake):
    history = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    await post(client, {"continuous": history, "user_content": "Q", "sys_content": ""})
    assert fake.received[-1].messages == [*history, {"role": "user", "content": "Q"}]


async def test_model_and_max_tokens_are_forwarded(client, fake):
    response, _ = await post(client, {"user_content": "Hi", "model": "gpt-4o", "max_tokens": 3500})
    assert response.status == 200
    assert (fake.received[-1].model, fake.received[-1].max_tokens) == ("gpt-4o", 3500)


async def test_key_in_body_wins_over_server_key(client, fake):
    await post(client, {"user_content": "Hi", "api_key": "sk-client"})
    assert fake.received[-1].key == "sk-client"


async def test_no_key_anywhere_is_401(make_client, fake, translator):
    client = await make_client(API_KEY=None)
    await expect_failure(client, 401, translator.translate("en", "unauthorized"))
    assert fake.received == []


async def test_concurrent_keys_never_mix(client, fake):
    fake.chunk_delay = 0.01
    keys = [f"sk-client-{n}" for n in range(24)]
    results = await asyncio.gather(*(post(client, {"user_content": k, "api_key": k}) for k in keys))
    assert all(r.status == 200 for r, _ in results)
    assert sorted((r.messages[-1]["content"], r.key) for r in fake.received) == sorted(
        zip(keys, keys, strict=True)
    )


# --- errors: status equals code, reason translated, in every language -------------------------


def _cases():
    big = "x" * 2048
    return [
        (
            "missing user_content",
            "POST",
            {"json": {"sys_content": "s"}},
            400,
            "field_missing",
            {"field": "user_content"},
        ),
        (
            "empty user_content",
            "POST",
            {"json": {"user_content": "  "}},
            400,
            "field_missing",
            {"field": "user_content"},
        ),
        (
            "user_content not a string",
            "POST",
            {"json": {"user_content": 5}},
            400,
            "field_not_string",
            {"field": "user_content"},
        ),
        (
            "sys_content not a string",
            "POST",
            {"json": {"user_content": "q", "sys_content": []}},
            400,
            "field_not_string",
            {"field": "sys_content"},
        ),
        (
            "history not a list",
            "POST",
            {"json": {"user_content": "q", "continuous": "x"}},
            400,
            "field_not_list",
            {"field": "continuous"},
        ),
        (
            "bad history item",
            "POST",
            {
                "json": {
                    "user_content": "q",
                    "continuous_dialogue": [{"role": "robot", "content": "x"}],
                }
            },
            400,
            "field_bad_message",
            {"field": "continuous_dialogue", "index": 0},
        ),
        (
            "max_tokens too big",
            "POST",
            {"json": {"user_content": "q", "max_tokens": 3501}},
            400,
            "max_tokens_range",
            {"cap": 3500},
        ),
        (
            "max_tokens zero",
            "POST",
            {"json": {"user_content": "q", "max_tokens": 0}},
            400,
            "max_tokens_range",
            {"cap": 3500},
        ),
        (
            "max_tokens a string",
            "POST",
            {"json": {"user_content": "q", "max_tokens": "100"}},
            400,
            "max_tokens_range",
            {"cap": 3500},
        ),
        (
            "stream not boolean",
            "POST",
            {"json": {"user_content": "q", "stream": "yes"}},
            400,
            "field_not_boolean",
            {"field": "stream"},
        ),
        (
            "bad json",
            "POST",
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "bad_json",
            {},
        ),
        ("json array", "POST", {"json": ["user_content"]}, 400, "body_not_object", {}),
        (
            "plain text",
            "POST",
            {"data": b"hello", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported_media_type",
            {},
        ),
        (
            "too large with length",
            "POST",
            {"data": big.encode()},
            413,
            "body_too_large",
            {"limit": 1024},
        ),
        (
            "too large chunked",
            "POST",
            {"data": _chunks(big.encode())},
            413,
            "body_too_large",
            {"limit": 1024},
        ),
        ("GET on the route", "GET", {}, 403, "forbidden", {}),
        ("PUT on the route", "PUT", {}, 405, "method_not_allowed", {"method": "PUT"}),
    ]


async def _chunks_gen(data: bytes):
    for start in range(0, len(data), 256):
        yield data[start : start + 256]


def _chunks(data: bytes):
    return _ChunkedBody(data)


class _ChunkedBody:
    """A fresh async generator per use, so parametrised cases can share the case table."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __call__(self):
        return _chunks_gen(self.data)


CASES = _cases()


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(
    ("name", "method", "kwargs", "status", "code", "params"), CASES, ids=[c[0] for c in CASES]
)
async def test_error_envelope(
    make_client, translator, fake, language, name, method, kwargs, status, code, params
):
    client = await make_client(MAX_BODY_BYTES=1024)
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("data"), _ChunkedBody):
        kwargs["data"] = kwargs["data"]()
    headers = {**kwargs.pop("headers", {}), "Accept-Language": language.replace("_", "-")}
    response = await client.request(method, "/api", headers=headers, **kwargs)
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body == failed(status, translator.translate(language, code, **params))
    assert fake.received == []


@pytest.mark.parametrize("language", LANGUAGES)
async def test_unknown_path_is_404_envelope(make_client, translator, language):
    client = await make_client(LANG=language)
    for method in ("GET", "POST"):
        response = await client.request(method, "/no/such/path")
        assert response.status == 404
        assert await response.json() == failed(404, translator.translate(language, "not_found"))


@pytest.mark.parametrize(
    ("status", "gateway_status", "code", "params"),
    [
        (401, 401, "upstream_unauthorized", {}),
        (403, 401, "upstream_unauthorized", {}),
        (400, 400, "upstream_bad_request", {"reason": "The model `nope` does not exist"}),
        (404, 400, "upstream_bad_request", {"reason": "The model `nope` does not exist"}),
        (429, 429, "upstream_busy", {}),  # the fake says Retry-After: 7
        (500, 502, "upstream_error", {"upstream_status": 500}),
        (503, 502, "upstream_error", {"upstream_status": 503}),
    ],
)
@pytest.mark.parametrize("language", LANGUAGES)
async def test_upstream_errors_are_mapped(
    make_client, fake, translator, language, status, gateway_status, code, params
):
    fake.status = status
    client = await make_client(LANG=language)
    for stream in (False, True):
        response, body = await post(
            client, {"user_content": "Hi", "model": "nope", "stream": stream}
        )
        assert response.status == gateway_status
        assert response.headers.get("Retry-After") == ("7" if status == 429 else None)
        assert body == failed(gateway_status, translator.translate(language, code, **params))


@pytest.mark.parametrize("language", LANGUAGES)
async def test_upstream_timeout_is_504(make_client, fake, translator, language):
    fake.first_byte_delay = 2
    client = await make_client(UPSTREAM_TIMEOUT="0.2", LANG=language)
    await expect_failure(client, 504, translator.translate(language, "upstream_timeout"))


@pytest.mark.parametrize("language", LANGUAGES)
async def test_unreachable_upstream_is_502(make_client, unused_tcp_port, translator, language):
    client = await make_client(
        OPENAI_BASE_URL=f"http://127.0.0.1:{unused_tcp_port}/v1", LANG=language
    )
    await expect_failure(client, 502, translator.translate(language, "upstream_unavailable"))


@pytest.mark.parametrize("language", LANGUAGES)
async def test_internal_error_hides_its_text(
    aiohttp_client, settings, translator, caplog, language
):
    from gateway.app import create_app

    app = create_app(settings, translator=translator)

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals sk-abc")

    app.router.add_post("/broken", broken)
    client = await aiohttp_client(app)
    response = await client.post("/broken", json={}, headers={"Accept-Language": language})
    assert response.status == 500
    text = await response.text()
    assert "secret" not in text and "Traceback" not in text
    assert json.loads(text) == failed(500, translator.translate(language, "internal_error"))
    assert "secret internals" in caplog.text


@pytest.mark.parametrize(
    ("lang", "language"),
    [
        ("C.UTF-8", "en"),
        ("en_US.UTF-8", "en"),
        ("POSIX", "en"),
        ("zh_CN.UTF-8", "zh_CN"),
        ("zh_SG", "zh_CN"),
        ("zh_HK", "zh_TW"),
        ("zh_TW", "zh_TW"),
        ("ru_RU", "ru_RU"),
        ("ru_RU.UTF-8", "ru_RU"),
        ("de_DE", "en"),
    ],
)
async def test_lang_sets_the_default_language(make_client, translator, lang, language):
    client = await make_client(LANG=lang)
    _, body = await post(client, {"user_content": ""})
    assert body["data"]["response"] == translator.translate(
        language, "field_missing", field="user_content"
    )
    _, body = await post(
        client, {"user_content": ""}, headers={"Accept-Language": "ru;q=0.4, zh-TW;q=0.9"}
    )
    assert body["data"]["response"] == translator.translate(
        "zh_TW", "field_missing", field="user_content"
    )


async def test_api_key_never_in_error_body(make_client, fake):
    fake.status = 401
    client = await make_client()
    response = await client.post("/api", json={"user_content": "Hi", "api_key": "sk-leak-me"})
    assert response.status == 401
    assert "sk-leak-me" not in await response.text()
    assert "sk-server-key" not in await response.text()


# --- streaming ---------------------------------------------------------------------------------


async def read_events(response):
    """Parse an SSE body into (event, data) pairs."""
    events, buffer = [], b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            events.append(_parse(raw))
    assert buffer == b""
    return events


def _parse(raw: bytes):
    event, data = "message", []
    for line in raw.decode().split("\n"):
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
    return event, json.loads("\n".join(data))


async def test_stream_relays_deltas_then_the_envelope(client, fake):
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = await read_events(response)
    assert events[:-1] == [("delta", {"delta": piece}) for piece in fake.answer]
    assert events[-1] == (
        "done",
        {
            "code": 200,
            "msg": "success",
            "data": {"response": ANSWER},
            "current_response": ANSWER,
            "result": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ANSWER}],
        },
    )


async def test_first_delta_arrives_before_upstream_finishes(client, fake):
    fake.hold_after_first = asyncio.Event()
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
    assert _parse(first.rstrip(b"\n")) == ("delta", {"delta": "Hello"})
    assert not fake.finished.is_set()
    fake.hold_after_first.set()
    events = await read_events(response)
    assert events[-1][0] == "done"
    assert fake.finished.is_set()


@pytest.mark.parametrize("switch", ["cut_after", "error_event_after"])
async def test_failure_mid_stream_ends_with_error_event(client, fake, translator, switch):
    setattr(fake, switch, 2)
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    assert response.status == 200
    events = await read_events(response)
    assert events[:2] == [("delta", {"delta": "Hello"}), ("delta", {"delta": ", "})]
    kind, data = events[-1]
    assert kind == "error"
    assert data["msg"] == "failed" and data["code"] == 502
    assert data["data"]["response"] == translator.translate("en", "upstream_stream_broken")
    assert len(events) == 3


async def test_cut_upstream_without_stream_is_502(client, fake, translator):
    fake.answer_fault = "reset"
    response, body = await post(client, {"user_content": "Hi"})
    assert response.status == 502 and body["code"] == 502
    assert body["data"]["response"] == translator.translate("en", "upstream_stream_broken")


@pytest.mark.parametrize("fault", ANSWER_FAULTS)
@pytest.mark.parametrize("language", LANGUAGES)
async def test_an_answer_that_is_not_a_chat_completion_is_a_502(
    make_client, fake, translator, language, fault
):
    """Not JSON, not an object, an error object, no choices, content not a string, cut short or
    reset halfway: the answer broke, as a stream that broke did before any delta."""
    fake.answer_fault = fault
    client = await make_client(LANG=language)
    response, body = await post(client, {"user_content": "Hi"})
    assert response.status == 502
    assert "X-Request-ID" in response.headers
    assert body == failed(502, translator.translate(language, "upstream_stream_broken"))


async def test_an_answer_with_no_content_is_an_empty_answer(client, fake):
    """OpenAI sends `"content": null` with a refusal: a stream of it had no text either."""
    fake.refusal = "I can't help with that."
    response, body = await post(client, {"user_content": "Hi"})
    assert response.status == 200 and body["current_response"] == ""


async def test_a_slow_answer_is_waited_for(make_client, fake):
    fake.answer_delay = 0.3
    client = await make_client(UPSTREAM_TIMEOUT="2")
    response, body = await post(client, {"user_content": "Hi"})
    assert response.status == 200 and body["current_response"] == ANSWER


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_that_stalls_halfway_is_a_504(make_client, fake, translator, stream):
    """The upstream answered, then went silent longer than UPSTREAM_TIMEOUT."""
    fake.hold_answer = fake.hold_after_first = asyncio.Event()
    client = await make_client(UPSTREAM_TIMEOUT="0.3")
    try:
        response = await client.post("/api", json={"user_content": "Hi", "stream": stream})
        if stream:
            assert response.status == 200
            events = await read_events(response)
            assert events[0] == ("delta", {"delta": "Hello"})
            kind, error = events[-1]
            assert kind == "error"
        else:
            assert response.status == 504
            error = await response.json()
        assert error == failed(504, translator.translate("en", "upstream_timeout"))
    finally:
        fake.hold_answer.set()


@pytest.mark.parametrize("stream", [True, False])
async def test_client_going_away_cancels_the_upstream(client, fake, stream):
    fake.hold_answer = fake.hold_after_first = asyncio.Event()
    request = asyncio.create_task(
        client.post("/api", json={"user_content": "Hi", "stream": stream})
    )
    await asyncio.wait_for(fake.started.wait(), timeout=5)
    if stream:
        response = await request
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
        response.close()
    else:
        await asyncio.sleep(0.05)
        request.cancel()
    await asyncio.wait_for(fake.cancelled.wait(), timeout=5)
    assert not fake.finished.is_set()


# --- inputs a careless or hostile client sends --------------------------------------------------


@pytest.mark.parametrize("path", ["/api", "/v1/chat/completions"])
async def test_deeply_nested_json_is_400(client, fake, path):
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await client.post(path, data=deep, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert fake.received == []


@pytest.mark.parametrize(
    ("body", "code", "params"),
    [
        ('{"user_content": "x\\ud800y"}', "field_bad_text", {"field": "user_content"}),
        (
            '{"user_content": "x", "sys_content": "\\udfff"}',
            "field_bad_text",
            {"field": "sys_content"},
        ),
        (
            '{"user_content": "x", "continuous": [{"role": "user", "content": "\\ud800"}]}',
            "field_bad_text",
            {"field": "continuous"},
        ),
        ('{"user_content": "x", "api_key": "sk-\\u00e9"}', "field_bad_key", {}),
        ('{"user_content": "x", "api_key": "sk-a\\nb"}', "field_bad_key", {}),
    ],
)
async def test_text_the_upstream_cannot_carry_is_400(client, fake, translator, body, code, params):
    response = await client.post("/api", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert (await response.json())["data"]["response"] == translator.translate("en", code, **params)
    assert fake.received == []


async def test_405_says_what_is_allowed(client):
    response = await client.put("/api")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}


@pytest.mark.parametrize(("given", "sent"), [("7", "7"), (None, "1")])
def test_an_upstream_429_always_names_a_wait(given, sent):
    from gateway.upstream.client import map_status

    error = map_status(429, "busy", given)
    assert (error.status, error.headers) == (429, {"Retry-After": sent})
