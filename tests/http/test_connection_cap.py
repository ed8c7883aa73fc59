"""MAX_CONNECTIONS_PER_IP: a client address with that many connections open gets a 503 in the
envelope on one more, and the connection closes; trusted proxies are never counted."""

from __future__ import annotations

import asyncio
import json

MARGIN = 30.0  # generous: the machine may be busy; never a measure of speed
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"


async def connect(client):
    return await asyncio.open_connection(client.server.host, client.server.port)


async def served(client) -> bool:
    """Whether a new connection gets /healthz answered."""
    reader, writer = await connect(client)
    try:
        writer.write(HEALTHZ)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=MARGIN)
        return head.startswith(b"HTTP/1.1 200")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    finally:
        writer.close()


async def test_one_connection_over_the_cap_gets_a_503_and_closes(make_client, translator):
    client = await make_client(MAX_CONNECTIONS_PER_IP=3)
    held = [await connect(client) for _ in range(3)]
    for _, writer in held:  # each one in use, so the server has surely counted it
        writer.write(HEALTHZ)
    for reader, _ in held:
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), MARGIN)).startswith(
            b"HTTP/1.1 200"
        )
    reader, writer = await connect(client)
    answer = await asyncio.wait_for(reader.read(), timeout=MARGIN)  # then the server closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 1" in head and b"X-Request-ID: " in head
    assert json.loads(body) == {
        "code": 503,
        "msg": "failed",
        "data": {"response": translator.translate("en", "too_many_connections", limit=3)},
    }
    writer.close()
    # One of the three goes: a new connection is served again.
    held.pop()[1].close()
    deadline = asyncio.get_running_loop().time() + MARGIN
    while not await served(client):
        assert asyncio.get_running_loop().time() < deadline, "never served again"
        await asyncio.sleep(0.05)
    for _, other in held:
        other.close()


async def test_trusted_proxies_are_never_counted(make_client):
    client = await make_client(MAX_CONNECTIONS_PER_IP=2, TRUSTED_PROXIES="127.0.0.1")
    held = [await connect(client) for _ in range(5)]
    assert await served(client)
    for _, writer in held:
        writer.close()


async def test_no_cap_by_default(make_client):
    client = await make_client()
    held = [await connect(client) for _ in range(40)]
    assert await served(client)
    for _, writer in held:
        writer.close()
