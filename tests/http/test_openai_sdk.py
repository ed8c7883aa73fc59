"""The official openai SDK, sync and async, pointed at the gateway by base_url alone."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.http.sse import HEARTBEAT
from tests.support.fake_upstream import FakeUpstream

MESSAGES: list[Any] = [{"role": "user", "content": "Hi"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def sent_stream(fake: FakeUpstream) -> bytes:
    return b"".join(fake.stream_bytes)


class Sdk:
    """Runs a call with the async client, or with the sync client in a worker thread.

    `call(client)` serves both when the async client's result only needs awaiting; otherwise the
    async variant comes as `aio`.
    """

    def __init__(self, base_url: str, mode: str) -> None:
        self.base_url = base_url
        self.mode = mode

    async def __call__(
        self, call: Callable[[Any], Any], aio: Callable[[Any], Awaitable[Any]] | None = None
    ) -> Any:
        if self.mode == "async":
            async with openai.AsyncOpenAI(base_url=self.base_url, api_key="sk-test") as sdk:
                return await (aio or call)(sdk)

        def run() -> Any:
            with openai.OpenAI(base_url=self.base_url, api_key="sk-test") as sdk:
                return call(sdk)

        return await asyncio.to_thread(run)


@pytest.fixture(params=["async", "sync"])
def sdk(request, client) -> Sdk:
    return Sdk(str(client.make_url("/v1")), request.param)


def stream_chat(c):
    return list(c.chat.completions.create(model="m", messages=MESSAGES, stream=True))


async def astream_chat(c):
    stream = await c.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    return [chunk async for chunk in stream]


def raw_stream(c):
    create = c.chat.completions.with_streaming_response.create
    with create(model="m", messages=MESSAGES, stream=True) as raw:
        return raw.headers, b"".join(raw.iter_bytes())


async def araw_stream(c):
    create = c.chat.completions.with_streaming_response.create
    async with create(model="m", messages=MESSAGES, stream=True) as raw:
        return raw.headers, b"".join([part async for part in raw.iter_bytes()])


async def test_chat(sdk: Sdk, fake: FakeUpstream):
    completion = await sdk(
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, seed=3, extra_body={"x_unknown": [1]}
        )
    )
    assert completion.choices[0].message.content == "Hello, world!"
    assert completion.usage.total_tokens == 15
    sent = fake.received[-1]
    assert sent.key == "sk-test"
    assert sent.body == {"model": "gpt-4o-mini", "messages": MESSAGES, "seed": 3, "x_unknown": [1]}


async def test_chat_stream(sdk: Sdk, fake: FakeUpstream):
    chunks = await sdk(stream_chat, astream_chat)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Hello, world!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert fake.received[-1].body["stream"] is True
    assert "stream_options" not in fake.received[-1].body


async def test_raw_stream_bytes_are_what_the_upstream_sent(sdk: Sdk, fake: FakeUpstream):
    headers, data = await sdk(raw_stream, araw_stream)
    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert fake.stream_bytes and data == sent_stream(fake)


async def test_completions_embeddings_models(sdk: Sdk, fake: FakeUpstream):
    def call(c):
        return (
            c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=5),
            c.embeddings.create(
                model="text-embedding-3-small", input="hi", encoding_format="float"
            ),
            [m.id for m in c.models.list()],
            c.models.retrieve("gpt-4o"),
        )

    async def acall(c):
        return (
            await c.completions.create(
                model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=5
            ),
            await c.embeddings.create(
                model="text-embedding-3-small", input="hi", encoding_format="float"
            ),
            [m.id async for m in c.models.list()],
            await c.models.retrieve("gpt-4o"),
        )

    completion, embedding, model_ids, model = await sdk(call, acall)
    assert completion.choices[0].text == "Hello, world!"
    assert embedding.data[0].embedding == [0.25, -0.5, 0.125]
    assert model_ids == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
    assert model.id == "gpt-4o" and model.owned_by == "fake"
    assert [r.path for r in fake.received] == [
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/gpt-4o",
    ]


async def test_tools_call(sdk: Sdk, fake: FakeUpstream):
    completion = await sdk(
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, tools=TOOLS, tool_choice="auto"
        )
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake.received[-1].body["tools"] == TOOLS
    assert fake.received[-1].body["tool_choice"] == "auto"


async def test_upstream_401_is_authentication_error(sdk: Sdk, fake: FakeUpstream):
    fake.accepted_keys = {"sk-good"}
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(lambda c: c.chat.completions.create(model="m", messages=MESSAGES))
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert "Incorrect API key provided" in caught.value.message
    assert len(fake.received) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_400_is_bad_request_error(sdk: Sdk, fake: FakeUpstream, stream: bool):
    fake.status = 400
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(
            lambda c: c.chat.completions.create(model="nope", messages=MESSAGES, stream=stream)
        )
    assert caught.value.status_code == 400
    assert fake.error_message in caught.value.message
    assert caught.value.type == "invalid_request_error"


async def test_stream_cut_short_raises_api_error(sdk: Sdk, fake: FakeUpstream, translator):
    fake.cut_after = 2
    with pytest.raises(openai.APIError) as caught:
        await sdk(stream_chat, astream_chat)
    assert caught.value.message == translator.translate("en", "upstream_stream_broken")
    assert caught.value.body["code"] == "upstream_stream_broken"


async def test_heartbeats_are_ignored_by_the_sdk(make_client, fake: FakeUpstream):
    fake.first_byte_delay = 0.3
    client = await make_client(STREAM_HEARTBEAT="0.05")
    sdk = Sdk(str(client.make_url("/v1")), "async")
    _, data = await sdk(raw_stream, araw_stream)
    assert data.startswith(HEARTBEAT) and data.endswith(sent_stream(fake))
    fake.stream_bytes.clear()
    chunks = await sdk(stream_chat, astream_chat)
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hello, world!"
    )


async def test_empty_authorization_header_uses_the_servers_key(client, fake: FakeUpstream):
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        api_key="unused",
        default_headers={"Authorization": ""},
    ) as sdk:
        models = [m.id async for m in sdk.models.list()]
    assert models and fake.received[-1].key == "sk-server-key"


async def test_our_429_is_rate_limit_error_with_retry_after(make_client, fake, translator):
    client = await make_client(MINUTE_LIMIT="1")
    url = str(client.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=url, api_key="sk-t", max_retries=0) as sdk:
        await sdk.models.list()
        with pytest.raises(openai.RateLimitError) as caught:
            await sdk.chat.completions.create(model="m", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 429
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert error.code == "too_many_requests"
    assert error.body["message"] == translator.translate(
        "en",
        "too_many_requests",
        limit=1,
        window="minute",
        seconds=error.response.headers["retry-after"],
    )
    assert len(fake.received) == 1


async def test_the_sdk_waits_out_our_retry_after_and_gets_through(make_client, fake):
    client = await make_client(SECOND_LIMIT="1")
    sdk = Sdk(str(client.make_url("/v1")), "sync")

    def twice(c):
        c.models.list()
        raw = c.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        return raw.retries_taken, raw.parse()

    retries, completion = await sdk(twice)
    # Retry-After is rounded up from the exact wait, so one retry after it always gets through;
    # the SDK's own backoff (under a second) would have needed more.
    assert retries == 1
    assert completion.choices[0].message.content == "Hello, world!"
    assert [r.path for r in fake.received] == ["/v1/models", "/v1/chat/completions"]


async def test_the_readme_example_works(client, fake: FakeUpstream):
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Use it with the OpenAI SDK\n", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'base_url="http://localhost:5000/v1"' in example
    code = example.replace("http://localhost:5000/v1", str(client.make_url("/v1")))
    printed = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(printed):
            exec(code, {})

    await asyncio.to_thread(run)
    assert printed.getvalue() == "Hello, world!\nHello, world!\n"
    assert [r.key for r in fake.received] == ["sk-your-openai-key"] * 2
