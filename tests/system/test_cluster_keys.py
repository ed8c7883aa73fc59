"""A gateway key's limits on a three-master Redis Cluster: the key and each address live in
their own slots, so a call is decided subject by subject, and a call one refuses is taken back
from the others (limits/redis_backend.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from gateway.config import load_settings
from gateway.limits.backend import Subject
from gateway.limits.limiter import Limiter
from gateway.limits.redis_link import budget_keys_for, connect_redis, key_for
from gateway.quota import request_limits, token_budgets
from tests.support.processes import require
from tests.support.redis_cluster import RedisCluster

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

KEY = Subject("key:alice", request_limits(minute=20, scope="key"))
ADDRESSES = [f"203.0.113.{n}" for n in range(1, 7)]


@pytest.fixture
async def limiter(tmp_path):
    require("redis-server")
    cluster = RedisCluster(tmp_path)
    cluster.start()
    made = []

    async def make(address_limit: int, **env: str) -> Limiter:
        settings = load_settings(
            {
                "REDIS_URL": cluster.url,
                "MINUTE_LIMIT": str(address_limit),
                "REDIS_FAILURE_MODE": "closed",
                **env,
            }
        )
        client = connect_redis(settings)
        limiter = Limiter(settings, client)
        await limiter.start()
        made.append((limiter, client))
        return limiter

    try:
        yield make
    finally:
        for limiter, client in made:
            await limiter.aclose()
            await client.aclose()
        cluster.stop()


async def burst(limiter: Limiter, count: int) -> list[tuple[str, bool]]:
    async def one(n: int) -> tuple[str, bool]:
        address = ADDRESSES[n % len(ADDRESSES)]
        return address, (await limiter.hit(address, others=(KEY,))).allowed

    return await asyncio.gather(*(one(n) for n in range(count)))


async def test_a_keys_limit_is_exact_when_its_addresses_have_room(limiter):
    gate = await limiter(address_limit=100)
    results = await burst(gate, 300)
    assert sum(allowed for _, allowed in results) == 20
    redis = gate._redis.redis
    assert await redis.zcard(key_for(gate.prefix, KEY.bucket)) == 20
    # What the key refused was taken back from the addresses: each holds what it was admitted.
    admitted = Counter(address for address, allowed in results if allowed)
    for address in ADDRESSES:
        assert await redis.zcard(key_for(gate.prefix, address)) == admitted[address]


async def test_calls_an_address_refuses_are_taken_back_from_the_key(limiter):
    gate = await limiter(address_limit=2)
    results = await burst(gate, 300)
    admitted = Counter(address for address, allowed in results if allowed)
    assert sum(admitted.values()) == 12  # every address's 2; the key (20) never refused them
    assert all(count == 2 for count in admitted.values())
    # Only the admitted stay counted against the key: 8 more from new addresses, then refused.
    assert await gate._redis.redis.zcard(key_for(gate.prefix, KEY.bucket)) == 12
    later = [(await gate.hit(f"198.51.100.{n}", others=(KEY,))).allowed for n in range(10)]
    assert later == [True] * 8 + [False] * 2


async def test_token_reservations_a_key_refuses_are_taken_back_from_the_address(limiter):
    gate = await limiter(address_limit=1000, TOKENS_PER_MINUTE="100000")  # roomy for addresses
    key = Subject("key:bob", (), token_budgets(minute=1000, scope="key"))

    async def one(n: int) -> bool:
        address = ADDRESSES[n % len(ADDRESSES)]
        return (await gate.hit(address, tokens=100, others=(key,))).allowed

    admitted = await asyncio.gather(*(one(n) for n in range(60)))
    assert sum(admitted) == 10  # the key's 1,000 tokens
    redis = gate._redis.redis
    spent = 0
    for address in ADDRESSES:
        charges = await redis.zrange(budget_keys_for(gate.prefix, address)[0], 0, -1)
        spent += sum(int(member.rsplit(b":", 1)[1]) for member in charges)
    assert spent == 10 * 100  # only the admitted calls' reservations stay charged
    left = await gate.peek(key)
    assert left.budgets[0].remaining == 0
