"""A client that stops reading its answer is cut off after SEND_TIMEOUT, and the upstream call
with it; a client that reads is served whole, however large the answer."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

from gateway.http.drain import DRAIN_KEY
from tests.support.fake_upstream import FakeUpstream

MARGIN = 30.0  # generous: the machine may be busy; never a measure of speed
MIB = 1 << 20
SPEECH = {"model": "tts-1", "input": "Hi", "voice": "alloy"}


def speech_request() -> bytes:
    body = json.dumps(SPEECH).encode()
    head = (
        "POST /v1/audio/speech HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def test_a_client_that_stops_reading_is_cut_off(make_client, fake: FakeUpstream):
    fake.speech = [b"x" * MIB] * 256  # far more than any socket buffer holds
    client = await make_client(SEND_TIMEOUT=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(speech_request())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=MARGIN)
    assert head.startswith(b"HTTP/1.1 200")
    # From here on the client reads nothing.
    await asyncio.wait_for(fake.cancelled.wait(), timeout=MARGIN)
    assert not fake.finished.is_set()
    writer.transport.abort()


async def test_a_client_that_reads_gets_the_whole_answer(make_client, fake: FakeUpstream):
    fake.speech = [b"y" * MIB] * 16
    client = await make_client(SEND_TIMEOUT=1)
    response = await client.post("/v1/audio/speech", json=SPEECH)
    assert response.status == 200
    assert len(await response.read()) == 16 * MIB
    assert fake.finished.is_set()


async def test_a_client_gone_mid_body_is_a_quiet_499(make_client, caplog):
    client = await make_client()
    caplog.set_level(logging.DEBUG)
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model"'
    )
    await writer.drain()

    def access_lines():
        return [r for r in caplog.records if r.name == "gateway.access"]

    # Its handler is reading the body when the client goes.
    handling = client.server.app[DRAIN_KEY].tasks
    deadline = asyncio.get_running_loop().time() + MARGIN
    while not handling:
        assert asyncio.get_running_loop().time() < deadline, "the request never reached a handler"
        await asyncio.sleep(0.01)
    writer.transport.abort()
    deadline = asyncio.get_running_loop().time() + MARGIN
    while not access_lines():
        assert asyncio.get_running_loop().time() < deadline, "no access line"
        await asyncio.sleep(0.01)
    assert [r.status for r in access_lines()] == [499]
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    assert not any(r.exc_info for r in caplog.records)
