"""The gateway and a real Redis: what it sends, and what it does when Redis stops, stalls or
comes back. Tests that stop Redis use a redis-server of their own."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import redis.asyncio

from gateway.keys import LIMITER_KEY
from gateway.limits.redis_backend import WARM_CONNECTIONS
from gateway.limits.redis_link import PROBE_INTERVAL, key_for
from tests.support.redis_server import RedisServer, delete_prefix, free_port

pytestmark = pytest.mark.redis

CLIENT = "127.0.0.1"  # the test client's bucket
HANG_GUARD = 10.0  # only stops a broken test from hanging; never a measure of speed


async def entries(url: str, prefix: str, client: str = CLIENT) -> int:
    async with redis.asyncio.Redis.from_url(url) as conn:
        return int(await conn.zcard(key_for(prefix, client)))


async def until(predicate, what: str) -> float:
    """Wait for predicate(); returns the seconds it took (reported, never asserted)."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < HANG_GUARD, f"never happened: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_one_round_trip_per_admitted_request(gateway, proxies, redis_url, key_prefix):
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = await proxies(port)
    client = await gateway(REDIS_URL=proxy.url, MINUTE_LIMIT=30, SECOND_LIMIT=100, HOUR_LIMIT=500)
    # At start-up the limiter opens its first connections and loads its three scripts; nothing else,
    # not even a handshake command on the new connections.
    assert proxy.commands == ["PING"] * WARM_CONNECTIONS + ["SCRIPT"] * 3
    proxy.commands.clear()
    assert (await client.get("/api")).status == 403
    assert proxy.commands == ["EVALSHA"]
    proxy.commands.clear()
    for _ in range(29):
        assert (await client.get("/api")).status == 403
    assert proxy.commands == ["EVALSHA"] * 29
    # The first refusal asks Redis; the flood after it is refused from memory until Retry-After.
    for _ in range(20):
        assert (await client.get("/api")).status == 429
    assert proxy.commands == ["EVALSHA"] * 30
    try:
        assert await entries(redis_url, key_prefix) == 30
    finally:
        async with redis.asyncio.Redis.from_url(redis_url) as conn:
            await delete_prefix(conn, key_prefix)


async def test_the_script_is_reloaded_after_noscript(gateway, own_redis: RedisServer, key_prefix):
    client = await gateway(REDIS_URL=own_redis.url, MINUTE_LIMIT=5)
    assert (await client.get("/api")).status == 403
    async with redis.asyncio.Redis.from_url(own_redis.url) as conn:
        await conn.script_flush()
    assert (await client.get("/api")).status == 403
    assert client.app[LIMITER_KEY].state == "redis"
    assert await entries(own_redis.url, key_prefix) == 2


@pytest.mark.parametrize(
    ("mode", "while_down"),
    # In local mode the call Redis admitted just before the outage is known in process too.
    [("local", [403, 403, 429, 429]), ("open", [403, 403, 403, 403]), ("closed", [503] * 4)],
)
async def test_redis_stopped_then_back(
    gateway, own_redis, key_prefix, translator, caplog, mode, while_down
):
    client = await gateway(
        REDIS_URL=own_redis.url, REDIS_FAILURE_MODE=mode, REDIS_TIMEOUT=0.25, MINUTE_LIMIT=3
    )
    limiter = client.app[LIMITER_KEY]
    assert (await client.get("/api")).status == 403
    assert await entries(own_redis.url, key_prefix) == 1
    own_redis.stop()
    statuses = []
    for _ in range(4):
        response = await client.get("/api", headers={"Accept-Language": "ru"})
        statuses.append(response.status)
        assert "RateLimit-Policy" in response.headers
        if mode != "closed":
            assert response.headers["X-RateLimit-Degraded"] == mode
    assert statuses == while_down
    assert limiter.state == mode
    outage = [r for r in caplog.records if r.levelname == "WARNING" and "down" in r.getMessage()]
    assert len(outage) == 1  # one warning per outage, not one per request
    if mode == "closed":
        body = await response.json()
        assert body["data"]["response"] == translator.translate("ru_RU", "limiter_unavailable")
        assert response.headers["Retry-After"] == "1"
        assert not await limiter.ready()
    else:
        assert await limiter.ready()

    own_redis.start()  # an empty Redis: no counts, no script
    back = time.monotonic()
    took = await until(lambda: limiter.state == "redis", "the limiter returns to Redis")
    # The first probe to reach the new server succeeded (one in flight before it answered may
    # have failed, without reaching it): with probes every PROBE_INTERVAL, that bounds the
    # return at about a second.
    # One PING is own_redis.start()'s readiness check; the other, the limiter's one probe.
    assert await pings(own_redis.url) == 2
    print(f"back on Redis {took:.2f} s after it answered again ({time.monotonic() - back:.2f})")
    back_on_redis = await client.get("/api")
    assert back_on_redis.status == 403
    assert "X-RateLimit-Degraded" not in back_on_redis.headers
    assert await entries(own_redis.url, key_prefix) == 1
    assert await limiter.ready()
    assert PROBE_INTERVAL <= 0.5


