"""Fixtures for the app on a real Redis: a gateway built from env."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from gateway.config import load_settings


@pytest.fixture
async def gateway(aiohttp_client, base_env, translator, key_prefix):
    """gateway(**env): the production app, building its own Redis client from REDIS_URL."""

    async def make(**env):
        merged = {**base_env, "KEY_PREFIX": key_prefix, **{k: str(v) for k, v in env.items()}}
        return await aiohttp_client(create_app(load_settings(merged), translator=translator))

    return make
