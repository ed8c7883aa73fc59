"""Rate limits as a client sees them: what counts, the 429, the headers, and who the client is."""

from __future__ import annotations

import fakeredis
import pytest
import redis.asyncio
from aiohttp import web

from gateway.app import LEGACY, create_app
from gateway.config import load_settings
from gateway.keys import ADMISSION_KEY, CLIENT_IP_KEY, LIMITER_KEY, POLICIES_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_server import delete_prefix

REAL = pytest.param("real", marks=pytest.mark.redis)
HI = {"user_content": "Hi"}


@pytest.fixture(params=["embedded", "fake", REAL])
async def gateway(request, aiohttp_client, base_env, translator, key_prefix):
    """gateway(**env) -> a test client of the production app, on the parametrised backend."""
    kind = request.param
    client = None
    if kind == "fake":
        client = fakeredis.FakeAsyncRedis()
    elif kind == "real":
        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))

    async def make(**env):
        merged = {**base_env, "KEY_PREFIX": key_prefix, **{k: str(v) for k, v in env.items()}}
        app = create_app(load_settings(merged), translator=translator, redis=client)
        return await aiohttp_client(app)

    make.redis = client
    make.prefix = key_prefix
    yield make
    if client is not None:
        await delete_prefix(client, key_prefix)
        await client.aclose()


def limits_of(response) -> dict[str, str]:
    names = ("RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining")
    return {name: response.headers[name] for name in names if name in response.headers}


