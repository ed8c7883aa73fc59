"""The rest of OpenAI's API through the gateway, driven by the official SDK: responses (JSON and
stream), moderations, images, speech and transcriptions, each under the client's limits."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest

from gateway.keys import LIMITER_KEY
from tests.support.fake_upstream import FakeUpstream, form_fields

AUDIO = b"RIFF\x00\x00\x00\x00WAVEfmt fake audio"
USED = 11 + 4  # the fake upstream's input_tokens + output_tokens for its default answer


def sdk_for(client, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="sk-test", max_retries=0, **options
    )


async def respond(c: openai.AsyncOpenAI) -> Any:
    return await c.responses.create(model="gpt-4o-mini", input="Say hello")


async def respond_streamed(c: openai.AsyncOpenAI) -> list[Any]:
    stream = await c.responses.create(model="gpt-4o-mini", input="Say hello", stream=True)
    return [event async for event in stream]


async def moderate(c: openai.AsyncOpenAI) -> Any:
    return await c.moderations.create(model="omni-moderation-latest", input="a kind word")


async def draw(c: openai.AsyncOpenAI) -> Any:
    return await c.images.generate(model="gpt-image-1", prompt="a red circle", n=2)


async def speak(c: openai.AsyncOpenAI) -> tuple[str, bytes]:
    create = c.audio.speech.with_streaming_response.create
    async with create(model="gpt-4o-mini-tts", voice="alloy", input="Hello") as raw:
        return raw.headers["content-type"], b"".join([part async for part in raw.iter_bytes()])


async def transcribe(c: openai.AsyncOpenAI) -> Any:
    return await c.audio.transcriptions.create(model="whisper-1", file=("hello.wav", AUDIO))


CALLS: dict[str, Callable[[openai.AsyncOpenAI], Awaitable[Any]]] = {
    "responses": respond,
    "responses-stream": respond_streamed,
    "moderations": moderate,
    "images": draw,
    "speech": speak,
    "transcriptions": transcribe,
}


async def test_responses(client, fake: FakeUpstream):
    async with sdk_for(client) as c:
        answer = await respond(c)
    assert answer.output_text == "Hello, world!"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 4)
    sent = fake.received[-1]
    assert (sent.path, sent.key) == ("/v1/responses", "sk-test")
    assert sent.body == {"model": "gpt-4o-mini", "input": "Say hello"}


async def test_responses_stream_relays_each_event_type(client, fake: FakeUpstream):
    async with sdk_for(client) as c:
        events = await respond_streamed(c)
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello, world!"
    assert events[-1].response.usage.total_tokens == USED
    # Nothing spliced into the body: the Responses API always ends with its usage.
    assert fake.received[-1].body == {"model": "gpt-4o-mini", "input": "Say hello", "stream": True}


async def test_responses_stream_bytes_are_what_the_upstream_sent(client, fake: FakeUpstream):
    async with sdk_for(client) as c:
        create = c.responses.with_streaming_response.create
        async with create(model="m", input="Hi", stream=True) as raw:
            data = b"".join([part async for part in raw.iter_bytes()])
            assert raw.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert raw.headers["x-request-id"]
    assert data == b"".join(fake.stream_bytes)


async def test_moderations(client, fake: FakeUpstream):
    fake.flagged = True
    async with sdk_for(client) as c:
        result = (await moderate(c)).results[0]
    assert result.flagged and result.categories.violence
    assert fake.received[-1].body == {"model": "omni-moderation-latest", "input": "a kind word"}


async def test_images(client, fake: FakeUpstream):
    async with sdk_for(client) as c:
        images = await draw(c)
    assert [base64.b64decode(image.b64_json) for image in images.data] == [fake.image] * 2
    assert fake.received[-1].body["prompt"] == "a red circle"


async def test_speech_is_relayed_as_it_comes(client, fake: FakeUpstream):
    async with sdk_for(client) as c:
        content_type, audio = await speak(c)
    assert content_type == "audio/mpeg"
    assert audio == b"".join(fake.speech)
    assert fake.received[-1].body["voice"] == "alloy"


async def test_speech_arrives_before_the_upstream_has_finished(client, fake: FakeUpstream):
    fake.speech = [b"first-frame", b"second-frame"]
    async with sdk_for(client) as c:
        create = c.audio.speech.with_streaming_response.create
        fake.chunk_delay = 60.0  # only a relay that waits for the whole body would see it
        async with create(model="tts-1", voice="alloy", input="Hi") as raw:
            parts = raw.iter_bytes()
            first = await asyncio.wait_for(anext(parts), 30)
            assert first.startswith(b"first-frame")


async def test_transcriptions_relay_the_multipart_form_as_bytes(client, fake: FakeUpstream):
    async with sdk_for(client) as c:
        transcript = await transcribe(c)
        text = await c.audio.transcriptions.create(
            model="whisper-1", file=("hello.wav", AUDIO), response_format="text"
        )
    assert transcript.text == "Hello, world!"
    assert text.strip() == "Hello, world!"
    sent = fake.received[0]
    assert sent.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert form_fields(sent) == {"model": b"whisper-1", "file": AUDIO}


async def test_an_upload_above_max_body_bytes_is_413(make_client, fake: FakeUpstream):
    client = await make_client(MAX_BODY_BYTES=64)
    async with sdk_for(client) as c:
        with pytest.raises(openai.APIStatusError) as caught:
            await transcribe(c)
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "body_too_large"
    assert fake.received == []


async def test_a_transcription_not_sent_as_a_form_is_415(client, fake: FakeUpstream):
    response = await client.post("/v1/audio/transcriptions", json={"file": "x"})
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    assert fake.received == []


@pytest.mark.parametrize("call", list(CALLS))
async def test_each_call_counts_against_the_minute_limit(make_client, fake, call):
    client = await make_client(MINUTE_LIMIT=2)
    async with sdk_for(client) as c:
        for _ in range(2):
            await CALLS[call](c)
        with pytest.raises(openai.RateLimitError) as caught:
            await CALLS[call](c)
    assert caught.value.code == "too_many_requests"
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert caught.value.response.headers["x-request-id"]
    assert len(fake.received) == 2


async def remaining(client) -> int:
    decision = await client.server.app[LIMITER_KEY].hit("127.0.0.1", tokens=0)
    return next(b.remaining for b in decision.budgets if b.name == "minute")


@pytest.mark.parametrize("call", ["responses", "responses-stream"])
async def test_a_responses_call_is_charged_its_usage(make_client, fake, call):
    client = await make_client(TOKENS_PER_MINUTE=5000)
    async with sdk_for(client) as c:
        await CALLS[call](c)
    assert await remaining(client) == 5000 - USED


async def test_max_output_tokens_is_the_worst_case_reserved(make_client, fake):
    client = await make_client(TOKENS_PER_MINUTE=2000)
    async with sdk_for(client) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.responses.create(model="m", input="Hi", max_output_tokens=4000)
    assert caught.value.code == "token_request_too_large"
    assert fake.received == []


async def test_the_other_families_are_not_metered(make_client, fake):
    client = await make_client(TOKENS_PER_MINUTE=5000)
    async with sdk_for(client) as c:
        await moderate(c)
        await speak(c)
    assert await remaining(client) == 5000


async def test_openai_routes_turns_families_off(make_client, fake):
    client = await make_client(OPENAI_ROUTES="chat,models")
    async with sdk_for(client) as c:
        for call in (respond, moderate, draw, transcribe):
            with pytest.raises(openai.NotFoundError) as caught:
                await call(c)
            assert caught.value.code == "not_found"
        assert [m.id async for m in c.models.list()]
    assert [r.path for r in fake.received] == ["/v1/models"]


async def test_upstream_errors_come_back_in_openai_shape(client, fake: FakeUpstream):
    fake.status = 400
    async with sdk_for(client) as c:
        for call in (respond, moderate, draw, transcribe):
            with pytest.raises(openai.BadRequestError) as caught:
                await call(c)
            assert fake.error_message in caught.value.message
