"""Only what we mean to relay: path parameters checked, query strings cut to what is defined."""

from __future__ import annotations

import pytest

from tests.support.fake_upstream import FakeUpstream


@pytest.mark.parametrize(
    "model",
    [
        "..%2F..%2Forganization",
        "..%2Forganization",
        "gpt%2F..",
        "..",
        "...",
        "gpt-4o%3Fx=1",
        "gpt-4o%23frag",
        "gpt%204o",
        "gpt%0A4o",
        "%C3%A9",
        "a" * 257,
    ],
)
async def test_a_bad_model_id_never_reaches_the_upstream(client, fake: FakeUpstream, model):
    response = await client.get(f"/v1/models/{model}")
    assert response.status in (400, 404)
    body = await response.json()
    assert body["error"]["code"] in ("bad_path_parameter", "not_found")
    assert "X-Request-ID" in response.headers
    assert fake.received == []


@pytest.mark.parametrize("model", ["gpt-4o", "ft:gpt-4o-mini:acme:custom_1:abc123", "o1.2"])
async def test_a_good_model_id_is_relayed_as_it_is(client, fake: FakeUpstream, model):
    await client.get(f"/v1/models/{model}")
    assert [r.path for r in fake.received] == [f"/v1/models/{model}"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/v1/models/gpt-4o"])
async def test_only_api_version_is_forwarded_re_encoded(client, fake: FakeUpstream, path):
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    method = "POST" if path.endswith("completions") else "GET"
    kwargs = {"json": body} if method == "POST" else {}
    query = "?api-version=2024 10&key=sk-leak&api-version=x&limit=5&%0A=1"
    response = await client.request(method, path + query, **kwargs)
    assert response.status == 200
    assert fake.received[-1].query == "api-version=2024 10&api-version=x"  # as decoded there
    await client.request(method, path + "?key=sk-leak", **kwargs)
    assert fake.received[-1].query == ""
