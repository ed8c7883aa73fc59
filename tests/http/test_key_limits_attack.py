"""Attempts to break a gateway key's own limits and GET /v1/usage: bursts over mixed keys and
addresses, the refusal cache between subjects, token settlement seen through /v1/usage, what
/v1/usage answers to odd requests, and limits too large for Redis's numbers."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from gateway.config import ConfigError, load_settings
from gateway.keys import LIMITER_KEY
from tests.http import test_key_limits
from tests.http.test_key_limits import ALICE, BOB, CALL, CHAT, as_client
from tests.support.fake_upstream import FakeUpstream
from tests.support.redis_server import free_port

CAROL = "gw-carol-0123456789abcdef"
start = test_key_limits.start  # the same gateways, embedded and on Redis
DEADLINE = 10.0  # only stops a broken test from hanging; never a measure of speed


async def on_redis(gateway, redis_url, tmp_path, alice: str, bob: str, address_limit: int):
    """A gateway on the shared Redis with alice's and bob's keys, and these limits."""
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE} {alice}\nbob:{BOB} {bob}\n")
    return await gateway(
        REDIS_URL=redis_url,
        GATEWAY_KEYS_FILE=keys,
        TRUSTED_PROXIES="127.0.0.1",
        MINUTE_LIMIT=address_limit,
    )


async def usage(client, key: str, address: str) -> dict:
    response = await client.get("/v1/usage", headers=as_client(key, address))
    assert response.status == 200
    return await response.json()


def used(section: dict, window: str = "minute", kind: str = "limits") -> int:
    (entry,) = [w for w in section[kind] if w["window"] == window]
    return entry["used"]


async def test_a_burst_over_mixed_keys_and_addresses_keeps_every_count_exact(
    start, fake: FakeUpstream
):
    client = await start(
        f"alice:{ALICE} minute_limit=7",
        f"bob:{BOB} minute_limit=5",
        f"carol:{CAROL}",
        MINUTE_LIMIT=4,
    )
    rng = random.Random(7)
    keys = {"alice": ALICE, "bob": BOB, "carol": CAROL}
    calls = [(rng.choice(list(keys)), f"198.51.100.{rng.randrange(6)}") for _ in range(240)]

    async def one(name: str, address: str) -> int:
        response = await client.get("/api", headers=as_client(keys[name], address))
        await response.read()
        return response.status

    statuses = await asyncio.gather(*(one(*call) for call in calls))
    admitted = [call for call, status in zip(calls, statuses, strict=True) if status == 403]
    assert statuses.count(403) + statuses.count(429) == len(calls)
    by_address = {a: sum(1 for _, at in admitted if at == a) for _, a in calls}
    by_key = {k: sum(1 for name, _ in admitted if name == k) for k in keys}
    assert all(n <= 4 for n in by_address.values()), by_address
    assert by_key["alice"] <= 7 and by_key["bob"] <= 5, by_key
    # Every refused call was refused by a subject that was full: none is left with room for it.
    for (name, address), status in zip(calls, statuses, strict=True):
        if status == 429:
            assert by_address[address] == 4 or (by_key[name] == {"alice": 7, "bob": 5}.get(name))
    # What the limiter holds is exactly what it admitted: a refusal left nothing behind.
    for address, count in by_address.items():
        assert used((await usage(client, CAROL, address))["ip"]) == count
    alice = (await usage(client, ALICE, "198.51.100.200"))["key"]
    bob = (await usage(client, BOB, "198.51.100.200"))["key"]
    assert (used(alice), used(bob)) == (by_key["alice"], by_key["bob"])


@pytest.mark.redis
async def test_a_key_refused_from_an_address_does_not_refuse_another_key_there(
    gateway, redis_url, tmp_path
):
    client = await on_redis(gateway, redis_url, tmp_path, "minute_limit=2", "minute_limit=5", 10)
    alice = [(await client.get("/api", headers=as_client(ALICE))).status for _ in range(4)]
    assert alice == [403, 403, 429, 429]  # the last refused from the replica's memory
    assert (await client.get("/api", headers=as_client(BOB))).status == 403
    elsewhere = await client.get("/api", headers=as_client(ALICE, "198.51.100.2"))
    assert elsewhere.status == 429


@pytest.mark.redis
async def test_an_address_refused_does_not_refuse_its_key_from_another_address(
    gateway, redis_url, tmp_path
):
    client = await on_redis(gateway, redis_url, tmp_path, "minute_limit=10", "", 2)
    here = [(await client.get("/api", headers=as_client(ALICE))).status for _ in range(4)]
    assert here == [403, 403, 429, 429]
    assert (await client.get("/api", headers=as_client(ALICE, "198.51.100.2"))).status == 403
    assert (await client.get("/api", headers=as_client(BOB))).status == 429
    key = (await usage(client, ALICE, "198.51.100.3"))["key"]
    assert used(key) == 3  # the two refusals counted nothing


async def wait_until(predicate, what: str) -> None:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < DEADLINE, f"never happened: {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("outcome", "charged"),
    [("success", 15), ("upstream_error", 0), ("cut", None), ("disconnect", None)],
)
async def test_usage_shows_what_was_settled_on_every_exit_in_both_subjects(
    start, fake: FakeUpstream, outcome, charged
):
    client = await start(
        f"alice:{ALICE} tokens_per_minute=5000 tokens_per_day=9000",
        TOKENS_PER_MINUTE=4000,
        DEFAULT_RESERVE_TOKENS=10,
    )
    limiter = client.app[LIMITER_KEY]
    charges: list[int] = []
    settle = limiter.settle

    async def counted(key, reservation, tokens, **others):
        await settle(key, reservation, tokens, **others)
        charges.append(tokens)

    limiter.settle = counted
    call = dict(CALL)
    if outcome == "upstream_error":
        fake.status = 500
    elif outcome == "cut":
        fake.cut_after = 2
        call["stream"] = True
    elif outcome == "disconnect":
        fake.hold_after_first = asyncio.Event()
        call["stream"] = True
    response = await client.post(CHAT, json=call, headers=as_client(ALICE))
    if outcome == "disconnect":
        assert response.status == 200
        await asyncio.wait_for(response.content.readany(), DEADLINE)
        response.close()
    else:
        await response.read()
    await wait_until(lambda: charges, "the call is settled")
    if fake.hold_after_first is not None:
        fake.hold_after_first.set()
    (tokens,) = charges
    if charged is not None:
        assert tokens == charged
    else:
        assert 0 < tokens < 10 + 200
    seen = await usage(client, ALICE, "198.51.100.1")
    assert used(seen["ip"], "minute", "token_budgets") == tokens
    assert used(seen["key"], "minute", "token_budgets") == tokens
    assert used(seen["key"], "day", "token_budgets") == tokens


async def test_usage_answers_only_for_the_caller(start):
    client = await start(f"alice:{ALICE} minute_limit=5", f"bob:{BOB}", MINUTE_LIMIT=4)
    for _ in range(3):
        assert (await client.get("/api", headers=as_client(ALICE))).status == 403
    wrong = await client.get("/v1/usage", headers=as_client(ALICE[:-1] + "X"))
    assert wrong.status == 401
    assert (await wrong.json())["error"]["code"] == "gateway_key_invalid"
    assert ALICE[:-1] not in await wrong.text()
    # Bob, from elsewhere, asking for Alice's counts by any query: his own, and nothing of hers.
    for query in ("", "?key=alice", "?name=alice&address=198.51.100.1", "?bucket=198.51.100.1"):
        response = await client.get("/v1/usage" + query, headers=as_client(BOB, "198.51.100.2"))
        seen = await response.json()
        assert seen["ip"]["address"] == "198.51.100.2" and used(seen["ip"]) == 0
        assert seen["key"] == {"name": "bob", "limits": [], "token_budgets": [], "source": "none"}
        assert "alice" not in json.dumps(seen) and ALICE not in json.dumps(seen)
    head = await client.head("/v1/usage", headers=as_client(ALICE))
    assert head.status == 200 and await head.read() == b""
    assert head.headers["Cache-Control"] == "no-store"
    post = await client.post("/v1/usage", headers=as_client(ALICE))
    assert post.status == 405 and "error" in await post.json()
    # Looking, in every way above, counted nothing.
    assert used((await usage(client, ALICE, "198.51.100.1"))["key"]) == 3


async def test_usage_is_refused_to_a_denied_address(start):
    client = await start(f"alice:{ALICE}", DENY_IPS="198.51.100.0/24")
    refused = await client.get("/v1/usage", headers=as_client(ALICE))
    assert refused.status == 403
    assert "198.51.100" not in json.dumps((await refused.json()).get("error", {}).get("param"))
    assert (await client.get("/v1/usage", headers=as_client(ALICE, "203.0.113.9"))).status == 200


async def test_the_largest_limit_is_counted_exactly(start):
    """Redis answers a script's numbers as 64-bit integers cast from doubles: a limit beyond 2**53
    came back as -9223372036854775808 remaining, and /v1/usage showed it all used."""
    largest = 10**15
    client = await start(f"alice:{ALICE} minute_limit={largest}", MINUTE_LIMIT=largest)
    response = await client.get("/api", headers=as_client(ALICE))
    assert response.status == 403
    assert response.headers["X-RateLimit-Remaining"] == str(largest - 1)
    seen = await usage(client, ALICE, "198.51.100.1")
    assert (used(seen["ip"]), used(seen["key"])) == (1, 1)


@pytest.mark.parametrize("option", ["minute_limit", "tokens_per_day"])
def test_a_limit_beyond_the_largest_stops_start_up_without_showing_the_key(tmp_path, option):
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE} {option}={10**15 + 1}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_KEYS_FILE": str(keys)})
    assert str(caught.value) == (
        f"GATEWAY_KEYS_FILE={str(keys)!r} line 1: {option} must be a whole number "
        "from 0 to 1000000000000000"
    )


@pytest.mark.redis
async def test_with_redis_down_each_replica_admits_its_share_of_a_keys_limit(gateway, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{ALICE} minute_limit=6 tokens_per_minute=2000\n")
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}",
        "REDIS_FAILURE_MODE": "local",
        "REPLICAS": 2,
        "REDIS_TIMEOUT": 0.25,
        "REDIS_CALL_TIMEOUT": 0.5,
        "GATEWAY_KEYS_FILE": keys,
        "TRUSTED_PROXIES": "127.0.0.1",
        "MINUTE_LIMIT": 100,
        "DEFAULT_RESERVE_TOKENS": 10,
    }
    replicas = [await gateway(**env), await gateway(**env)]
    statuses = []
    for n in range(10):
        replica = replicas[n % 2]
        response = await replica.post(CHAT, json=CALL, headers=as_client(ALICE, f"198.51.100.{n}"))
        await response.read()
        statuses.append(response.status)
        if response.status == 200:
            assert response.headers["X-RateLimit-Degraded"] == "local"
    assert statuses.count(200) == 6 and statuses.count(429) == 4
    seen = await usage(replicas[0], ALICE, "198.51.100.50")
    assert seen["key"]["source"] == "local"
    assert [(w["limit"], w["used"]) for w in seen["key"]["limits"]] == [(3, 3)]
    assert [(b["limit"], b["used"]) for b in seen["key"]["token_budgets"]] == [(1000, 3 * 15)]
