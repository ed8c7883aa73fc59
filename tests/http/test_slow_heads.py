"""Request heads that trickle are cut off after HEADER_TIMEOUT; heads in time are served."""

from __future__ import annotations

import asyncio
import json

MARGIN = 10.0  # generous: the machine may be busy
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n"
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 500 + b"\r\n\r\n"


async def connect(client) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(client.server.host, client.server.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response with a Content-Length: its head and its body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=MARGIN)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(length), timeout=MARGIN)
    return head, body


async def trickle(writer: asyncio.StreamWriter, data: bytes, pause: float) -> None:
    """Send data a byte at a time, until it is sent or the connection is gone."""
    for index in range(len(data)):
        writer.write(data[index : index + 1])
        try:
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(pause)


async def answer_to_trickled_head(client, reader, writer, deadline: float) -> bytes:
    """What the gateway sends, up to its closing the connection, to a head sent byte by byte."""
    sender = asyncio.create_task(trickle(writer, SLOW_HEAD, 0.05))
    try:
        return await asyncio.wait_for(reader.read(), timeout=deadline)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        writer.close()


def assert_head_timeout(answer: bytes, translator) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    # Answered like a parser rejection (as HTTP/1.0); read() got to the end: the connection closed.
    assert head.split(b" ", 2)[1] == b"408", head
    assert b"X-Request-ID: " in head
    assert json.loads(body) == {
        "code": 408,
        "msg": "failed",
        "data": {"response": translator.translate("en", "header_timeout", seconds="1")},
    }


async def test_a_trickled_head_gets_408_and_the_connection_closes(make_client, translator):
    client = await make_client(HEADER_TIMEOUT="1")
    reader, writer = await connect(client)
    answer = await answer_to_trickled_head(client, reader, writer, 1 + MARGIN)
    assert_head_timeout(answer, translator)


async def test_each_request_of_a_keep_alive_connection_is_timed_from_its_first_byte(
    make_client, translator
):
    client = await make_client(HEADER_TIMEOUT="1")
    reader, writer = await connect(client)
    writer.write(HEALTHZ)
    head, _ = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200 ")
    # Idle for longer than HEADER_TIMEOUT: an idle connection is not a slow head.
    await asyncio.sleep(2.5)
    writer.write(HEALTHZ)
    head, body = await read_response(reader)
    assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body) == {"status": "ok"}
    answer = await answer_to_trickled_head(client, reader, writer, 1 + MARGIN)
    assert_head_timeout(answer, translator)


async def test_many_tricklers_are_all_closed_and_others_still_served(make_client, translator):
    client = await make_client(HEADER_TIMEOUT="1")
    connections = [await connect(client) for _ in range(50)]
    answers = asyncio.gather(
        *(answer_to_trickled_head(client, r, w, 1 + 3 * MARGIN) for r, w in connections)
    )
    assert (await client.get("/healthz")).status == 200
    for answer in await answers:
        assert_head_timeout(answer, translator)


async def test_a_slow_head_in_time_is_served(make_client):
    client = await make_client(HEADER_TIMEOUT="30")
    reader, writer = await connect(client)
    try:
        pieces = [SLOW_HEAD[i : i + 50] for i in range(0, len(SLOW_HEAD), 50)]
        for piece in pieces:
            writer.write(piece)
            await asyncio.sleep(0.1)
        head, body = await read_response(reader)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body) == {"status": "ok"}


async def test_a_slow_body_is_not_a_slow_head(make_client):
    # The head is in at once; the body takes longer than HEADER_TIMEOUT, within BODY_TIMEOUT.
    client = await make_client(HEADER_TIMEOUT="1", BODY_TIMEOUT="60")
    body = json.dumps({"user_content": "Hi"}).encode().ljust(40)
    head = (
        b"POST /api HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    reader, writer = await connect(client)
    try:
        writer.write(head)
        step = len(body) // 4
        for index in range(0, len(body), step):
            await asyncio.sleep(0.6)
            writer.write(body[index : index + step])
        answer, _ = await read_response(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
