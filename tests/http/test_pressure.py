"""A Redis that answers decides every request, however slow: bursts and a stalled Redis admit
exactly the limit, with no fallback; the busy host is tested with real processes in
tests/system/test_pressure.py."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from gateway.keys import LIMITER_KEY
from tests.http.test_redis_failures import entries

pytestmark = pytest.mark.redis

LIMIT = 7


async def burst(client, count: int) -> Counter[int]:
    responses = await asyncio.gather(*(client.get("/api") for _ in range(count)))
    for response in responses:
        await response.read()
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
        assert "X-RateLimit-Degraded" not in response.headers
    return Counter(r.status for r in responses)


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
async def test_a_redis_that_stalls_mid_burst_still_decides_every_request(
    gateway, own_redis, proxies, key_prefix, mode
):
    # Another client's long script: every decision waits 1.5 s (three times REDIS_TIMEOUT).
    proxy = await proxies(own_redis.port, lambda index, name: 1.5 if name == "EVALSHA" else 0.0)
    client = await gateway(REDIS_URL=proxy.url, REDIS_FAILURE_MODE=mode, MINUTE_LIMIT=LIMIT)
    assert await burst(client, 100) == {403: LIMIT, 429: 100 - LIMIT}
    assert client.app[LIMITER_KEY].state == "redis"
    assert await entries(own_redis.url, key_prefix) == LIMIT


async def test_a_burst_opens_no_more_connections_than_the_pool(gateway, own_redis, proxies):
    proxy = await proxies(own_redis.port, lambda index, name: 0.2 if name == "EVALSHA" else 0.0)
    client = await gateway(REDIS_URL=proxy.url, MINUTE_LIMIT=1000)
    assert Counter((await burst(client, 300)).elements()) == {403: 300}
    assert proxy.connections <= 64


async def test_a_call_sent_twice_is_counted_once(redis_url, key_prefix):
    """The script is idempotent per request: a call resent after its connection broke (redis-py
    sends it once more on a new connection) is answered as admitted and recorded once."""
    import redis.asyncio

    from gateway.limits.backend import Subject
    from gateway.limits.redis_backend import SCRIPT, parse_reply, script_args, script_keys
    from gateway.quota import Limit

    subjects = [Subject("c", (Limit("minute", 60, 2),))]
    keys = script_keys(key_prefix, subjects)
    async with redis.asyncio.Redis.from_url(redis_url) as conn:
        script = conn.register_script(SCRIPT)

        async def call(member):
            return parse_reply(await script(keys=keys, args=script_args(subjects, None, member)))

        first = await call("m1")
        again = await call("m1")
        assert first[0] and again[0]
        assert first[1][0][0] == again[1][0][0] == 1  # one left after one recorded call
        assert await conn.zcard(keys[0]) == 1
        second = await call("m2")
        third = await call("m3")
        assert second[0] and not third[0]
        await conn.delete(*keys)
