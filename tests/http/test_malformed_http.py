"""Requests aiohttp's HTTP parser rejects: the JSON envelope, a request id, one quiet log line."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

OK_HEAD = b"Host: gateway\r\n"
MALFORMED = {
    "bad header byte": b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Bad: a\x01b\r\n\r\n",
    "long request line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + OK_HEAD + b"\r\n",
    "long header": b"GET / HTTP/1.1\r\nX-Long: " + b"b" * 9000 + b"\r\n" + OK_HEAD + b"\r\n",
    "bad method": b"G(E)T / HTTP/1.1\r\n" + OK_HEAD + b"\r\n",
    "CL and TE": (
        b"POST /api HTTP/1.1\r\n" + OK_HEAD + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bad version": b"GET / HTTP/9.x\r\n" + OK_HEAD + b"\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : gateway\r\n\r\n",
    "not http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


async def exchange(client, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_request_gets_the_envelope(client, translator, caplog, raw):
    caplog.set_level(logging.DEBUG)
    answer = await exchange(client, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, head
    assert b"Content-Type: application/json" in head
    assert b"X-Request-ID: " in head  # and the connection closed: read() got to its end
    assert json.loads(body) == {
        "code": status,
        "msg": "failed",
        "data": {"response": translator.translate("en", "bad_http")},
    }
    ours = [r for r in caplog.records if r.name == "gateway.protocol"]
    assert len(ours) <= 1 and all(r.levelno == logging.WARNING and not r.exc_info for r in ours)
    assert not [r for r in caplog.records if r.exc_info]


async def test_the_warnings_are_rate_limited(client, caplog):
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        await exchange(client, MALFORMED["bad header byte"])
    ours = [r for r in caplog.records if r.name == "gateway.protocol"]
    assert 1 <= len(ours) < 5
