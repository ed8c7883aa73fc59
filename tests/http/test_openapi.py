"""/openapi.json describes exactly the routes the gateway's router serves, and is valid OpenAPI."""

from __future__ import annotations

import pytest
import schemathesis

from gateway.keys import POLICIES_KEY
from gateway.routes.openai import relay_post
from gateway.routes.openapi import LEGACY_ERROR, OPENAI_ERROR


def router_routes(app) -> set[tuple[str, str]]:
    """What the router answers, read off the router itself (a GET's HEAD twin left out)."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }


async def fetch(client) -> dict:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.headers["X-Request-ID"]
    return await response.json()


@pytest.mark.parametrize(
    "env",
    [
        {"ROUTE": "api"},
        {"ROUTE": "v2/chat", "PLAYGROUND": "0"},
        {"OPENAI_ROUTES": "chat,models", "GATEWAY_KEYS": "a:key-0123456789abcdef"},
        {"OPENAI_ROUTES": "", "ALLOWED_MODELS": "gpt-4o-mini,o1"},
    ],
)
async def test_the_document_lists_exactly_the_routers_routes(make_client, env):
    client = await make_client(**env)
    document = await fetch(client)
    schemathesis.openapi.from_dict(document).validate()
    assert document["openapi"].startswith("3.")
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == router_routes(client.server.app)


async def test_each_error_response_takes_its_routes_envelope(make_client):
    client = await make_client(GATEWAY_KEYS="a:key-0123456789abcdef")
    app = client.server.app
    document = await fetch(client)
    for route, policy in app[POLICIES_KEY].routes.items():
        if route.method == "HEAD":
            continue
        operation = document["paths"][route.resource.canonical][route.method.lower()]
        error = operation["responses"]["default"]
        schema = error["content"]["application/json"]["schema"]
        expected = OPENAI_ERROR if policy.envelope == "openai" else LEGACY_ERROR
        assert schema == expected, route
        assert (policy.envelope == "openai") == route.resource.canonical.startswith("/v1/")
        for response in operation["responses"].values():
            assert response["headers"]["X-Request-ID"]["required"] is True
        assert ("security" in operation) == (policy.guarded or policy.private), route


async def test_every_relayed_post_documents_its_body(client):
    document = await fetch(client)
    for route in client.server.app.router.routes():
        if route.handler is relay_post:
            operation = document["paths"][route.resource.canonical]["post"]
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            # What the call is about, besides the model: messages, prompt, input.
            assert set(body["required"]) - {"model"}, route.resource.canonical
