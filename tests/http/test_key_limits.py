"""A gateway key's own limits and token budgets, held in the same decision as its address's, and
GET /v1/usage, which shows a caller both without counting itself; embedded and on Redis."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.limits.budget import prompt_estimate
from tests.support.fake_upstream import FakeUpstream

ALICE = "gw-alice-0123456789abcdef"
BOB = "gw-bob-0123456789abcdefgh"
CHAT = "/v1/chat/completions"
CALL = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def start(request, make_client, gateway, redis_url, tmp_path):
    """start(keys_file_lines, **env): the gateway with those keys, TRUSTED_PROXIES=127.0.0.1 (so a
    test picks its client's address with X-Forwarded-For), embedded or on the shared Redis."""

    async def make(*lines: str, **env):
        keys = tmp_path / "keys"
        keys.write_text("".join(f"{line}\n" for line in lines))
        env = {"GATEWAY_KEYS_FILE": str(keys), "TRUSTED_PROXIES": "127.0.0.1", **env}
        if request.param == "embedded":
            return await make_client(**env)
        return await gateway(REDIS_URL=redis_url, **env)

    return make


def worst(call: dict) -> int:
    """What the gateway reserves for `call`: its prompt's estimate and its max_tokens."""
    return prompt_estimate(len(json.dumps(call).encode())) + call["max_tokens"]


def as_client(key: str, address: str = "198.51.100.1") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-Forwarded-For": address}


async def test_a_keys_limit_holds_across_addresses(start, fake: FakeUpstream, translator):
    client = await start(f"alice:{ALICE} minute_limit=3", f"bob:{BOB}", MINUTE_LIMIT=2)
    statuses = []
    for address in ["198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.3"]:
        response = await client.post(CHAT, json=CALL, headers=as_client(ALICE, address))
        statuses.append(response.status)
        last = response
    assert statuses == [200, 200, 200, 429]
    body = await last.json()
    assert body["error"]["code"] == "too_many_requests"
    assert body["error"]["message"] == translator.translate(
        "en",
        "too_many_requests",
        limit=3,
        window="minute",
        seconds=int(last.headers["Retry-After"]),
    )
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    assert last.headers["RateLimit-Policy"] == '"1m";q=2;w=60, "key-1m";q=3;w=60'
    assert '"key-1m";r=0' in last.headers["RateLimit"]
    assert len(fake.received) == 3
    # Bob's key has no limits of its own: only his address's apply.
    for _ in range(2):
        assert (await client.post(CHAT, json=CALL, headers=as_client(BOB, "198.51.100.4"))).ok
    assert (
        await client.post(CHAT, json=CALL, headers=as_client(BOB, "198.51.100.4"))
    ).status == 429


async def test_an_address_that_refuses_leaves_the_keys_count_alone(start, fake: FakeUpstream):
    client = await start(f"alice:{ALICE} minute_limit=3", MINUTE_LIMIT=1)
    one = [(await client.get("/api", headers=as_client(ALICE))).status for _ in range(3)]
    assert one == [403, 429, 429]  # GET on the legacy route: admitted, then the address refuses
    others = [
        (await client.get("/api", headers=as_client(ALICE, f"198.51.100.{n}"))).status
        for n in (2, 3, 4)
    ]
    assert others == [403, 403, 429]  # the key's 3: the refused calls took none of them


async def test_the_same_headers_on_the_legacy_route(start):
    client = await start(f"alice:{ALICE} minute_limit=1")
    assert (await client.post("/api", json={"user_content": "Hi"}, headers=as_client(ALICE))).ok
    response = await client.post("/api", json={"user_content": "Hi"}, headers=as_client(ALICE))
    assert response.status == 429
    assert response.headers["RateLimit-Policy"] == '"key-1m";q=1;w=60'
    assert int(response.headers["Retry-After"]) >= 1
    assert (await response.json())["code"] == 429


async def test_a_keys_token_budget_refuses_and_every_metered_answer_says_whats_left(
    start, fake: FakeUpstream
):
    client = await start(f"alice:{ALICE} tokens_per_minute=200", DEFAULT_RESERVE_TOKENS=10)
    first = await client.post(CHAT, json=CALL, headers=as_client(ALICE))
    assert first.status == 200
    assert first.headers["X-RateLimit-Limit-Tokens"] == "200"
    reserved = 200 - int(first.headers["X-RateLimit-Remaining-Tokens"])
    assert reserved == worst(CALL)  # the reservation, before the call settled
    assert int(first.headers["X-RateLimit-Reset-Tokens"]) >= 1
    second = await client.post(CHAT, json=CALL, headers=as_client(ALICE, "198.51.100.9"))
    # The first was settled at what the fake upstream reports: 15 tokens, not its reservation.
    assert second.headers["X-RateLimit-Remaining-Tokens"] == str(200 - 15 - reserved)
    # Fits the budget alone, not beside the 30 tokens the two calls spent.
    big = {**CALL, "max_tokens": 10 + 200 - 15 - worst(CALL)}
    assert worst(big) == 185
    refused = await client.post(CHAT, json=big, headers=as_client(ALICE, "198.51.100.10"))
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "token_budget_exceeded"
    assert int(refused.headers["Retry-After"]) >= 1
    never = await client.post(CHAT, json={**CALL, "max_tokens": 500}, headers=as_client(ALICE))
    assert never.status == 400
    assert (await never.json())["error"]["code"] == "token_request_too_large"
    assert len(fake.received) == 2


async def test_usage_shows_the_callers_counts_and_costs_nothing(start, fake: FakeUpstream):
    client = await start(
        f"alice:{ALICE} minute_limit=5 day_limit=50 tokens_per_day=100000",
        MINUTE_LIMIT=4,
        TOKENS_PER_MINUTE=5000,
    )
    for _ in range(2):
        assert (await client.post(CHAT, json=CALL, headers=as_client(ALICE))).ok
    looks = [await client.get("/v1/usage", headers=as_client(ALICE)) for _ in range(3)]
    bodies = [await look.json() for look in looks]
    assert all(look.status == 200 for look in looks)
    # Each look finds the same counts: looking is not a call.
    used = [[w["used"] for w in (*b["ip"]["limits"], *b["key"]["limits"])] for b in bodies]
    assert used == [[2, 2, 2]] * 3
    usage = bodies[-1]
    assert usage["object"] == "gateway.usage"
    assert usage["ip"]["address"] == "198.51.100.1"
    (minute,) = usage["ip"]["limits"]
    assert minute | {"reset_seconds": 0} == {
        "window": "minute",
        "seconds": 60,
        "limit": 4,
        "used": 2,
        "remaining": 2,
        "reset_seconds": 0,
    }
    assert 1 <= minute["reset_seconds"] <= 60
    (tokens,) = usage["ip"]["token_budgets"]
    assert tokens["window"] == "minute" and tokens["limit"] == 5000
    assert tokens["used"] == 2 * 15  # settled at what the fake upstream reported
    key = usage["key"]
    assert key["name"] == "alice"
    assert [(w["window"], w["used"], w["limit"]) for w in key["limits"]] == [
        ("minute", 2, 5),
        ("day", 2, 50),
    ]
    assert [(b["window"], b["used"]) for b in key["token_budgets"]] == [("day", 30)]
    assert usage["ip"]["source"] == key["source"]
    assert key["source"] in ("embedded", "redis")
    assert ALICE not in json.dumps(usage)
    # Looking counted nothing: two calls more are admitted, the third refused.
    statuses = [
        (await client.post(CHAT, json=CALL, headers=as_client(ALICE))).status for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert len(fake.received) == 4


async def test_usage_without_a_key_or_limits(start):
    client = await start(f"alice:{ALICE}")
    missing = await client.get("/v1/usage", headers={"X-Forwarded-For": "198.51.100.1"})
    assert missing.status == 401
    assert (await missing.json())["error"]["code"] == "gateway_key_missing"
    assert "X-Request-ID" in missing.headers
    usage = await (await client.get("/v1/usage", headers=as_client(ALICE))).json()
    assert usage["ip"]["limits"] == [] and usage["key"] == {
        "name": "alice",
        "limits": [],
        "token_budgets": [],
        "source": "none",
    }


async def test_usage_with_no_gateway_keys_shows_the_address_alone(make_client):
    client = await make_client(MINUTE_LIMIT=3)
    await client.get("/api")
    usage = await (await client.get("/v1/usage")).json()
    assert usage["key"] is None
    assert usage["ip"]["address"] == "127.0.0.1"
    assert [(w["used"], w["remaining"]) for w in usage["ip"]["limits"]] == [(1, 2)]
    assert "RateLimit" not in (await client.get("/v1/usage")).headers


async def test_a_burst_on_one_key_from_many_addresses_admits_exactly_its_limit(
    start, fake: FakeUpstream
):
    client = await start(f"alice:{ALICE} minute_limit=17", MINUTE_LIMIT=10)

    async def one(n: int) -> int:
        response = await client.get("/api", headers=as_client(ALICE, f"198.51.100.{n % 5}"))
        await response.read()
        return response.status

    statuses = await asyncio.gather(*(one(n) for n in range(200)))
    assert statuses.count(403) == 17 and statuses.count(429) == 183


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"alice:{ALICE} minute=3", "only limits are allowed"),
        (f"alice:{ALICE} minute_limit=-3", "minute_limit must be a whole number"),
        (f"alice:{ALICE} minute_limit=3 minute_limit=4", "minute_limit is given twice"),
        (f"alice:{ALICE} tokens_per_day=1000", "tokens_per_day=1000 is below DEFAULT_RESERVE"),
    ],
)
def test_bad_key_limits_stop_start_up_without_showing_the_key(tmp_path, line, message):
    from gateway.config import ConfigError, load_settings

    keys = tmp_path / "keys"
    keys.write_text(line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({"GATEWAY_KEYS_FILE": str(keys)})
    assert message in str(caught.value) and ALICE not in str(caught.value)
    assert "line 1" in str(caught.value) or "'alice'" in str(caught.value)
