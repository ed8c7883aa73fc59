"""Nothing of the upstream leaks: error bodies masked and reshaped, account headers dropped."""

from __future__ import annotations

import pytest

from tests.support.fake_upstream import FakeUpstream

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
LEAKY = "Incorrect API key provided: sk-proj-LEAK0123456789; sent Bearer sk-LEAK0123456789"


async def test_v1_error_body_is_masked_and_reshaped(client, fake: FakeUpstream):
    fake.status, fake.error_message = 400, LEAKY
    response = await client.post(CHAT, json=BODY)
    assert response.status == 400
    body = await response.json()
    assert body["error"]["message"] == ("Incorrect API key provided: sk-****; sent Bearer ****")
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "LEAK" not in await response.text()


@pytest.mark.parametrize("stream", [True, False])
async def test_an_error_not_in_openais_shape_becomes_ours(client, fake: FakeUpstream, stream):
    fake.status, fake.raw_error = 500, b"<html>sk-LEAK0123456789 at 10.0.0.7</html>"
    response = await client.post(CHAT, json={**BODY, "stream": stream})
    text = await response.text()
    assert "LEAK" not in text and "10.0.0.7" not in text
    assert response.status == 500
    assert (await response.json())["error"]["code"] == "upstream_error"


async def test_legacy_route_masks_the_upstream_reason(client, fake: FakeUpstream):
    fake.status, fake.error_message = 400, LEAKY
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 400
    assert "LEAK" not in await response.text()
    assert "sk-****" in (await response.json())["data"]["response"]


async def test_account_headers_are_dropped_from_relayed_responses(client, fake: FakeUpstream):
    fake.extra_headers = {
        "OpenAI-Organization": "org-operator",
        "OpenAI-Project": "proj_operator",
        "OpenAI-Processing-Ms": "12",
        "X-RateLimit-Remaining-Requests": "99",
    }
    for method, path in (("POST", CHAT), ("GET", "/v1/models")):
        response = await client.request(method, path, json=BODY if method == "POST" else None)
        assert response.status == 200
        assert "OpenAI-Organization" not in response.headers
        assert "OpenAI-Project" not in response.headers
        assert response.headers["OpenAI-Processing-Ms"] == "12"
        assert response.headers["X-RateLimit-Remaining-Requests"] == "99"


@pytest.mark.parametrize(("own", "forwarded"), [(None, False), ("sk-clients-own-1", True)])
async def test_a_client_picks_the_organization_of_its_own_key_only(client, fake, own, forwarded):
    headers = {"OpenAI-Organization": "org-x", "OpenAI-Project": "proj-x", "OpenAI-Beta": "b"}
    if own:
        headers["Authorization"] = f"Bearer {own}"
    assert (await client.post(CHAT, json=BODY, headers=headers)).status == 200
    sent = fake.received[-1].headers
    assert sent["OpenAI-Beta"] == "b"
    assert ("OpenAI-Organization" in sent, "OpenAI-Project" in sent) == (forwarded, forwarded)
