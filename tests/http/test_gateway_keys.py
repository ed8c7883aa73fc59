"""Gateway keys: who may spend API_KEY, on both routes, and which key the upstream receives."""

from __future__ import annotations

import logging

import pytest

from tests.support.fake_upstream import FakeUpstream

GATEWAY_KEY = "gw-alice-0123456789abcdef"
SERVER_KEY = "sk-server-key"
OWN_KEY = "sk-clients-own-key-42"
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


async def call(client, route: str, presented: str | None, own: str | None):
    """One call on the legacy route or /v1; `presented` goes in Authorization, `own` is the
    client's own OpenAI key (the legacy body's api_key, or /v1's bearer when nothing else is)."""
    headers = {"Authorization": f"Bearer {presented}"} if presented else {}
    if route == "legacy":
        body = {"user_content": "Hi", **({"api_key": own} if own else {})}
        return await client.post("/api", json=body, headers=headers)
    if own and not presented:
        headers = {"Authorization": f"Bearer {own}"}
    return await client.post("/v1/chat/completions", json=CHAT_BODY, headers=headers)


def expect_error(route: str, body: dict, code: str, translator) -> None:
    text = translator.translate("en", code)
    if route == "legacy":
        assert body == {"code": 401, "msg": "failed", "data": {"response": text}}
    else:
        assert body["error"]["code"] == code and body["error"]["message"] == text


@pytest.mark.parametrize("route", ["legacy", "openai"])
@pytest.mark.parametrize("presented", ["valid", "wrong", "missing"])
@pytest.mark.parametrize("own", [None, OWN_KEY])
@pytest.mark.parametrize("api_key", [SERVER_KEY, None])
async def test_with_gateway_keys_only_a_valid_key_spends_api_key(
    make_client, fake: FakeUpstream, translator, route, presented, own, api_key
):
    client = await make_client(GATEWAY_KEYS=f"alice:{GATEWAY_KEY}", API_KEY=api_key)
    token = {"valid": GATEWAY_KEY, "wrong": GATEWAY_KEY + "x", "missing": None}[presented]
    response = await call(client, route, token, own)
    body = await response.json()
    assert "X-Request-ID" in response.headers
    if presented != "valid":
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
        # On /v1 a client's own OpenAI key can only come as the bearer: it is no gateway key.
        missing = presented == "missing" and not (own and route == "openai")
        expect_error(
            route, body, "gateway_key_missing" if missing else "gateway_key_invalid", translator
        )
        assert fake.received == []
    elif api_key is None:
        assert response.status == 401
        expect_error(
            route, body, "unauthorized" if route == "legacy" else "missing_api_key", translator
        )
        assert fake.received == []
    else:
        assert response.status == 200
        # Neither the gateway key nor the client's own key is forwarded: only API_KEY is.
        assert [r.key for r in fake.received] == [SERVER_KEY]


@pytest.mark.parametrize("route", ["legacy", "openai"])
@pytest.mark.parametrize("own", [None, OWN_KEY])
@pytest.mark.parametrize("api_key", [SERVER_KEY, None])
async def test_without_gateway_keys_a_clients_own_key_wins(
    make_client, fake: FakeUpstream, translator, route, own, api_key
):
    client = await make_client(API_KEY=api_key)
    response = await call(client, route, None, own)
    if own is None and api_key is None:
        assert response.status == 401
        code = "unauthorized" if route == "legacy" else "missing_api_key"
        expect_error(route, await response.json(), code, translator)
        assert fake.received == []
    else:
        assert response.status == 200
        assert [r.key for r in fake.received] == [own or api_key]


async def test_a_refused_key_does_not_count_against_the_limits(make_client, fake: FakeUpstream):
    client = await make_client(GATEWAY_KEYS=f"alice:{GATEWAY_KEY}", MINUTE_LIMIT=1)
    for _ in range(3):
        assert (await call(client, "openai", "nope-nope-nope-nope", None)).status == 401
    ok = await call(client, "openai", GATEWAY_KEY, None)
    assert ok.status == 200
    assert (await call(client, "openai", GATEWAY_KEY, None)).status == 429


async def test_ops_and_unknown_paths_need_no_key(make_client):
    client = await make_client(GATEWAY_KEYS=f"alice:{GATEWAY_KEY}")
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/v1/nothing-here")).status == 404


async def test_the_key_name_is_in_the_access_line_and_metrics(make_client, caplog):
    caplog.set_level(logging.INFO)
    client = await make_client(GATEWAY_KEYS=f"alice:{GATEWAY_KEY}")
    assert (await call(client, "legacy", GATEWAY_KEY, None)).status == 200
    (line,) = [r for r in caplog.records if r.name == "gateway.access"]
    assert line.key_name == "alice"
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_key_requests_total{key_name="alice",status="200"} 1.0' in metrics


async def test_marker_keys_appear_only_where_they_belong(make_client, fake: FakeUpstream, caplog):
    """A distinctive gateway key and API key through every kind of exchange: the gateway key is
    seen by nobody after the door, the API key only by the upstream, in its Authorization."""
    from gateway.observe.logs import JsonFormatter, TextFormatter

    caplog.set_level(logging.DEBUG)
    marker, api_marker = "gwMARKERgw-7a1f93c0e2", "sk-APIMARKER-55d2b4"
    client = await make_client(GATEWAY_KEYS=f"tester:{marker}", API_KEY=api_marker)
    seen: list[bytes] = []

    async def both(**changes) -> None:
        for name, value in changes.items():
            setattr(fake, name, value)
        for route in ("legacy", "openai"):
            for token in (marker, marker + "-wrong", None):
                response = await call(client, route, token, OWN_KEY)
                seen.append(await response.read())
                seen.append(str(dict(response.headers)).encode())
        stream = await client.post(
            "/api",
            json={"user_content": "Hi", "stream": True},
            headers={"Authorization": f"Bearer {marker}"},
        )
        seen.append(await stream.read())
        models = await client.get("/v1/models", headers={"Authorization": f"Bearer {marker}"})
        seen.append(await models.read())

    await both()
    await both(status=400, error_message=f"Incorrect API key provided: {api_marker}")
    await both(status=500)
    await both(status=200, cut_after=1, answer_fault="reset")
    seen.append(await (await client.get("/metrics")).read())
    records = [r for r in caplog.records]
    text = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    logged = "\n".join(f(r) for r in records for f in (JsonFormatter().format, text.format))
    everything = logged + "\n" + b"\n".join(seen).decode()
    assert marker not in everything and marker[2:-2] not in everything
    assert api_marker not in everything and api_marker[3:] not in everything
    assert fake.received
    for received in fake.received:
        assert received.key == api_marker
        assert received.headers["Authorization"] == f"Bearer {api_marker}"
        rest = {k: v for k, v in received.headers.items() if k != "Authorization"}
        assert marker not in f"{rest}{received.raw!r}{received.query}"
        assert api_marker not in f"{rest}{received.raw!r}{received.query}"
