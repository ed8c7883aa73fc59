"""The operator's caps: models, output size and n on /v1, client networks; all before upstream."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_settings
from tests.support.fake_upstream import FakeUpstream

CHAT = "/v1/chat/completions"


def chat(**fields):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **fields}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/api", {"user_content": "Hi", "model": "gpt-4-32k"}),
        (CHAT, chat(model="gpt-4-32k")),
        (CHAT, chat(model=None)),
        ("/v1/embeddings", {"model": "gpt-4-32k", "input": "x"}),
    ],
)
async def test_a_model_not_allowed_is_a_400_before_any_upstream_call(
    make_client, fake: FakeUpstream, translator, route, body
):
    client = await make_client(ALLOWED_MODELS="gpt-4o-mini, gpt-4o")
    response = await client.post(route, json=body)
    assert response.status == 400
    data = await response.json()
    model = str(body.get("model"))
    text = translator.translate("en", "model_not_allowed", model=model)
    if route == "/api":
        assert data["data"]["response"] == text
    else:
        assert data["error"]["code"] == "model_not_allowed" and data["error"]["param"] == "model"
        assert data["error"]["message"] == text
    assert fake.received == []


async def test_allowed_models_pass_on_both_routes(make_client, fake: FakeUpstream):
    client = await make_client(ALLOWED_MODELS="gpt-4o-mini,gpt-4o")
    assert (await client.post("/api", json={"user_content": "Hi"})).status == 200
    assert (await client.post(CHAT, json=chat(model="gpt-4o"))).status == 200
    assert (await client.get("/v1/models/gpt-4o")).status == 200
    assert (await client.get("/v1/models/text-embedding-3-small")).status == 404
    assert [r.path for r in fake.received] == ["/v1/chat/completions"] * 2 + ["/v1/models/gpt-4o"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": 501}, "max_tokens"),
        ({"max_completion_tokens": 10_000}, "max_completion_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"n": 3}, "n"),
        ({"n": True}, "n"),
    ],
)
async def test_v1_output_caps_refuse(make_client, fake: FakeUpstream, translator, fields, param):
    client = await make_client(MAX_COMPLETION_TOKENS_CAP=500, MAX_N=2)
    response = await client.post(CHAT, json=chat(**fields))
    assert response.status == 400
    error = (await response.json())["error"]
    cap = 2 if param == "n" else 500
    assert (error["code"], error["param"]) == ("field_range", param)
    assert error["message"] == translator.translate("en", "field_range", field=param, cap=cap)
    assert fake.received == []


async def test_v1_calls_within_the_caps_pass(make_client, fake: FakeUpstream):
    client = await make_client(MAX_COMPLETION_TOKENS_CAP=500, MAX_N=2)
    for fields in ({}, {"max_tokens": 500}, {"max_completion_tokens": 1, "n": 2}):
        assert (await client.post(CHAT, json=chat(**fields))).status == 200
    assert len(fake.received) == 3


@pytest.mark.parametrize(
    ("env", "status"),
    [
        ({"DENY_IPS": "127.0.0.0/8"}, 403),
        ({"ALLOW_IPS": "10.0.0.0/8"}, 403),
        ({"ALLOW_IPS": "10.0.0.0/8,127.0.0.1"}, 200),
        ({"ALLOW_IPS": "127.0.0.0/8", "DENY_IPS": "127.0.0.1/32"}, 403),
        ({"DENY_IPS": "::1/128,10.0.0.0/8"}, 200),
    ],
)
async def test_client_networks(make_client, fake: FakeUpstream, translator, env, status):
    client = await make_client(**env)
    legacy = await client.post("/api", json={"user_content": "Hi"})
    relay = await client.post(CHAT, json=chat())
    assert (legacy.status, relay.status) == (status, status)
    assert (await client.get("/healthz")).status == 200
    if status == 403:
        text = translator.translate("en", "address_denied")
        assert (await legacy.json())["data"]["response"] == text
        assert (await relay.json())["error"]["message"] == text
        assert fake.received == []


async def test_the_real_client_address_behind_a_trusted_proxy_is_checked(make_client):
    client = await make_client(TRUSTED_PROXIES="127.0.0.1", DENY_IPS="203.0.113.0/24")
    denied = {"X-Forwarded-For": "203.0.113.9"}
    assert (await client.post(CHAT, json=chat(), headers=denied)).status == 403
    allowed = {"X-Forwarded-For": "198.51.100.1"}
    assert (await client.post(CHAT, json=chat(), headers=allowed)).status == 200


def test_the_default_model_must_be_allowed():
    with pytest.raises(ConfigError) as caught:
        load_settings({"ALLOWED_MODELS": "gpt-4o", "DEFAULT_MODEL": "gpt-4o-mini"})
    assert str(caught.value) == "DEFAULT_MODEL='gpt-4o-mini' is not in ALLOWED_MODELS"
