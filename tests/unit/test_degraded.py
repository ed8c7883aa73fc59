"""While Redis is down in local mode, each replica admits its share of each limit, counting what
Redis admitted through it before; answers decided without Redis say so."""

from __future__ import annotations

import fakeredis
import pytest

from gateway.config import load_settings
from gateway.limits.limiter import Limiter
from tests.support.clock import ManualClock, hit

S = 1_000_000
T0 = 1_700_000_000_123_457


def limiter_on(server: fakeredis.FakeServer, **env) -> Limiter:
    settings = load_settings({"REDIS_FAILURE_MODE": "local", **{k: str(v) for k, v in env.items()}})
    return Limiter(settings, fakeredis.FakeAsyncRedis(server=server), clock=ManualClock())


@pytest.mark.parametrize(("limit", "replicas", "share"), [(10, 3, 3), (50, 3, 16), (7, 7, 1)])
async def test_each_replica_admits_its_share_rounded_down(limit, replicas, share):
    server = fakeredis.FakeServer()
    server.connected = False
    limiter = limiter_on(server, MINUTE_LIMIT=limit, REPLICAS=replicas)
    seen = [await hit(limiter, "c", at=T0 + i) for i in range(share + 5)]
    assert [d.allowed for d in seen] == [True] * share + [False] * 5
    assert {d.source for d in seen} == {"local"}
    assert seen[-1].blocked_by.quantity == share and seen[-1].retry_after == 60
    assert share * replicas <= limit


async def test_a_share_of_nothing_admits_nothing():
    server = fakeredis.FakeServer()
    server.connected = False
    limiter = limiter_on(server, MINUTE_LIMIT=2, REPLICAS=3)
    refused = await hit(limiter, "c", at=T0)
    assert (refused.allowed, refused.retry_after, refused.source) == (False, 60, "local")


async def test_what_redis_admitted_through_this_replica_counts_against_its_share():
    server = fakeredis.FakeServer()
    limiter = limiter_on(server, MINUTE_LIMIT=6, REPLICAS=2)
    for i in range(2):
        assert (await hit(limiter, "c", at=T0 + i * S)).source == "redis"
    server.connected = False
    after = [await hit(limiter, "c", at=T0 + (2 + i) * S) for i in range(3)]
    assert [(d.allowed, d.source) for d in after] == [
        (True, "local"),
        (False, "local"),
        (False, "local"),
    ]
    # The share (3) frees as the calls Redis admitted leave the window.
    assert (await hit(limiter, "c", at=T0 + 60 * S)).allowed


async def test_without_redis_configured_the_whole_limit_is_this_process_s():
    limiter = Limiter(load_settings({"MINUTE_LIMIT": "5", "REPLICAS": "3"}), clock=ManualClock())
    seen = [await hit(limiter, "c", at=T0 + i) for i in range(6)]
    assert [d.allowed for d in seen] == [True] * 5 + [False]
    assert seen[0].source == "embedded"


async def test_a_cluster_whose_nodes_all_refuse_is_decided_by_the_failure_mode():
    from gateway.limits.redis_link import connect_redis
    from tests.support.redis_server import free_port

    env = {"MINUTE_LIMIT": "2", "REDIS_URL": f"redis+cluster://127.0.0.1:{free_port()}"}
    settings = load_settings(env)
    client = connect_redis(settings)
    limiter = Limiter(settings, client, clock=ManualClock())
    try:
        seen = [await hit(limiter, "c", at=T0 + i) for i in range(3)]
    finally:
        await limiter.aclose()
        await client.aclose()
    assert [(d.allowed, d.source) for d in seen] == [
        (True, "local"),
        (True, "local"),
        (False, "local"),
    ]
