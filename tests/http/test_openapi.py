"""/openapi.json describes exactly the gateway's routes, as the route table has them."""

from __future__ import annotations

import pytest

from gateway.keys import POLICIES_KEY
from gateway.routes.playground import PAGE_PATH


def route_table(app) -> set[tuple[str, str]]:
    served = set()
    for route in app[POLICIES_KEY].routes:
        path = route.resource.canonical
        if route.method != "HEAD" and not path.startswith(PAGE_PATH):
            served.add((route.method.lower(), path))
    return served


@pytest.mark.parametrize("route", ["api", "v2/chat"])
async def test_the_document_lists_exactly_the_route_table(make_client, route):
    client = await make_client(ROUTE=route)
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.")
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == route_table(client.server.app)


async def test_each_error_response_names_its_routes_envelope(client):
    document = await (await client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for operation in item.values():
            error = operation["responses"].get("default")
            if error is None:
                continue
            schema = error["content"]["application/json"]["schema"]
            assert ("error" in schema["properties"]) == path.startswith("/v1/"), path
