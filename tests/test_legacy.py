"""The legacy route against the running app and the fake upstream."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fake_upstream import FakeUpstream


async def test_answer_has_every_success_shape(client, fake: FakeUpstream):
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 200
    body = await response.json()
    assert body["code"] == 200 and body["msg"] == "success"
    assert body["data"]["response"] == "Hello, world!"
    assert body["current_response"] == "Hello, world!"
    assert body["result"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, world!"},
    ]
    sent = fake.received[-1]
    assert sent.body["stream"] is True
    assert sent.model == "gpt-4o-mini"
    assert sent.max_tokens == 100
    assert sent.key == "sk-server-key"
