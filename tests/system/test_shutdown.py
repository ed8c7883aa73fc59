"""SIGTERM to `python -m gateway`: it stops accepting, lets a stream finish, then exits."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import free_port, gateway, wait_until_refused, wait_until_serving

pytestmark = pytest.mark.e2e


def events(raw: bytes) -> list[tuple[str, dict]]:
    found = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append((lines["event"], json.loads(lines["data"])))
    return found


@pytest.fixture
def upstream_env(fake_server) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": str(fake_server.make_url("/v1")),
        "API_KEY": "sk-server-key",
        "ROUTE": "api",
        "LOG_FORMAT": "json",
    }


async def test_a_stream_in_flight_completes_after_sigterm(
    tmp_path, fake: FakeUpstream, upstream_env
):
    fake.hold_after_first = asyncio.Event()
    port = free_port()
    proc = gateway(port, tmp_path / "gateway.log", SHUTDOWN_GRACE="20", **upstream_env)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_until_serving(f"{base}/healthz", proc)
        async with aiohttp.ClientSession() as session:
            body = {"user_content": "Tell me", "stream": True}
            async with session.post(f"{base}/api", json=body) as response:
                assert response.status == 200
                first = await response.content.readuntil(b"\n\n")
                proc.signal(signal.SIGTERM)
                # The listener closes while the stream is still held open upstream.
                await wait_until_refused("127.0.0.1", port)
                assert proc.alive()
                fake.hold_after_first.set()
                rest = await response.read()
        answer = events(first + rest)
        assert [name for name, _ in answer] == ["delta"] * 4 + ["done"]
        assert "".join(data["delta"] for _, data in answer[:-1]) == "Hello, world!"
        assert answer[-1][1]["current_response"] == "Hello, world!"
        assert await proc.wait(20) == 0
        lines = proc.json_lines()
        streamed = [x for x in lines if x.get("route") == "/api"]
        assert [(x["status"], x["method"]) for x in streamed] == [(200, "POST")]
    finally:
        fake.hold_after_first.set()
        proc.close()


async def read_to_end(response: aiohttp.ClientResponse, signalled: float) -> tuple[bytes, float]:
    """The rest of a stream, and when it ended, in seconds after the SIGTERM."""
    rest = await response.read()
    return rest, time.monotonic() - signalled


def last_event(raw: bytes) -> tuple[str | None, dict]:
    block = raw.decode().strip().split("\n\n")[-1]
    lines = dict(line.split(": ", 1) for line in block.split("\n"))
    return lines.get("event"), json.loads(lines["data"])


# aiohttp alone would read a shutdown timeout of 0 as "wait forever".
@pytest.mark.parametrize("grace", ["0", "3"])
async def test_streams_longer_than_the_grace_end_with_the_error_event_and_the_process_exits(
    tmp_path, fake: FakeUpstream, upstream_env, grace
):
    fake.hold_after_first = asyncio.Event()
    port = free_port()
    proc = gateway(port, tmp_path / "gateway.log", SHUTDOWN_GRACE=grace, **upstream_env)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_until_serving(f"{base}/healthz", proc)
        async with aiohttp.ClientSession() as session:
            legacy = await session.post(f"{base}/api", json={"user_content": "Hi", "stream": True})
            chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
            relayed = await session.post(f"{base}/v1/chat/completions", json=chat)
            first = [await r.content.readuntil(b"\n\n") for r in (legacy, relayed)]
            assert b"Hello" in first[0] and b"chat.completion.chunk" in first[1]
            signalled = time.monotonic()
            proc.signal(signal.SIGTERM)
            ended = await asyncio.gather(*(read_to_end(r, signalled) for r in (legacy, relayed)))
            # The documented bound: the process is gone SHUTDOWN_GRACE + 1 s after SIGTERM.
            assert await proc.wait(float(grace) + 1) == 0
            took = time.monotonic() - signalled
        (legacy_rest, legacy_at), (relayed_rest, relayed_at) = ended
        name, envelope = last_event(first[0] + legacy_rest)
        assert (name, envelope["code"], envelope["msg"]) == ("error", 503, "failed")
        name, error = last_event(first[1] + relayed_rest)
        assert name is None and error["error"]["code"] == "shutting_down"
        lines = proc.json_lines()
        cut = [x for x in lines if x.get("route") in ("/api", "/v1/chat/completions")]
        assert sorted((x["route"], x["status"], x.get("cut")) for x in cut) == [
            ("/api", 200, "shutdown"),
            ("/v1/chat/completions", 200, "shutdown"),
        ]
        messages = [x["message"] for x in lines]
        assert f"draining: 2 requests in flight, 2 of them streams; SHUTDOWN_GRACE={grace}s" in (
            messages
        )
        assert messages[-1] == "stopped"
        print(
            f"SHUTDOWN_GRACE={grace}: legacy stream ended {legacy_at:.2f}s, /v1 stream "
            f"{relayed_at:.2f}s, process exited {took:.2f}s after SIGTERM"
        )
    finally:
        fake.hold_after_first.set()
        proc.close()
