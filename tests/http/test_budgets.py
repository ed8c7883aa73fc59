"""Token budgets through the gateway: /v1 and the legacy route, streamed and not, one budget."""

from __future__ import annotations

import asyncio
import json

import httpx2
import openai
import pytest
import redis.asyncio

from gateway.keys import LIMITER_KEY
from gateway.limits.budget import prompt_estimate
from gateway.limits.redis_backend import WARM_CONNECTIONS
from gateway.limits.redis_link import budget_keys_for, key_for
from tests.support.clock import ManualClock
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_server import delete_prefix

CHAT = "/v1/chat/completions"
CLIENT = "127.0.0.1"  # the test client's bucket
S = 1_000_000
T0 = 1_700_000_000_123_457
USED = 11 + 4  # what the fake upstream reports: prompt_tokens + completion_tokens
HANG_GUARD = 10.0  # only stops a broken test from hanging; never a measure of speed


def body(stream: bool, **extra) -> bytes:
    call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    return json.dumps({**call, "max_tokens": 10, "stream": stream, **extra}).encode()


def worst(raw: bytes) -> int:
    return prompt_estimate(len(raw)) + 10


@pytest.fixture
def base_env(base_env: dict[str, str]) -> dict[str, str]:
    """Budgets here are a few calls' worth, below the default reserve, which start-up refuses."""
    return {**base_env, "DEFAULT_RESERVE_TOKENS": "10"}


@pytest.fixture
def clock() -> ManualClock:
    """The embedded limiter's clock, moved by the test instead of waited for."""
    return ManualClock(T0)


async def remaining(client, name: str = "minute") -> int:
    """The client's tokens left, asked with a call that reserves none."""
    decision = await client.server.app[LIMITER_KEY].hit(CLIENT, tokens=0)
    return next(b.remaining for b in decision.budgets if b.name == name)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_spent_minute_budget_gets_429_until_the_window_allows(
    make_client, fake, clock, translator, stream
):
    raw = body(stream)
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=2 * USED + worst(raw) - 1)
    for _ in range(2):
        response = await client.post(CHAT, data=raw)
        assert response.status == 200
        await response.read()
    refused = await client.post(CHAT, data=raw, headers={"Accept-Language": "zh-CN"})
    assert refused.status == 429 and refused.headers["Retry-After"] == "60"
    limit = 2 * USED + worst(raw) - 1
    assert await refused.json() == {
        "error": {
            "message": translator.translate(
                "zh_CN", "token_budget_exceeded", limit=limit, window="分钟", seconds=60
            ),
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "token_budget_exceeded",
        }
    }
    clock.now += 59 * S
    again = await client.post(CHAT, data=raw)
    assert again.status == 429 and again.headers["Retry-After"] == "1"
    clock.now += S
    assert (await client.post(CHAT, data=raw)).status == 200
    assert len(fake.received) == 3


async def test_a_bad_body_counts_as_a_request_but_reserves_no_tokens(make_client, fake, clock):
    client = await make_client(clock=clock, MINUTE_LIMIT=3, TOKENS_PER_MINUTE=1000)
    bad = await client.post(CHAT, data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status == 400
    assert await remaining(client) == 1000  # asking is the second request of the minute
    assert (await client.get("/v1/models")).status == 200
    refused = await client.post(CHAT, data=body(False))
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "too_many_requests"
    assert [r.path for r in fake.received] == ["/v1/models"]


async def test_a_call_larger_than_the_budget_is_refused_for_good(make_client, fake, clock):
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=100)
    raw = body(False, max_tokens=200)
    response = await client.post(CHAT, data=raw)
    assert response.status == 400
    assert "Retry-After" not in response.headers
    assert (await response.json())["error"]["code"] == "token_request_too_large"
    sent = []

    async def count(request):
        sent.append(request.url.path)

    url = str(client.make_url("/v1"))
    # Only to count the SDK's attempts; its retries (2 by default) stay as they are.
    http = httpx2.AsyncClient(event_hooks={"request": [count]})
    async with openai.AsyncOpenAI(base_url=url, api_key="sk-t", http_client=http) as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=200
            )
    assert caught.value.code == "token_request_too_large"
    assert sent == ["/v1/chat/completions"]
    assert fake.received == []


