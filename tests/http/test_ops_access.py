"""/metrics and /readyz only for the operator's networks or its token; /healthz for all."""

from __future__ import annotations

import pytest

from gateway.config import load_settings

TOKEN = "ops-token-0123456789"


@pytest.mark.parametrize("path", ["/metrics", "/readyz"])
@pytest.mark.parametrize(
    ("env", "headers", "status"),
    [
        ({}, {}, 200),  # loopback is in the default OPS_ALLOW
        ({"OPS_ALLOW": "10.0.0.0/8"}, {}, 403),
        ({"OPS_ALLOW": "10.0.0.0/8", "OPS_TOKEN": TOKEN}, {}, 403),
        ({"OPS_ALLOW": "10.0.0.0/8", "OPS_TOKEN": TOKEN}, {"Authorization": "Bearer nope"}, 403),
        (
            {"OPS_ALLOW": "10.0.0.0/8", "OPS_TOKEN": TOKEN},
            {"Authorization": f"Bearer {TOKEN}"},
            200,
        ),
        ({"TRUSTED_PROXIES": "127.0.0.1"}, {"X-Forwarded-For": "203.0.113.5"}, 403),
        ({"TRUSTED_PROXIES": "127.0.0.1"}, {"X-Forwarded-For": "10.1.2.3"}, 200),
        ({}, {"X-Forwarded-For": "203.0.113.5"}, 200),  # an untrusted peer's XFF is not read
    ],
)
async def test_ops_endpoints_answer_only_their_networks_or_token(
    make_client, translator, path, env, headers, status
):
    client = await make_client(**env)
    response = await client.get(path, headers=headers)
    assert response.status == status
    assert "X-Request-ID" in response.headers
    if status == 403:
        body = await response.json()
        assert body == {
            "code": 403,
            "msg": "failed",
            "data": {"response": translator.translate("en", "forbidden")},
        }
    assert (await client.get("/healthz", headers=headers)).status == 200


def test_the_default_ops_networks_are_loopback_and_private():
    allowed = {str(net) for net in load_settings({}).ops_allow}
    assert allowed == {
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    }
    assert repr(load_settings({"OPS_TOKEN": TOKEN}).ops_token) == "Secret('**********')"
