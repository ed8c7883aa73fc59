"""CORS: preflights for our routes from CORS_ORIGINS, and the headers scripts may read."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_settings
from tests.support.fake_upstream import FakeUpstream

APP = "https://app.example"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.mark.parametrize(
    ("path", "methods"),
    [("/api", "GET, HEAD, POST"), ("/v1/chat/completions", "POST"), ("/v1/models", "GET, HEAD")],
)
async def test_a_preflight_from_an_allowed_origin(make_client, fake: FakeUpstream, path, methods):
    client = await make_client(
        CORS_ORIGINS=f"{APP}, https://other.example",
        GATEWAY_KEYS="a:0123456789abcdef",
        MINUTE_LIMIT=1,
    )
    for _ in range(2):  # neither a key nor the limits apply to a preflight
        response = await client.options(path, headers=PREFLIGHT)
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == APP
        assert response.headers["Access-Control-Allow-Methods"] == methods
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        assert "X-Request-ID" in response.headers
    assert fake.received == []


@pytest.mark.parametrize("env", [{}, {"CORS_ORIGINS": "https://other.example"}])
async def test_no_cors_for_other_origins(make_client, env):
    client = await make_client(**env)
    response = await client.options("/v1/chat/completions", headers=PREFLIGHT)
    assert response.status == 405
    assert "Access-Control-Allow-Origin" not in response.headers
    plain = await client.post("/api", json={"user_content": "Hi"}, headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in plain.headers


async def test_responses_expose_the_limit_headers_to_scripts(make_client):
    client = await make_client(CORS_ORIGINS="*", MINUTE_LIMIT=1)
    ok = await client.post("/api", json={"user_content": "Hi"}, headers={"Origin": APP})
    limited = await client.post("/api", json={"user_content": "Hi"}, headers={"Origin": APP})
    assert (ok.status, limited.status) == (200, 429)
    for response in (ok, limited):
        assert response.headers["Access-Control-Allow-Origin"] == APP
        exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"RateLimit", "RateLimit-Policy", "Retry-After", "X-Request-ID"} <= exposed
        assert "Origin" in response.headers.getall("Vary")


async def test_every_limit_header_the_gateway_sends_is_exposed(make_client):
    client = await make_client(
        CORS_ORIGINS="*", MINUTE_LIMIT=1, TOKENS_PER_MINUTE=5000, DEFAULT_RESERVE_TOKENS=100
    )
    call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    seen = []
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json=call, headers={"Origin": APP})
        seen.append(response.status)
        exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        sent = {
            name
            for name in response.headers
            if name.lower().startswith(("ratelimit", "x-ratelimit", "retry-after", "x-request-id"))
        }
        assert sent and sent <= exposed, sent - exposed
        assert "X-RateLimit-Remaining-Tokens" in sent
    assert seen == [200, 429]


async def test_a_preflight_for_an_unknown_path_is_a_404(make_client):
    client = await make_client(CORS_ORIGINS=APP)
    assert (await client.options("/v1/nothing", headers=PREFLIGHT)).status == 404


@pytest.mark.parametrize(
    "bad", ["app.example", "https://app.example/path", "ftp://x", "https://a.example?q"]
)
def test_bad_origins_stop_start_up(bad):
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        load_settings({"CORS_ORIGINS": bad})
