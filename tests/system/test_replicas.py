"""Several gateway processes sharing one Redis admit exactly the limit, whoever answers."""

from __future__ import annotations

import asyncio
import collections
import time

import aiohttp
import pytest
import redis.asyncio

from gateway.limits.redis_link import key_for
from tests.support.fake_upstream import FakeUpstream, create_fake_upstream
from tests.support.processes import gateway, wait_until_serving
from tests.support.redis_server import delete_prefix, free_port

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

REPLICAS = 3
LIMIT = 25
PER_CLIENT = 200
CLIENTS = ["198.51.100.7", "2001:db8:7:7::1"]
ALICE = "gw-alice-0123456789abcdef"
KEY_LIMIT = 40


@pytest.fixture
async def start_replicas(aiohttp_server, redis_url, key_prefix, tmp_path):
    """start_replicas(**env): REPLICAS gateways on the shared Redis, with a fake upstream."""
    fake = FakeUpstream(answer=["ok"])
    upstream = await aiohttp_server(create_fake_upstream(fake), host="127.0.0.1")
    base = {
        "OPENAI_BASE_URL": str(upstream.make_url("/v1")),
        "API_KEY": "sk-test",
        "ROUTE": "api",
        "REDIS_URL": redis_url,
        "KEY_PREFIX": key_prefix,
        "MINUTE_LIMIT": str(LIMIT),
        "TRUSTED_PROXIES": "127.0.0.1",
        # Loaded on two cores, a call may wait; closed mode turns any fallback into a visible 503
        # rather than a local count.
        "REDIS_TIMEOUT": "5",
        "REDIS_FAILURE_MODE": "closed",
        "LOG_LEVEL": "WARNING",
    }
    processes = []

    async def start(**env: str) -> tuple[list[int], FakeUpstream]:
        ports = [free_port() for _ in range(REPLICAS)]
        for port in ports:
            log = tmp_path / f"gateway-{port}.log"
            processes.append(gateway(port, log, **{**base, **env}))
        for port, process in zip(ports, processes, strict=True):
            await wait_until_serving(f"http://127.0.0.1:{port}/healthz", process)
        return ports, fake

    try:
        yield start
    finally:
        for process in processes:
            process.close()
        async with redis.asyncio.Redis.from_url(redis_url) as conn:
            await delete_prefix(conn, key_prefix)


async def test_replicas_sharing_redis_admit_exactly_the_limit(
    start_replicas, redis_url, key_prefix
):
    ports, fake = await start_replicas()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def ask(index: int) -> tuple[str, int, int]:
            client = CLIENTS[index % len(CLIENTS)]
            port = ports[index % REPLICAS]
            async with session.post(
                f"http://127.0.0.1:{port}/api",
                json={"user_content": "Hi"},
                headers={"X-Forwarded-For": client},
            ) as response:
                await response.read()
                return client, port, response.status

        started = time.monotonic()
        results = await asyncio.gather(*[ask(i) for i in range(PER_CLIENT * len(CLIENTS))])
        took = time.monotonic() - started
    tally = collections.Counter((client, status) for client, _, status in results)
    print(f"{len(results)} concurrent requests over {REPLICAS} gateways in {took:.2f} s: {tally}")
    for client in CLIENTS:
        assert tally[(client, 200)] == LIMIT
        assert tally[(client, 429)] == PER_CLIENT - LIMIT
    assert sum(tally.values()) == PER_CLIENT * len(CLIENTS)  # no 503: Redis decided every one
    assert len(fake.received) == LIMIT * len(CLIENTS)
    async with redis.asyncio.Redis.from_url(redis_url) as conn:
        assert await conn.zcard(key_for(key_prefix, "198.51.100.7")) == LIMIT
        assert await conn.zcard(key_for(key_prefix, "2001:db8:7:7::/64")) == LIMIT


async def test_replicas_admit_exactly_a_keys_limit(start_replicas, tmp_path):
    """300 concurrent calls with one gateway key, from 6 addresses over 3 replicas: the key's
    limit (40) is reached before its addresses' (25 each, 150 in all), and exactly 40 pass."""
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE} minute_limit={KEY_LIMIT}\n")
    ports, fake = await start_replicas(GATEWAY_KEYS_FILE=str(keys))
    addresses = [f"203.0.113.{n}" for n in range(1, 7)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def ask(index: int) -> tuple[str, int, str | None]:
            address = addresses[index % len(addresses)]
            headers = {"X-Forwarded-For": address, "Authorization": f"Bearer {ALICE}"}
            url = f"http://127.0.0.1:{ports[index % REPLICAS]}/api"
            async with session.post(url, json={"user_content": "Hi"}, headers=headers) as answer:
                await answer.read()
                return address, answer.status, answer.headers.get("Retry-After")

        results = await asyncio.gather(*[ask(i) for i in range(300)])
    statuses = collections.Counter(status for _, status, _ in results)
    assert statuses == {200: KEY_LIMIT, 429: 300 - KEY_LIMIT}
    assert all(int(wait) >= 1 for _, status, wait in results if status == 429)
    per_address = collections.Counter(address for address, status, _ in results if status == 200)
    assert max(per_address.values()) <= LIMIT
    assert len(fake.received) == KEY_LIMIT
