"""The embedded backend and rate_limit.lua agree step by step on calls held to two subjects (an
address and a gateway key), request windows and token budgets, hits, looks and settlements."""

from __future__ import annotations

import uuid

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.limits.backend import Subject
from gateway.limits.memory import MemoryBackend
from gateway.limits.redis_backend import (
    SCRIPT,
    SETTLE_SCRIPT,
    parse_reply,
    script_args,
    script_keys,
)
from gateway.limits.redis_link import budget_keys_for
from gateway.quota import Limit

S = 1_000_000
T0 = 1_700_000_000_123_457

WINDOWS = st.lists(
    st.sampled_from([(1, 1), (1, 3), (60, 2), (60, 4), (3600, 3)]),
    max_size=2,
    unique_by=lambda w: w[0],
)
BUDGETS = st.lists(
    st.sampled_from([(60, 40), (60, 100), (86400, 150)]), max_size=2, unique_by=lambda b: b[0]
)
# (gap, kind, tokens): kind 0 a plain hit, 1 a metered hit, 2 settle the oldest unsettled call,
# 3 a look at each subject.
STEPS = st.lists(
    st.tuples(
        st.one_of(st.just(0), st.integers(1, 3 * S), st.integers(30 * S, 4000 * S)),
        st.integers(0, 3),
        st.integers(0, 60),
    ),
    min_size=1,
    max_size=40,
)


def _subject(bucket: str, windows, budgets, scope) -> Subject:
    names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
    return Subject(
        bucket,
        tuple(Limit(names[n], n, q, "requests", scope) for n, q in windows),
        tuple(Limit(names[n], n, q, "tokens", scope) for n, q in budgets),
    )


async def _compare(client, prefix, address, key, steps, addresses):
    memory = MemoryBackend()
    script = client.register_script(SCRIPT)
    settle = client.register_script(SETTLE_SCRIPT)
    held: list[tuple[tuple[Subject, ...], str, int]] = []
    now = T0
    for i, (gap, kind, tokens) in enumerate(steps):
        now += gap
        ip = Subject(f"203.0.113.{i % addresses}", address.limits, address.budgets)
        every = (ip, key)
        metered = kind == 1 and any(s.budgets for s in every)
        need = tokens if metered else None
        subjects = tuple(s for s in every if s.limits or (need is not None and s.budgets))
        if kind == 2 and held:
            called, member, reserved = held.pop(0)
            used = tokens % (reserved + 1)
            await memory.settle(called, member, reserved, used)
            metered_ones = [s for s in called if s.budgets]
            args: list = [f"{member}:{reserved}", f"{member}:{used}", used - reserved]
            for s in metered_ones:
                args += [len(s.budgets), *(b.micros for b in s.budgets)]
            keys = [k for s in metered_ones for k in budget_keys_for(prefix, s.bucket)]
            await settle(keys=keys, args=args)
            continue
        if kind == 3:
            for s in every:
                expected = await memory.peek(s, now)
                args = script_args((s,), now, "", 0)
                got = parse_reply(await script(keys=script_keys(prefix, (s,)), args=args))
                assert got == expected, ("peek", i, s.bucket)
            continue
        if not subjects:
            continue
        member = f"m{i}"
        expected = await memory.hit(subjects, now, member, need)
        keys = script_keys(prefix, subjects)
        got = parse_reply(await script(keys=keys, args=script_args(subjects, now, member, need)))
        assert got == expected, ("hit", i, now - T0)
        if expected[0] and need is not None:
            held.append((subjects, member, need))


CASES = {
    "ip_windows": WINDOWS,
    "ip_budgets": BUDGETS,
    "key_windows": WINDOWS,
    "key_budgets": BUDGETS,
    "steps": STEPS,
    "addresses": st.integers(1, 2),
}
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(**CASES)
async def test_property_two_subjects_embedded_and_fakeredis_agree(
    ip_windows, ip_budgets, key_windows, key_budgets, steps, addresses
):
    client = fakeredis.FakeAsyncRedis()
    try:
        await _compare(
            client,
            "prop",
            _subject("", ip_windows, ip_budgets, "ip"),
            _subject("key:alice", key_windows, key_budgets, "key"),
            steps,
            addresses,
        )
    finally:
        await client.aclose()


@pytest.mark.redis
@SETTINGS
@given(**CASES)
async def test_property_two_subjects_embedded_and_redis_agree(
    real_redis, key_prefix, ip_windows, ip_budgets, key_windows, key_budgets, steps, addresses
):
    await _compare(
        real_redis,
        f"{key_prefix}:{uuid.uuid4().hex[:8]}",
        _subject("", ip_windows, ip_budgets, "ip"),
        _subject("key:alice", key_windows, key_budgets, "key"),
        steps,
        addresses,
    )