async def pings(url: str) -> int:
    async with redis.asyncio.Redis.from_url(url) as client:
        stats = await client.info("commandstats")
    return int(stats.get("cmdstat_ping", {}).get("calls", 0))


async def test_the_closed_mode_refusal_is_translated(gateway, translator):
    client = await gateway(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}", REDIS_FAILURE_MODE="closed", MINUTE_LIMIT=3
    )
    for language in ("en", "zh_CN", "zh_TW", "ru_RU"):
        response = await client.get("/api", headers={"Accept-Language": language})
        assert response.status == 503
        expected = translator.translate(language, "limiter_unavailable")
        assert await response.json() == {
            "code": 503,
            "msg": "failed",
            "data": {"response": expected},
        }
        assert response.headers["RateLimit-Policy"] == '"1m";q=3;w=60'
        assert "RateLimit" not in response.headers  # the counts are unknown; no made-up numbers


async def test_a_slow_redis_does_not_turn_a_replica_into_a_local_counter(
    gateway, own_redis, proxies, key_prefix
):
    # Every other script call is held past REDIS_CALL_TIMEOUT; the rest answer at once.
    calls = itertools.count()
    proxy = await proxies(
        own_redis.port, lambda index, name: 1.0 if name == "EVALSHA" and next(calls) % 2 else 0.0
    )
    client = await gateway(REDIS_URL=proxy.url, REDIS_CALL_TIMEOUT=0.2, MINUTE_LIMIT=100)
    limiter = client.app[LIMITER_KEY]
    for _ in range(10):
        assert (await client.get("/api")).status == 403
        assert limiter.state == "redis"
    assert proxy.count("EVALSHA") == 10  # every request asked Redis; none skipped it
    # Held calls never reached Redis: it counted only the calls that answered in time.
    assert await entries(own_redis.url, key_prefix) == 5


async def test_a_hung_redis_is_declared_down_after_repeated_timeouts(gateway, own_redis, proxies):
    proxy = await proxies(own_redis.port, lambda index, name: 30.0 if name == "EVALSHA" else 0.0)
    client = await gateway(REDIS_URL=proxy.url, REDIS_CALL_TIMEOUT=0.2, MINUTE_LIMIT=100)
    limiter = client.app[LIMITER_KEY]
    for _ in range(2):
        assert (await client.get("/api")).status == 403
        assert limiter.state == "redis"
    assert (await client.get("/api")).status == 403
    assert limiter.state == "local"
    asked = proxy.count("EVALSHA")
    for _ in range(5):
        assert (await client.get("/api")).status == 403
    assert proxy.count("EVALSHA") == asked  # while down, requests don't wait on Redis


async def test_concurrent_timeouts_count_as_one_failure(gateway, own_redis, proxies):
    proxy = await proxies(own_redis.port, lambda index, name: 30.0 if name == "EVALSHA" else 0.0)
    client = await gateway(REDIS_URL=proxy.url, REDIS_CALL_TIMEOUT=0.2, MINUTE_LIMIT=100)
    statuses = await asyncio.gather(*[client.get("/api") for _ in range(20)])
    assert [r.status for r in statuses] == [403] * 20
    assert client.app[LIMITER_KEY].state == "redis"


@pytest.mark.parametrize(("mode", "status"), [("local", 403), ("closed", 503)])
async def test_a_gateway_started_while_redis_is_down_serves_then_uses_it(
    gateway, key_prefix, mode, status
):
    server = RedisServer(free_port())
    client = await gateway(
        REDIS_URL=server.url, REDIS_FAILURE_MODE=mode, REDIS_TIMEOUT=0.25, MINUTE_LIMIT=10
    )
    limiter = client.app[LIMITER_KEY]
    for _ in range(3):
        assert (await client.get("/api")).status == status
    assert limiter.state == mode
    server.start()
    try:
        took = await until(lambda: limiter.state == "redis", "the limiter starts using Redis")
        print(f"using Redis {took:.2f} s after it started")
        assert (await client.get("/api")).status == 403
        assert await entries(server.url, key_prefix) == 1
    finally:
        server.stop()
