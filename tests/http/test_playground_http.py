"""The playground's page and files through the app: types, the injected route, CSP, PLAYGROUND=0."""

from __future__ import annotations

import re

import pytest

from gateway.config import ConfigError, load_settings
from gateway.routes.playground import CONTENT_SECURITY_POLICY

ASSETS = [
    ("/playground/playground.js", "text/javascript"),
    ("/playground/playground.css", "text/css"),
]


def meta(page: str, name: str) -> str:
    match = re.search(rf'<meta name="{name}" content="([^"]*)">', page)
    assert match, f"no <meta name={name!r}> in the page"
    return match.group(1)


@pytest.mark.parametrize(
    ("route", "expected"), [(None, "/"), ("api", "/api"), ("v2/chat/", "/v2/chat")]
)
async def test_page_is_html_with_the_route_and_default_model(make_client, route, expected):
    client = await make_client(ROUTE=route, DEFAULT_MODEL="llama3.1")
    response = await client.get("/playground")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    page = await response.text()
    assert page.startswith("<!doctype html>")
    assert meta(page, "gateway-route") == expected
    assert meta(page, "gateway-default-model") == "llama3.1"
    assert "{{" not in page


async def test_page_and_files_carry_a_self_only_policy(client):
    for path in ["/playground", *(path for path, _ in ASSETS)]:
        response = await client.get(path)
        assert response.status == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert policy == CONTENT_SECURITY_POLICY
        directives = dict(d.split(" ", 1) for d in policy.split("; "))
        assert directives["default-src"] == "'none'"
        assert {directives[d] for d in ("script-src", "style-src", "connect-src")} == {"'self'"}
        assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(("path", "content_type"), ASSETS)
async def test_script_and_stylesheet_have_their_types(client, path, content_type):
    response = await client.get(path)
    assert response.status == 200
    assert response.content_type == content_type
    assert response.charset == "utf-8"
    assert len(await response.text()) > 100


async def test_page_refers_only_to_its_own_files(client):
    page = await (await client.get("/playground")).text()
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sorted(referenced) == sorted(path for path, _ in ASSETS)
    for path in referenced:
        assert (await client.get(path)).status == 200
    assert "<script>" not in page and "style=" not in page


@pytest.mark.parametrize("path", ["/playground", *(path for path, _ in ASSETS)])
async def test_playground_off_is_the_ordinary_404(make_client, translator, path):
    client = await make_client(PLAYGROUND="0", LANG="ru_RU")
    response = await client.get(path)
    assert response.status == 404
    assert await response.json() == {
        "code": 404,
        "msg": "failed",
        "data": {"response": translator.translate("ru_RU", "not_found")},
    }


async def test_page_does_not_count_against_limits(make_client):
    client = await make_client(MINUTE_LIMIT="1")
    for _ in range(3):
        for path in ["/playground", *(path for path, _ in ASSETS)]:
            response = await client.get(path)
            assert response.status == 200
            assert "RateLimit" not in response.headers
            assert "X-RateLimit-Remaining" not in response.headers
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 200
    assert response.headers["X-RateLimit-Remaining"] == "0"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),
        ({"PLAYGROUND": "1"}, True),
        ({"PLAYGROUND": "0"}, False),
        ({"PLAYGROUND": "off"}, False),
        ({"PLAYGROUND": ""}, True),
        ({"PLAYGROUND": "0", "ROUTE": "playground"}, False),
    ],
)
def test_playground_setting(env, expected):
    assert load_settings(env).playground is expected


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PLAYGROUND": "maybe"}, "PLAYGROUND='maybe' is not valid (expected 1 or 0)"),
        (
            {"ROUTE": "playground"},
            "ROUTE='playground' is the playground's path (or set PLAYGROUND=0)",
        ),
        (
            {"ROUTE": "/playground/x"},
            "ROUTE='/playground/x' is the playground's path (or set PLAYGROUND=0)",
        ),
    ],
)
def test_playground_setting_errors(env, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value) == message
