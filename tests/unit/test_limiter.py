"""The limiter's semantics, the same tests over every backend: embedded, fakeredis and real Redis.

Times are passed in (microseconds), so nothing here sleeps or depends on the clock.
"""

from __future__ import annotations

import asyncio
import uuid

import fakeredis
import pytest
import redis.asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_settings
from gateway.limits.backend import Subject
from gateway.limits.decision import Decision, WindowState
from gateway.limits.headers import rate_limit_headers
from gateway.limits.limiter import Limiter
from gateway.limits.memory import SlidingLog
from gateway.limits.redis_backend import SCRIPT, parse_reply, script_args, script_keys
from gateway.limits.redis_link import key_for
from gateway.quota import Limit
from tests.support.clock import ManualClock, hit
from tests.support.redis_server import delete_prefix

S = 1_000_000
# A real epoch time with odd microseconds: Lua's tostring would round it to 14 digits.
T0 = 1_700_000_000_123_457


REAL = pytest.param("real", marks=pytest.mark.redis)


@pytest.fixture(params=["embedded", "fake", REAL])
async def backend(request, key_prefix):
    """make(**env) -> a Limiter; limiters made by one test share one Redis (replicas)."""
    async for make in _backend(request, request.param, key_prefix):
        yield make


@pytest.fixture(params=["fake", REAL])
async def redis_backend(request, key_prefix):
    async for make in _backend(request, request.param, key_prefix):
        yield make


async def _backend(request, kind, key_prefix):
    clients: list[redis.asyncio.Redis] = []
    limiters: list[Limiter] = []
    server = fakeredis.FakeServer()
    clock = ManualClock()
    url = request.getfixturevalue("redis_url") if kind == "real" else None

    def make(**env) -> Limiter:
        # The limiter reserves what it is asked; budgets below the routes' default reserve are fine.
        merged = {
            "KEY_PREFIX": key_prefix,
            "DEFAULT_RESERVE_TOKENS": "1",
            **{k: str(v) for k, v in env.items()},
        }
        client = None
        if kind == "fake":
            client = fakeredis.FakeAsyncRedis(server=server)
        elif kind == "real":
            client = redis.asyncio.Redis.from_url(url)
        if client is not None:
            clients.append(client)
        limiter = Limiter(load_settings(merged), client, clock=clock)
        limiters.append(limiter)
        return limiter

    make.kind = kind
    make.clients = clients
    yield make
    for limiter in limiters:
        await limiter.aclose()
    if clients:
        await delete_prefix(clients[0], key_prefix)
    for client in clients:
        await client.aclose()


def window(decision: Decision, name: str) -> WindowState:
    return next(w for w in decision.windows if w.name == name)


async def test_admits_exactly_the_limit_then_refuses(backend):
    limiter = backend(MINUTE_LIMIT=3)
    seen = [await hit(limiter, "203.0.113.7", at=T0 + i * S) for i in range(4)]
    assert [d.allowed for d in seen] == [True, True, True, False]
    assert [window(d, "minute").remaining for d in seen] == [2, 1, 0, 0]
    # Seconds until the window frees a unit: the first request's entry expires at T0 + 60 s.
    assert [window(d, "minute").reset for d in seen] == [60, 59, 58, 57]
    refused = seen[3]
    assert refused.retry_after == 57 and refused.window == "minute"
    assert refused.blocked_by == WindowState(Limit("minute", 60, 3), 0, 57)
    assert [d.retry_after for d in seen[:3]] == [0, 0, 0]


