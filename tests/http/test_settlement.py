"""A metered call's tokens are settled exactly once, whichever way the call ends."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.app import create_app
from gateway.config import load_settings
from gateway.keys import LIMITER_KEY
from gateway.limits.budget import prompt_estimate
from tests.support.fake_upstream import ANSWER_FAULTS

CHAT = "/v1/chat/completions"
DEADLINE = 10.0  # only stops a broken test from hanging; never a measure of speed


class Settlements:
    """Counts the limiter's settlements of one app, and what each charged."""

    def __init__(self, client) -> None:
        limiter = client.server.app[LIMITER_KEY]
        self.charges: list[int] = []
        settle = limiter.settle

        async def counted(key, reservation, tokens, **others):
            self.charges.append(tokens)
            await settle(key, reservation, tokens, **others)

        limiter.settle = counted

    async def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + DEADLINE
        while len(self.charges) < count:
            assert time.monotonic() < deadline, f"{len(self.charges)} settlements, not {count}"
            await asyncio.sleep(0.01)


ROUTES = [
    pytest.param("/api", {"user_content": "Hi", "stream": True}, id="legacy-stream"),
    pytest.param("/api", {"user_content": "Hi"}, id="legacy-json"),
    pytest.param(
        CHAT, {"messages": [{"role": "user", "content": "Hi"}], "stream": True}, id="v1-stream"
    ),
    pytest.param(CHAT, {"messages": [{"role": "user", "content": "Hi"}]}, id="v1-json"),
]


async def metered(make_client):
    client = await make_client(TOKENS_PER_MINUTE=100_000)
    return client, Settlements(client)


async def settled_after_a_quiet_moment(settlements: Settlements, count: int) -> None:
    """Exactly `count`: wait for them, then give a second settlement every chance to appear."""
    await settlements.wait_for(count)
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert len(settlements.charges) == count, settlements.charges


@pytest.mark.parametrize(("path", "call"), ROUTES)
async def test_success(make_client, fake, path, call):
    client, settlements = await metered(make_client)
    response = await client.post(path, json=call)
    assert response.status == 200
    await response.read()
    await settled_after_a_quiet_moment(settlements, 1)
    assert settlements.charges == [11 + 4]


@pytest.mark.parametrize(("path", "call"), ROUTES)
async def test_upstream_error_before_the_first_byte(make_client, fake, path, call):
    client, settlements = await metered(make_client)
    fake.status = 500
    response = await client.post(path, json=call)
    assert response.status in (500, 502)  # /v1 relays the upstream's 500; legacy says 502
    await response.read()
    await settled_after_a_quiet_moment(settlements, 1)
    assert settlements.charges == [0]  # the upstream answered nothing: nothing is charged


@pytest.mark.parametrize(("path", "call"), ROUTES)
async def test_upstream_cut_after_the_first_byte(make_client, fake, path, call):
    client, settlements = await metered(make_client)
    fake.cut_after = 2  # a stream
    fake.answer_fault = "reset"  # a JSON answer
    response = await client.post(path, json=call)
    await response.read()
    await settled_after_a_quiet_moment(settlements, 1)
    assert settlements.charges[0] > 0  # the prompt estimate and the deltas that came


LEGACY_PROMPT = prompt_estimate(len(json.dumps([{"role": "user", "content": "Hi"}]).encode()))


@pytest.mark.parametrize("fault", ANSWER_FAULTS)
async def test_a_broken_legacy_json_answer(make_client, fake, fault):
    """The upstream answered (200) and its answer broke: charged the prompt estimate, once."""
    client, settlements = await metered(make_client)
    fake.answer_fault = fault
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 502
    await settled_after_a_quiet_moment(settlements, 1)
    assert settlements.charges == [LEGACY_PROMPT]


async def test_a_legacy_json_answer_that_stalls(make_client, fake):
    client = await make_client(TOKENS_PER_MINUTE=100_000, UPSTREAM_TIMEOUT="0.3")
    settlements = Settlements(client)
    fake.hold_answer = asyncio.Event()
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 504
    await settled_after_a_quiet_moment(settlements, 1)
    assert settlements.charges == [LEGACY_PROMPT]
    fake.hold_answer.set()


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
async def test_an_oversized_legacy_json_answer(make_client, fake, sized):
    client = await make_client(TOKENS_PER_MINUTE=100_000, MAX_UPSTREAM_BODY_BYTES=4096)
    settlements = Settlements(client)
    fake.oversized_body, fake.oversized_sized = 1024 * 1024, sized
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 502
    await settled_after_a_quiet_moment(settlements, 1)
    assert settlements.charges == [LEGACY_PROMPT]


@pytest.mark.parametrize(("path", "call"), [ROUTES[0], ROUTES[2]])
async def test_client_disconnect(make_client, fake, path, call):
    client, settlements = await metered(make_client)
    fake.hold_after_first = asyncio.Event()
    response = await client.post(path, json=call)
    assert response.status == 200
    await asyncio.wait_for(response.content.readany(), DEADLINE)
    response.close()
    await settled_after_a_quiet_moment(settlements, 1)
    fake.hold_after_first.set()


@pytest.mark.parametrize(("path", "call"), [ROUTES[1], ROUTES[3]])
async def test_client_disconnect_before_a_json_answer(make_client, fake, path, call):
    client, settlements = await metered(make_client)
    fake.hold_answer = asyncio.Event()
    request = asyncio.ensure_future(client.post(path, json=call))
    await asyncio.wait_for(fake.started.wait(), DEADLINE)
    await asyncio.sleep(0.05)
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    await settled_after_a_quiet_moment(settlements, 1)
    fake.hold_answer.set()


@pytest.mark.parametrize(("path", "call"), [ROUTES[0], ROUTES[1], ROUTES[2]])
async def test_shutdown(aiohttp_server, aiohttp_client, base_env, translator, fake, path, call):
    settings = load_settings({**base_env, "TOKENS_PER_MINUTE": "100000"})
    app = create_app(settings, translator=translator)
    # A short grace: the call is still held when the server cancels it.
    client = await aiohttp_client(await aiohttp_server(app, shutdown_timeout=0.2))
    settlements = Settlements(client)
    fake.hold_after_first = fake.hold_answer = asyncio.Event()
    request = asyncio.ensure_future(client.post(path, data=json.dumps(call)))
    await asyncio.wait_for(fake.started.wait(), DEADLINE)
    closing = asyncio.ensure_future(client.server.close())  # shut down with the call in flight
    await settled_after_a_quiet_moment(settlements, 1)
    fake.hold_after_first.set()
    await closing
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