async def test_the_injected_usage_chunk_is_hidden_unless_asked_for(make_client, fake, clock):
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=10_000)
    hidden = await (await client.post(CHAT, data=body(True))).read()
    assert fake.received[-1].body["stream_options"] == {"include_usage": True}
    usage_event = next(e for e in fake.stream_bytes if b'"usage"' in e)
    assert hidden == b"".join(e for e in fake.stream_bytes if e is not usage_event)
    assert b'"usage"' not in hidden and hidden.endswith(b"data: [DONE]\n\n")

    fake.stream_bytes.clear()
    asked = body(True, stream_options={"include_usage": True})
    shown = await (await client.post(CHAT, data=asked)).read()
    assert fake.received[-1].raw == asked
    assert shown == b"".join(fake.stream_bytes) and b'"usage"' in shown
    assert await remaining(client) == 10_000 - 2 * USED


async def test_the_sdk_sees_no_usage_chunk_it_did_not_ask_for(make_client, fake, clock):
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=10_000)
    messages = [{"role": "user", "content": "Hi"}]
    async with openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="sk-t") as sdk:
        plain = await sdk.chat.completions.create(model="m", messages=messages, stream=True)
        chunks = [chunk async for chunk in plain]
        asked = await sdk.chat.completions.create(
            model="m", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        with_usage = [chunk async for chunk in asked]
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert with_usage[-1].choices == [] and with_usage[-1].usage.total_tokens == USED
    assert len(with_usage) == len(chunks) + 1


async def test_a_stream_cut_short_by_the_client_is_charged_what_it_produced(
    make_client, fake: FakeUpstream, clock
):
    fake.hold_after_first = asyncio.Event()
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=10_000)
    raw = body(True)
    response = await client.post(CHAT, data=raw)
    seen = b""
    while b"Hello" not in seen:
        seen += await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=HANG_GUARD)
    response.close()
    await asyncio.wait_for(fake.cancelled.wait(), timeout=HANG_GUARD)
    assert not fake.finished.is_set()
    # The upstream never said: the prompt estimate, and one token for the one piece relayed.
    assert await remaining(client) == 10_000 - (prompt_estimate(len(raw)) + 1)


async def test_a_refused_upstream_call_is_charged_nothing(make_client, fake, clock):
    fake.status = 400
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=1000)
    for stream in (False, True):
        assert (await client.post(CHAT, data=body(stream))).status == 400
    assert await remaining(client) == 1000


async def test_legacy_and_v1_draw_on_one_budget(make_client, fake, clock, translator):
    sent = json.dumps([{"role": "user", "content": "Hi"}]).encode()
    legacy_worst = prompt_estimate(len(sent)) + 100
    budget = 2 * USED + legacy_worst - 1
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=budget, LANG="ru_RU")
    legacy = {"user_content": "Hi", "max_tokens": 100}
    assert (await client.post("/api", json=legacy)).status == 200
    # Not streamed: the upstream's JSON answer says its usage without being asked.
    assert fake.received[-1].body["stream"] is False
    assert "stream_options" not in fake.received[-1].body
    assert await remaining(client) == budget - USED
    assert (await client.post(CHAT, data=body(False))).status == 200
    assert await remaining(client) == budget - 2 * USED
    refused = await client.post("/api", json=legacy)
    assert refused.status == 429 and refused.headers["Retry-After"] == "60"
    answer = await refused.json()
    assert answer["code"] == 429 and answer["msg"] == "failed"
    assert answer["data"]["response"] == translator.translate(
        "ru_RU", "token_budget_exceeded", limit=budget, window="минуту", seconds=60
    )
    assert (await client.post(CHAT, data=body(False))).status == 200