async def test_every_response_of_a_limited_route_shows_the_limits(gateway):
    client = await gateway(MINUTE_LIMIT=3, SECOND_LIMIT=5)
    ok = await client.post("/api", json=HI)
    assert ok.status == 200
    assert ok.headers["RateLimit-Policy"] == '"1s";q=5;w=1, "1m";q=3;w=60'
    assert ok.headers["RateLimit"] == '"1s";r=4;t=1, "1m";r=2;t=60'
    assert (ok.headers["X-RateLimit-Limit"], ok.headers["X-RateLimit-Remaining"]) == ("3", "2")
    assert ok.headers["X-RateLimit-Reset"] == "60"
    streamed = await client.post("/api", json={**HI, "stream": True})
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    assert limits_of(streamed)["X-RateLimit-Remaining"] == "1"
    await streamed.read()
    bad = await client.post("/api", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status == 400
    assert limits_of(bad)["X-RateLimit-Remaining"] == "0"
    refused = await client.post("/api", json=HI)
    assert refused.status == 429
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    retry = int(refused.headers["Retry-After"])
    assert 1 <= retry <= 60 and refused.headers["X-RateLimit-Reset"] == str(retry)
    assert refused.headers["RateLimit"].endswith(f'"1m";r=0;t={retry}')


@pytest.mark.parametrize("language", ["en", "zh_CN", "zh_TW", "ru_RU"])
async def test_the_429_names_the_window_and_the_wait_in_the_request_language(
    gateway, translator, language
):
    client = await gateway(HOUR_LIMIT=1)
    assert (await client.get("/api")).status == 403  # admitted, then refused by the route
    accept = language.replace("_", "-")
    refused = await client.post("/api", json=HI, headers={"Accept-Language": accept})
    assert refused.status == 429
    seconds = int(refused.headers["Retry-After"])
    word = translator.translate(language, "window_hour")
    expected = translator.translate(
        language, "too_many_requests", limit=1, window=word, seconds=seconds
    )
    assert await refused.json() == {"code": 429, "msg": "failed", "data": {"response": expected}}


async def test_a_request_counts_before_its_body_is_read(gateway, fake: FakeUpstream):
    client = await gateway(MINUTE_LIMIT=1, MAX_BODY_BYTES=100)
    assert (await client.post("/api", json=HI)).status == 200
    # Too large to read: had the body been read first, this would be a 413.
    huge = await client.post("/api", json={"user_content": "x" * 1000})
    assert huge.status == 429
    assert len(fake.received) == 1


async def test_unknown_paths_and_other_methods_never_count(gateway):
    client = await gateway(MINUTE_LIMIT=1)
    for _ in range(3):
        missing = await client.post("/nope", json=HI)
        assert missing.status == 404 and "RateLimit-Policy" not in missing.headers
        wrong = await client.delete("/api")
        assert wrong.status == 405 and "RateLimit-Policy" not in wrong.headers
    assert (await client.post("/api", json=HI)).status == 200


async def test_one_budget_across_limited_routes(gateway):
    client = await gateway(MINUTE_LIMIT=3)
    assert (await client.get("/api")).status == 403
    assert (await client.post("/api", json=HI)).status == 200
    assert (await client.get("/api")).status == 403
    assert (await client.post("/api", json=HI)).status == 429
    assert (await client.get("/api")).status == 429


async def test_without_limits_there_are_no_headers(gateway):
    client = await gateway()
    response = await client.post("/api", json=HI)
    assert response.status == 200 and limits_of(response) == {}


async def _statuses(client, forwarded: list[str]) -> list[int]:
    return [
        (await client.get("/api", headers={"X-Forwarded-For": xff})).status for xff in forwarded
    ]


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(gateway):
    client = await gateway(MINUTE_LIMIT=1)
    assert await _statuses(client, ["198.51.100.1", "198.51.100.2", "6.6.6.6"]) == [403, 429, 429]


async def test_forwarded_for_from_a_trusted_proxy_is_honoured(gateway):
    client = await gateway(MINUTE_LIMIT=1, TRUSTED_PROXIES="127.0.0.1")
    assert await _statuses(client, ["198.51.100.1", "198.51.100.2", "198.51.100.1"]) == [
        403,
        403,
        429,
    ]


async def test_several_trusted_hops_and_a_spoofed_prefix(gateway):
    client = await gateway(MINUTE_LIMIT=1, TRUSTED_PROXIES="127.0.0.0/8, 10.0.0.0/8")
    chains = [
        "198.51.100.1, 10.1.1.1",
        "6.6.6.6, 198.51.100.1, 10.2.2.2, 10.3.3.3",  # the client's own entry is not read
        "198.51.100.2, 10.1.1.1",
    ]
    assert await _statuses(client, chains) == [403, 429, 403]


async def test_ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4(gateway):
    client = await gateway(MINUTE_LIMIT=1, TRUSTED_PROXIES="127.0.0.1")
    forwarded = [
        "2001:db8:1:2::1",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",  # same /64
        "2001:db8:1:3::1",  # next /64
        "::ffff:198.51.100.9",
        "198.51.100.9",  # the same client, written as IPv4
    ]
    assert await _statuses(client, forwarded) == [403, 429, 403, 403, 429]
    if gateway.redis is not None:
        keys = {key.decode() async for key in gateway.redis.scan_iter(f"{gateway.prefix}:*")}
        assert keys == {
            f"{gateway.prefix}:{{2001:db8:1:2::/64}}:req",
            f"{gateway.prefix}:{{2001:db8:1:3::/64}}:req",
            f"{gateway.prefix}:{{198.51.100.9}}:req",
        }


async def test_ipv6_prefix_is_configurable(gateway):
    client = await gateway(MINUTE_LIMIT=1, TRUSTED_PROXIES="127.0.0.1", IPV6_PREFIX=48)
    assert await _statuses(client, ["2001:db8:1:2::1", "2001:db8:1:3::1"]) == [403, 429]


async def test_the_app_uses_the_client_it_was_given(gateway):
    client = await gateway(MINUTE_LIMIT=1)
    expected = "embedded" if gateway.redis is None else "redis"
    assert client.app[LIMITER_KEY].state == expected


async def test_the_decision_and_client_address_are_left_on_the_request(
    aiohttp_client, base_env, translator
):
    """For the access log and the metrics, which read them after the handler."""
    seen = {}

    async def look(request):
        seen["ip"] = request[CLIENT_IP_KEY]
        seen["decision"] = request[ADMISSION_KEY].decision
        return web.json_response({})

    settings = load_settings({**base_env, "MINUTE_LIMIT": "2", "TRUSTED_PROXIES": "127.0.0.1"})
    app = create_app(settings, translator=translator)
    app[POLICIES_KEY].add(app, "GET", "/look", look, LEGACY)
    client = await aiohttp_client(app)
    response = await client.get("/look", headers={"X-Forwarded-For": "::ffff:198.51.100.4"})
    assert response.status == 200
    assert seen["ip"] == "198.51.100.4"
    decision = seen["decision"]
    assert (decision.allowed, decision.tightest.remaining, decision.window) == (True, 1, None)


class WatchedRedis(fakeredis.FakeAsyncRedis):
    closes = 0

    async def aclose(self, *args, **kwargs):
        self.closes += 1
        await super().aclose(*args, **kwargs)


async def test_the_app_leaves_a_client_it_was_given_open(aiohttp_client, base_env, translator):
    given = WatchedRedis()
    try:
        settings = load_settings({**base_env, "MINUTE_LIMIT": "5"})
        client = await aiohttp_client(create_app(settings, translator=translator, redis=given))
        assert (await client.get("/api")).status == 403
        await client.close()
        assert given.closes == 0
    finally:
        await given.aclose()