async def test_no_boundary_burst(backend):
    """Three at the end of a minute leave no room at the start of the next, unlike fixed windows."""
    limiter = backend(MINUTE_LIMIT=3)
    for offset in (59.5, 59.6, 59.7):
        assert (await hit(limiter, "c", at=T0 + int(offset * S))).allowed
    refused = await hit(limiter, "c", at=T0 + int(60.5 * S))
    assert not refused.allowed and refused.retry_after == 59
    for tenth in range(606, 1195, 7):
        assert not (await hit(limiter, "c", at=T0 + tenth * S // 10)).allowed
    assert (await hit(limiter, "c", at=T0 + int(119.5 * S))).allowed
    assert not (await hit(limiter, "c", at=T0 + int(119.55 * S))).allowed
    assert (await hit(limiter, "c", at=T0 + int(119.6 * S))).allowed


async def test_rejected_requests_consume_nothing(backend):
    limiter = backend(MINUTE_LIMIT=2)
    assert (await hit(limiter, "c", at=T0)).allowed
    assert (await hit(limiter, "c", at=T0 + S)).allowed
    for i in range(100):
        refused = await hit(limiter, "c", at=T0 + 2 * S + i * S // 2)
        assert not refused.allowed
        assert window(refused, "minute").remaining == 0
    # Had refusals counted, the client would stay locked out; instead each entry frees its unit
    # exactly one minute after it was admitted.
    assert (await hit(limiter, "c", at=T0 + 60 * S)).allowed
    assert not (await hit(limiter, "c", at=T0 + 60 * S + S // 2)).allowed
    assert (await hit(limiter, "c", at=T0 + 61 * S)).allowed
    if backend.clients:
        key = key_for(limiter.prefix, "c")
        assert await backend.clients[0].zcard(key) == 2


@pytest.mark.parametrize(
    ("admitted_at", "asked_at", "retry"),
    [(0.3, 10.1, 51), (0.0, 10.0, 50), (0.999999, 59.999999, 1), (5.0, 5.000001, 60)],
)
async def test_retry_after_is_exact(backend, admitted_at, asked_at, retry):
    limiter = backend(MINUTE_LIMIT=1)
    first = T0 + round(admitted_at * S)
    asked = T0 + round(asked_at * S)
    assert (await hit(limiter, "c", at=first)).allowed
    refused = await hit(limiter, "c", at=asked)
    assert refused.retry_after == retry
    # A second less is still too early, for this replica and for one that never asked.
    assert not (await hit(limiter, "c", at=asked + (retry - 1) * S)).allowed
    if backend.kind != "embedded":
        assert not (await hit(backend(MINUTE_LIMIT=1), "c", at=asked + (retry - 1) * S)).allowed
    assert (await hit(limiter, "c", at=asked + retry * S)).allowed


async def test_every_window_must_admit_and_the_longest_wait_wins(backend):
    limiter = backend(SECOND_LIMIT=1, MINUTE_LIMIT=2)
    assert (await hit(limiter, "c", at=T0)).allowed
    by_second = await hit(limiter, "c", at=T0 + S // 2)
    assert (by_second.allowed, by_second.window, by_second.retry_after) == (False, "second", 1)
    assert window(by_second, "minute").remaining == 1
    assert (await hit(limiter, "c", at=T0 + S)).allowed
    both = await hit(limiter, "c", at=T0 + 3 * S // 2)
    assert (both.allowed, both.window, both.retry_after) == (False, "minute", 59)
    assert window(both, "second").remaining == 0 and window(both, "second").reset == 1
    by_minute = await hit(limiter, "c", at=T0 + 2 * S)
    assert (by_minute.window, by_minute.retry_after) == ("minute", 58)


async def test_all_four_windows(backend):
    limiter = backend(SECOND_LIMIT=5, MINUTE_LIMIT=5, HOUR_LIMIT=6, DAY_LIMIT=7)
    times = [T0 + i * 2 * S for i in range(5)] + [T0 + 61 * S, T0 + 3601 * S]
    assert all([(await hit(limiter, "c", at=t)).allowed for t in times])
    refused = await hit(limiter, "c", at=T0 + 3602 * S)
    assert refused.window == "day" and refused.retry_after == 86400 - 3602
    assert [w.name for w in refused.windows] == ["second", "minute", "hour", "day"]


async def test_each_client_has_its_own_budget(backend):
    limiter = backend(MINUTE_LIMIT=1)
    assert (await hit(limiter, "203.0.113.7", at=T0)).allowed
    assert not (await hit(limiter, "203.0.113.7", at=T0 + 1)).allowed
    assert (await hit(limiter, "2001:db8:1:2::/64", at=T0 + 2)).allowed
    assert (await hit(limiter, "203.0.113.8", at=T0 + 3)).allowed


async def test_without_limits_everything_is_admitted_and_nothing_stored(backend):
    limiter = backend()
    decisions = [await hit(limiter, "c", at=T0) for _ in range(50)]
    assert all(d.allowed and d.windows == () for d in decisions)
    for client in backend.clients:
        assert await client.keys(f"{limiter.prefix}:*") == []


async def test_same_instant_requests_are_all_recorded(backend):
    limiter = backend(MINUTE_LIMIT=3)
    assert [(await hit(limiter, "c", at=T0)).allowed for _ in range(4)] == [1, 1, 1, 0]


async def test_replicas_share_one_budget(redis_backend):
    replicas = [redis_backend(MINUTE_LIMIT=5) for _ in range(3)]
    admitted = [(await hit(replicas[i % 3], "c", at=T0 + i * S)).allowed for i in range(12)]
    assert admitted == [True] * 5 + [False] * 7


async def test_keys_are_tagged_per_client_expire_and_stay_trimmed(redis_backend):
    limiter = redis_backend(SECOND_LIMIT=2, MINUTE_LIMIT=3)
    client = redis_backend.clients[0]
    for i in range(10):
        assert (await hit(limiter, "2001:db8::/64", at=T0 + i * 61 * S)).allowed
        key = f"{limiter.prefix}:{{2001:db8::/64}}:req"
        assert await client.zcard(key) == 1  # older entries than the longest window are gone
        assert 0 < await client.pttl(key) <= 60_000
    entries = await client.zrange(key, 0, -1, withscores=True)
    assert entries[0][1] == T0 + 9 * 61 * S  # the time survives the trip through Lua exactly


async def test_a_cached_refusal_never_refuses_what_redis_admits(redis_backend):
    a, b = redis_backend(MINUTE_LIMIT=2), redis_backend(MINUTE_LIMIT=2)
    assert (await hit(a, "c", at=T0)).allowed
    assert (await hit(b, "c", at=T0 + 10 * S)).allowed
    refused = await hit(a, "c", at=T0 + 20 * S)
    assert (refused.source, refused.retry_after) == ("redis", 40)
    flood = [await hit(a, "c", at=T0 + 20 * S + i * S) for i in range(40)]
    assert {d.source for d in flood} == {"cache"}
    assert [d.retry_after for d in flood] == list(range(40, 0, -1))
    # One microsecond before Redis would admit, both replicas refuse; at that moment, both admit.
    assert not (await hit(b, "c", at=T0 + 60 * S - 1)).allowed
    assert (await hit(a, "c", at=T0 + 60 * S)).source == "redis"
    assert (await hit(b, "c", at=T0 + 70 * S)).allowed


def test_headers_follow_the_ietf_draft_and_name_the_tightest_window():
    limits = (Limit("second", 1, 1), Limit("minute", 60, 3), Limit("hour", 3600, 50))
    decision = Decision(
        True,
        0,
        (
            WindowState(limits[0], 0, 1),
            WindowState(limits[1], 2, 41),
            WindowState(limits[2], 0, 3000),
        ),
    )
    assert rate_limit_headers(limits, decision) == {
        "RateLimit-Policy": '"1s";q=1;w=1, "1m";q=3;w=60, "1h";q=50;w=3600',
        "RateLimit": '"1s";r=0;t=1, "1m";r=2;t=41, "1h";r=0;t=3000',
        "X-RateLimit-Limit": "50",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "3000",
    }
    assert rate_limit_headers(limits, None) == {
        "RateLimit-Policy": '"1s";q=1;w=1, "1m";q=3;w=60, "1h";q=50;w=3600'
    }
    assert rate_limit_headers((), None) == {}


# -- the embedded limiter and the Redis script agree, request by request -------------------------

WINDOW_SETS = st.lists(
    st.sampled_from([(1, 1), (1, 3), (60, 1), (60, 4), (3600, 2), (3600, 7)]),
    min_size=1,
    max_size=3,
    unique_by=lambda w: w[0],
)
GAPS = st.lists(
    st.one_of(st.just(0), st.integers(1, 3 * S), st.integers(50 * S, 4000 * S)),
    min_size=1,
    max_size=40,
)


def _admitted_respect_the_windows(windows, times, verdicts):
    """No interval of a window's length holds more than its limit of admitted requests, and a
    request is refused only if some window already held its limit."""
    admitted: list[int] = []
    for t, (ok, _) in zip(times, verdicts, strict=True):
        full = [
            length
            for length, limit in windows
            if sum(1 for u in admitted if u > t - length * S) >= limit
        ]
        assert ok == (not full)
        if ok:
            admitted.append(t)


async def _compare(client, prefix, windows, gaps, clients):
    limits = [Limit("window", length, limit) for length, limit in windows]
    log = SlidingLog(limits)
    script = client.register_script(SCRIPT)
    times, verdicts = [], []
    now = T0
    for i, gap in enumerate(gaps):
        now += gap
        key = f"c{i % clients}"
        expected = log.hit(key, now)
        subjects = [Subject(key, tuple(limits))]
        keys = script_keys(prefix, subjects)
        reply = await script(keys=keys, args=script_args(subjects, now, f"m{i}"))
        assert parse_reply(reply) == expected, (i, now - T0)
        if key == "c0":
            times.append(now)
            verdicts.append(expected)
    _admitted_respect_the_windows(windows, times, verdicts)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(windows=WINDOW_SETS, gaps=GAPS, clients=st.integers(1, 2))
async def test_property_embedded_and_fakeredis_script_agree(windows, gaps, clients):
    client = fakeredis.FakeAsyncRedis()
    try:
        await _compare(client, "prop", windows, gaps, clients)
    finally:
        await client.aclose()


@pytest.mark.redis
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(windows=WINDOW_SETS, gaps=GAPS, clients=st.integers(1, 2))
async def test_property_embedded_and_redis_script_agree(
    real_redis, key_prefix, windows, gaps, clients
):
    await _compare(real_redis, f"{key_prefix}:{uuid.uuid4().hex[:8]}", windows, gaps, clients)


def test_the_embedded_log_forgets_clients_whose_windows_are_empty():
    log = SlidingLog([Limit("second", 1, 1), Limit("minute", 60, 3)])
    for i in range(100):
        assert log.hit(f"c{i}", T0)[0]
    assert len(log) == 100
    assert log.hit("late", T0 + 60 * S)[0]
    assert len(log) == 1


@pytest.mark.redis
async def test_memory_per_client_is_bounded_by_the_longest_window(real_redis, key_prefix):
    """The README's figure: a client at HOUR_LIMIT=50 costs about 1.6 KB, however hard it tries."""
    env = {"KEY_PREFIX": key_prefix, "HOUR_LIMIT": "50"}
    limiter = Limiter(load_settings(env), real_redis, clock=ManualClock())
    try:
        for i in range(200):
            await hit(limiter, "203.0.113.7", at=T0 + i * 5 * S)
    finally:
        await limiter.aclose()
    key = key_for(key_prefix, "203.0.113.7")
    assert await real_redis.zcard(key) == 50
    assert await real_redis.memory_usage(key, samples=0) <= 50 * 40 + 200


async def _compare_limiters(client, prefix, windows, gaps):
    env = {"KEY_PREFIX": prefix}
    env.update({name: "0" for name in ("SECOND_LIMIT", "MINUTE_LIMIT", "HOUR_LIMIT")})
    names = {1: "SECOND_LIMIT", 60: "MINUTE_LIMIT", 3600: "HOUR_LIMIT"}
    env.update({names[length]: str(limit) for length, limit in windows})
    clock = ManualClock()
    shared = Limiter(load_settings(env), client, clock=clock)
    alone = Limiter(load_settings(env), clock=clock)
    now = T0
    for gap in gaps:
        now += gap
        with_cache = await hit(shared, "c", at=now)
        embedded = await hit(alone, "c", at=now)
        assert (with_cache.allowed, with_cache.retry_after, with_cache.window) == (
            embedded.allowed,
            embedded.retry_after,
            embedded.window,
        )


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(windows=WINDOW_SETS, gaps=GAPS)
async def test_property_the_refusal_cache_changes_no_decision(windows, gaps):
    """The Redis limiter, refusal cache included, decides as the embedded one does."""
    client = fakeredis.FakeAsyncRedis()
    try:
        await _compare_limiters(client, "prop", windows, gaps)
    finally:
        await client.aclose()


async def test_a_replica_keeps_nothing_per_client_beyond_its_windows():
    """With REPLICAS=2 each admitted call is noted in the local share; the shares of limits were
    once kept per client address, for ever: one more entry for every address ever seen."""
    import gc
    import tracemalloc

    import gateway.limits.limiter as limiter_module

    env = {"KEY_PREFIX": "bound", "SECOND_LIMIT": "2", "REPLICAS": "2"}
    client = fakeredis.FakeAsyncRedis()
    limiter = Limiter(load_settings(env), client, clock=ManualClock())
    try:
        tracemalloc.start()
        try:
            for i in range(2000):
                assert (await hit(limiter, f"10.{i // 250}.{i % 250}.1", at=T0 + i)).allowed
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
    finally:
        await limiter.aclose()
        await client.aclose()
    mine = snapshot.filter_traces([tracemalloc.Filter(True, limiter_module.__file__)])
    kept = sum(stat.size for stat in mine.statistics("filename"))
    assert kept < 20_000, f"{kept} bytes kept by limiter.py for 2,000 clients"


async def test_looks_hold_few_of_redis_connections_however_many_come():
    from gateway.limits import limiter as module

    gate = Limiter(
        load_settings({"REDIS_URL": "redis://fake", "MINUTE_LIMIT": "5"}),
        fakeredis.FakeAsyncRedis(),
    )
    real, asking, most = gate._redis.peek, 0, 0

    async def counted(subject, now):
        nonlocal asking, most
        asking += 1
        most = max(most, asking)
        try:
            await asyncio.sleep(0)
            return await real(subject, now)
        finally:
            asking -= 1

    gate._redis.peek = counted
    (subject,) = gate.subjects("203.0.113.1")
    looks = await asyncio.gather(*(gate.peek(subject) for _ in range(50)))
    assert all(look.source == "redis" and look.windows[0].remaining == 5 for look in looks)
    assert 1 < most <= module.LOOKS_AT_ONCE
