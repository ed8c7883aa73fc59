"""Upstream answers read whole are capped at MAX_UPSTREAM_BODY_BYTES; streamed ones are not."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.fake_upstream import FakeUpstream

CAP = 1024 * 1024
HUGE = 64 * 1024 * 1024
MARGIN = 30.0  # generous: the machine may be busy
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


async def assert_let_go(fake: FakeUpstream) -> None:
    """The fake stopped writing long before the end: the gateway stopped reading near the cap."""
    await asyncio.wait_for(fake.finished.wait(), timeout=MARGIN)
    # The cap, plus what the sockets and buffers on the way hold: far from all of it.
    assert fake.oversized_sent < HUGE // 2


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("status", [200, 500])
async def test_an_oversized_answer_is_a_502_with_nothing_of_it(
    make_client, fake: FakeUpstream, translator, sized, status
):
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=str(CAP))
    fake.oversized_body, fake.oversized_sized, fake.status = HUGE, sized, status
    response = await client.post("/v1/chat/completions", json=CHAT)
    raw = await response.read()
    assert response.status == 502
    assert "X-Request-ID" in response.headers
    assert b"LEAK" not in raw and len(raw) < 4096
    error = (await response.json())["error"]
    assert error["code"] == "upstream_too_large" and error["type"] == "upstream_error"
    assert error["message"] == translator.translate("en", "upstream_too_large")
    await assert_let_go(fake)


async def test_an_oversized_upstream_error_on_the_legacy_route(
    make_client, fake: FakeUpstream, translator
):
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=str(CAP))
    fake.oversized_body, fake.status = HUGE, 500
    response = await client.post("/api", json={"user_content": "Hi"})
    raw = await response.read()
    assert response.status == 502 and b"LEAK" not in raw
    body = await response.json()
    assert body["code"] == 502
    assert body["data"]["response"] == translator.translate("en", "upstream_too_large")
    await assert_let_go(fake)


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
async def test_an_oversized_legacy_answer_is_a_502_with_nothing_of_it(
    make_client, fake: FakeUpstream, translator, sized
):
    """A call not streamed reads the upstream's JSON answer whole: capped like /v1's."""
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=str(CAP))
    fake.oversized_body, fake.oversized_sized = HUGE, sized
    response = await client.post("/api", json={"user_content": "Hi"})
    raw = await response.read()
    assert response.status == 502 and b"LEAK" not in raw
    assert json.loads(raw) == {
        "code": 502,
        "msg": "failed",
        "data": {"response": translator.translate("en", "upstream_too_large")},
    }
    await assert_let_go(fake)


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
async def test_an_answer_of_exactly_the_cap_is_relayed(make_client, fake: FakeUpstream, sized):
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=str(CAP))
    fake.oversized_body, fake.oversized_sized = CAP, sized
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    assert len(await response.read()) == CAP


async def test_speech_over_the_cap_is_still_streamed_whole(make_client, fake: FakeUpstream):
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=str(CAP))
    fake.speech = [b"a" * CAP, b"b" * CAP]
    body = {"model": "tts-1", "input": "Hi", "voice": "alloy"}
    response = await client.post("/v1/audio/speech", json=body)
    assert response.status == 200
    assert await response.read() == b"a" * CAP + b"b" * CAP


async def test_a_legacy_answer_longer_than_the_cap_is_a_502(make_client, fake, translator):
    """The legacy route holds the answer to send it whole (or, streamed, in its last event):
    past MAX_UPSTREAM_BODY_BYTES the call ends instead of growing without end."""
    fake.answer = ["x" * 1000] * 200
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=5000)
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 502
    body = await response.json()
    assert body == {
        "code": 502,
        "msg": "failed",
        "data": {"response": translator.translate("en", "upstream_too_large")},
    }


@pytest.mark.parametrize(("answer", "status"), [(4000, 200), (5000, 502)])
async def test_a_legacy_json_answer_is_capped_in_bytes_of_the_body(
    make_client, fake, answer, status
):
    """Not streamed, the cap counts the bytes of the upstream's JSON body, the answer and its
    wrapping (about 250 bytes here): an answer of 5,000 characters takes more than 5,000."""
    fake.answer = ["x" * answer]
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=5000)
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == status
    if status == 200:
        assert (await response.json())["current_response"] == "x" * answer


async def test_a_streamed_legacy_answer_longer_than_the_cap_ends_with_the_error_event(
    make_client, fake, translator
):
    fake.answer = ["x" * 1000] * 200
    client = await make_client(MAX_UPSTREAM_BODY_BYTES=5000)
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    assert response.status == 200
    text = await response.text()
    assert text.count("event: delta") <= 6
    last = text.rstrip("\n").split("\n\n")[-1]
    assert last.startswith("event: error\n")
    error = json.loads(last.split("data: ", 1)[1])
    assert error["code"] == 502
    assert error["data"]["response"] == translator.translate("en", "upstream_too_large")