@pytest.mark.parametrize("backend", ["embedded", pytest.param("redis", marks=pytest.mark.redis)])
async def test_twenty_concurrent_streams_cannot_overspend(
    make_client, fake: FakeUpstream, backend, request, key_prefix
):
    env = {"TOKENS_PER_MINUTE": 100, "KEY_PREFIX": key_prefix}
    if backend == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
    client = await make_client(**env)
    fake.hold_after_first = asyncio.Event()
    raw = body(True)
    try:
        responses = await asyncio.gather(*[client.post(CHAT, data=raw) for _ in range(20)])
        admitted = [r for r in responses if r.status == 200]
        refused = [r for r in responses if r.status == 429]
        # Each admission held its worst case while every admitted stream was still running.
        assert len(admitted) == 100 // worst(raw) and len(refused) == 20 - len(admitted)
        assert {(await r.json())["error"]["code"] for r in refused} == {"token_budget_exceeded"}
        fake.hold_after_first.set()
        for response in admitted:
            assert (await response.read()).endswith(b"data: [DONE]\n\n")
        assert await remaining(client) == 100 - len(admitted) * USED
    finally:
        if backend == "redis":
            async with redis.asyncio.Redis.from_url(env["REDIS_URL"]) as conn:
                await delete_prefix(conn, key_prefix)


@pytest.mark.redis
async def test_admission_and_request_count_share_one_round_trip(
    aiohttp_client, base_env, translator, key_prefix, redis_url
):
    from gateway.app import create_app
    from gateway.config import load_settings
    from tests.support.tcp_proxy import RedisProxy

    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = RedisProxy(port)
    await proxy.start()
    env = {**base_env, "KEY_PREFIX": key_prefix, "REDIS_URL": proxy.url}
    settings = load_settings({**env, "MINUTE_LIMIT": "30", "TOKENS_PER_MINUTE": "1000"})
    client = await aiohttp_client(create_app(settings, translator=translator))
    try:
        # Start-up: connections opened, its three scripts loaded.
        assert proxy.commands == ["PING"] * WARM_CONNECTIONS + ["SCRIPT"] * 3
        proxy.commands.clear()
        assert (await client.post(CHAT, data=body(False))).status == 200
        # Admission (requests and tokens together), then the settlement.
        assert proxy.commands == ["EVALSHA", "EVALSHA"]
        proxy.commands.clear()
        streamed = await client.post(CHAT, data=body(True))
        assert streamed.status == 200
        await streamed.read()
        assert proxy.commands == ["EVALSHA", "EVALSHA"]
        proxy.commands.clear()
        assert (await client.get("/v1/models")).status == 200
        assert proxy.commands == ["EVALSHA"]
        async with redis.asyncio.Redis.from_url(redis_url) as conn:
            assert await conn.zcard(key_for(key_prefix, CLIENT)) == 3
            charges = await conn.zrange(budget_keys_for(key_prefix, CLIENT)[0], 0, -1)
            assert [c.rsplit(b":", 1)[1] for c in charges] == [b"15", b"15"]
    finally:
        await proxy.close()
        async with redis.asyncio.Redis.from_url(redis_url) as conn:
            await delete_prefix(conn, key_prefix)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_legacy_call_is_charged_its_usage_not_its_reservation(
    make_client, fake, clock, stream
):
    sent = json.dumps([{"role": "user", "content": "Hi"}]).encode()
    legacy_worst = prompt_estimate(len(sent)) + 100
    # Room for one worst case and one settled call: the second call fits only if the first
    # was settled to its usage.
    client = await make_client(clock=clock, TOKENS_PER_MINUTE=legacy_worst + USED)
    call = {"user_content": "Hi", "max_tokens": 100, "stream": stream}
    for _ in range(2):
        response = await client.post("/api", json=call)
        assert response.status == 200
        await response.read()
    assert (await client.post("/api", json=call)).status == 429


@pytest.mark.parametrize(
    ("path", "raw", "status"),
    [
        ("/api", b"{bad", 400),
        (CHAT, b"{bad", 400),
        (CHAT, body(False, max_tokens=10_000), 400),  # can never fit the budget
    ],
)
async def test_calls_refused_before_their_tokens_are_weighed_still_count(
    make_client, fake, path, raw, status
):
    client = await make_client(MINUTE_LIMIT=2, TOKENS_PER_MINUTE=5000)
    headers = {"Content-Type": "application/json"}
    statuses = []
    for _ in range(3):
        response = await client.post(path, data=raw, headers=headers)
        statuses.append(response.status)
        assert response.headers["RateLimit"].startswith('"1m";r=')
        assert "X-RateLimit-Remaining" in response.headers
    assert statuses == [status, status, 429]
    assert response.headers["Retry-After"] == "60"
    response = await client.post(path, data=body(False), headers=headers)
    assert response.status == 429
    assert fake.received == []
