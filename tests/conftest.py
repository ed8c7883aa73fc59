"""Shared fixtures: settings from a dict, the fake upstream, and the gateway under test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpClient, AiohttpServer

from gateway.app import create_app
from gateway.config import Settings, load_settings
from gateway.i18n import Translator
from gateway.limits.limiter import Clock
from tests.support.fake_upstream import FakeUpstream, create_fake_upstream
from tests.support.tcp_proxy import RedisProxy

MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]

pytest_plugins = ["tests.support.redis_server"]


@pytest.fixture(scope="session")
def translator() -> Translator:
    return Translator.load()


@pytest.fixture
def fake() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
async def fake_server(aiohttp_server: AiohttpServer, fake: FakeUpstream) -> TestServer:
    return await aiohttp_server(create_fake_upstream(fake), host="127.0.0.1")


@pytest.fixture
def base_env(fake_server: TestServer) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": str(fake_server.make_url("/v1")),
        "API_KEY": "sk-server-key",
        "ROUTE": "api",
    }


@pytest.fixture
def make_client(
    aiohttp_client: AiohttpClient, base_env: dict[str, str], translator: Translator
) -> MakeClient:
    """A gateway built by the production factory from base_env plus overrides."""

    async def make(
        clock: Clock | None = None, **env: Any
    ) -> TestClient[web.Request, web.Application]:
        merged = {**base_env, **{k: str(v) for k, v in env.items() if v is not None}}
        for name in [k for k, v in env.items() if v is None]:
            merged.pop(name, None)
        settings = load_settings(merged)
        return await aiohttp_client(create_app(settings, translator=translator, clock=clock))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[web.Request, web.Application]:
    return await make_client()


@pytest.fixture
def settings(base_env: dict[str, str]) -> Settings:
    return load_settings(base_env)


@pytest.fixture
async def proxies():
    """proxies(port, delay=None): TCP proxies before a Redis, closed after the test."""
    started: list[RedisProxy] = []

    async def make(port: int, delay=None) -> RedisProxy:
        proxy = RedisProxy(port, delay)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.close()
