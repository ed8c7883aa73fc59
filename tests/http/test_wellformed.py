"""Every response is well formed: faults mid-stream end in the error event, never a 500."""

from __future__ import annotations

import pytest

from tests.http.test_legacy import read_events
from tests.support.fake_upstream import FakeUpstream


async def test_garbage_after_a_delta_ends_the_legacy_stream_with_the_error_event(
    client, fake: FakeUpstream, translator
):
    fake.garbage_after = 1
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    assert response.status == 200
    events = await read_events(response)
    assert events[0] == ("delta", {"delta": "Hello"})
    kind, data = events[-1]
    assert (kind, data["code"], data["msg"]) == ("error", 502, "failed")
    assert data["data"]["response"] == translator.translate("en", "upstream_stream_broken")
    assert len(events) == 2


@pytest.mark.parametrize("stream", [True, False])
async def test_garbage_before_any_delta_is_a_502(client, fake: FakeUpstream, translator, stream):
    # Streamed, a `data:` line that is not JSON; not streamed, a JSON answer that is not JSON.
    fake.garbage_after, fake.answer_fault = 0, "garbage"
    response = await client.post("/api", json={"user_content": "Hi", "stream": stream})
    assert response.status == 502
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    assert body == {
        "code": 502,
        "msg": "failed",
        "data": {"response": translator.translate("en", "upstream_stream_broken")},
    }
    assert "X-Request-ID" in response.headers


async def test_an_answer_broken_off_without_stream_is_a_502(client, fake: FakeUpstream):
    fake.answer_fault = "truncated"
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 502
    assert (await response.json())["code"] == 502
