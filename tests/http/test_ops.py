"""Liveness, readiness and Prometheus metrics on the app the production factory builds."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_upstream import FakeUpstream

# Nothing listens on port 9 (discard) on loopback; connecting there fails at once.
DEAD_REDIS = "redis://127.0.0.1:9/0"
DEAD_UPSTREAM = "http://127.0.0.1:9/v1"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and label set."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(await response.text())


async def test_healthz_needs_neither_redis_nor_upstream(make_client):
    client = await make_client(REDIS_URL=DEAD_REDIS, OPENAI_BASE_URL=DEAD_UPSTREAM)
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    head = await client.head("/healthz")
    assert head.status == 200


async def test_readyz_is_ready_with_the_embedded_limiter(client):
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready"
    assert body["checks"] == {"limiter": True}


async def test_metrics_parse_and_counters_move(client):
    before = await scrape(client)
    assert value(before, "gateway_requests_total", route="/api", method="POST", status="200") == 0
    for _ in range(3):
        assert (await client.post("/api", json={"user_content": "Hi"})).status == 200
    assert (await client.get("/nowhere")).status == 404
    assert (
        await client.post("/api", data=b"{not json", headers={"Content-Type": "application/json"})
    ).status == 400
    after = await scrape(client)
    assert value(after, "gateway_requests_total", route="/api", method="POST", status="200") == 3
    assert value(after, "gateway_requests_total", route="/api", method="POST", status="400") == 1
    assert (
        value(after, "gateway_requests_total", route="unmatched", method="GET", status="404") == 1
    )
    # The scrape before counts itself once it is answered.
    assert value(after, "gateway_requests_total", route="/metrics", method="GET", status="200") == 1
    assert value(after, "gateway_upstream_first_byte_seconds_count") == 3
    assert value(after, "gateway_upstream_seconds_count") == 3
    assert value(after, "gateway_upstream_seconds_sum") >= value(
        after, "gateway_upstream_first_byte_seconds_sum"
    )


async def test_every_required_family_is_exposed(client):
    response = await client.get("/metrics")
    parsed = text_string_to_metric_families(await response.text())
    # Histograms also expose a *_created gauge; the Enum is a gauge per state in this format.
    families = {f.name: f.type for f in parsed if not f.name.endswith("_created")}
    assert families == {
        "gateway_requests": "counter",
        "gateway_key_requests": "counter",
        "gateway_limiter_decisions": "counter",
        "gateway_limiter_seconds": "histogram",
        "gateway_upstream_first_byte_seconds": "histogram",
        "gateway_upstream_seconds": "histogram",
        "gateway_streams_in_flight": "gauge",
        "gateway_limiter_state": "gauge",
    }


async def test_apps_side_by_side_keep_their_own_counts(make_client):
    first, second = await make_client(), await make_client()
    await first.get("/healthz")
    await first.get("/healthz")
    await second.get("/healthz")
    ok = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(await scrape(first), "gateway_requests_total", **ok) == 2
    assert value(await scrape(second), "gateway_requests_total", **ok) == 1


async def test_streams_in_flight_counts_an_open_stream(client, fake: FakeUpstream):
    fake.hold_after_first = asyncio.Event()
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    assert response.status == 200
    first = await response.content.readuntil(b"\n\n")
    assert b"Hello" in first
    assert value(await scrape(client), "gateway_streams_in_flight") == 1
    fake.hold_after_first.set()
    rest = await response.read()
    assert b"event: done" in rest
    assert value(await scrape(client), "gateway_streams_in_flight") == 0


@pytest.mark.parametrize("mode", ["local", "open"])
async def test_readyz_stays_ready_when_the_failure_mode_covers_a_dead_redis(make_client, mode):
    client = await make_client(REDIS_URL=DEAD_REDIS, REDIS_FAILURE_MODE=mode, MINUTE_LIMIT=5)
    response = await client.get("/readyz")
    assert response.status == 200, await response.text()


@pytest.mark.redis
async def test_readyz_follows_redis_in_closed_mode(make_client, own_redis, key_prefix):
    client = await make_client(
        REDIS_URL=own_redis.url, REDIS_FAILURE_MODE="closed", KEY_PREFIX=key_prefix
    )
    assert (await client.get("/readyz")).status == 200
    own_redis.stop()
    # Enough failed calls in a row for the limiter to declare Redis down and start probing it.
    for _ in range(5):
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["checks"]["limiter"] is False
    assert value(await scrape(client), "gateway_limiter_state", gateway_limiter_state="closed") == 1
    own_redis.start()
    back = time.monotonic()
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() - back < 10, "/readyz did not recover after Redis came back"
        await asyncio.sleep(0.05)
    print(f"/readyz ready again {time.monotonic() - back:.2f}s after Redis came back")


async def test_ops_endpoints_never_count_against_limits(make_client):
    client = await make_client(MINUTE_LIMIT=1)
    for _ in range(5):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status == 200
    assert (await client.post("/api", json={"user_content": "Hi"})).status == 200
    assert (await client.post("/api", json={"user_content": "Hi"})).status == 429
    found = await scrape(client)
    assert value(found, "gateway_limiter_decisions_total", window="none", decision="allowed") == 1
    assert value(found, "gateway_limiter_decisions_total", window="minute", decision="limited") == 1
    assert value(found, "gateway_limiter_state", gateway_limiter_state="embedded") == 1
    assert value(found, "gateway_limiter_seconds_count") == 2


async def test_limiter_state_shows_the_failure_mode_in_force(make_client):
    client = await make_client(REDIS_URL=DEAD_REDIS, REDIS_FAILURE_MODE="local", MINUTE_LIMIT=50)
    assert value(await scrape(client), "gateway_limiter_state", gateway_limiter_state="redis") == 1
    for _ in range(3):
        assert (await client.post("/api", json={"user_content": "Hi"})).status == 200
    found = await scrape(client)
    assert value(found, "gateway_limiter_state", gateway_limiter_state="local") == 1
    assert value(found, "gateway_limiter_state", gateway_limiter_state="redis") == 0
