"""Bounded work per connection: bodies that trickle are cut off, SSE events are capped."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.app import LINGER_SECONDS
from gateway.upstream.events import EventSplitter, EventTooLarge
from tests.support.fake_upstream import FakeUpstream

HEAD = (
    b"POST /api HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n"
)
MARGIN = 8.0  # generous: the machine may be busy
DEADLINE = 1 + LINGER_SECONDS + MARGIN  # BODY_TIMEOUT=1, then the lingering read


async def read_until_closed(reader: asyncio.StreamReader, deadline: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout=deadline)


@pytest.mark.parametrize("trickle", [True, False])
async def test_a_slow_body_gets_408_and_the_connection_closes_in_time(make_client, trickle):
    client = await make_client(BODY_TIMEOUT="1")
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    started = time.monotonic()
    writer.write(HEAD + b'{"user_content": ')

    async def dribble() -> None:
        while trickle:
            await asyncio.sleep(0.1)
            writer.write(b" ")
            await writer.drain()

    dribbler = asyncio.create_task(dribble())
    try:
        answer = await read_until_closed(reader, DEADLINE)
    finally:
        dribbler.cancel()
        await asyncio.gather(dribbler, return_exceptions=True)
        writer.close()
    assert time.monotonic() - started < DEADLINE
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"X-Request-ID" in head and b"Connection: close" in head
    assert json.loads(body)["code"] == 408


async def test_a_body_in_time_is_read_whole(make_client):
    client = await make_client(BODY_TIMEOUT="5")
    response = await client.post("/api", json={"user_content": "Hi " * 1000})
    assert response.status == 200


async def test_an_oversized_upstream_event_ends_the_stream_with_the_error_event(
    client, fake: FakeUpstream
):
    fake.oversized_after = 1
    body = {"model": "m", "messages": [], "stream": True}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    raw = await response.read()
    assert len(raw) < 64 * 1024
    last = raw.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert json.loads(last.removeprefix(b"data: "))["error"]["code"] == "upstream_stream_broken"


def test_the_splitter_caps_an_event():
    splitter = EventSplitter(limit=100)
    assert splitter.feed(b"data: 1\n\n" + b"x" * 100) == [b"data: 1\n\n"]
    with pytest.raises(EventTooLarge):
        splitter.feed(b"x")


def test_the_splitter_does_not_rescan_its_buffer():
    # 4 MiB in 64-byte pieces: a splitter that searched its whole buffer on each piece would
    # read about 130 GB; searching only new bytes is a blink even on a busy machine.
    splitter = EventSplitter(limit=8 * 1024 * 1024)
    piece = b"y" * 64
    started = time.monotonic()
    for _ in range(64 * 1024):
        assert splitter.feed(piece) == []
    assert splitter.feed(b"\r\n\r\n") == [piece * 64 * 1024 + b"\r\n\r\n"]
    assert time.monotonic() - started < 30


@given(
    st.lists(st.sampled_from([b"a", b"data: x", b"\n", b"\r", b"\r\n", b":"]), max_size=40),
    st.data(),
)
def test_the_splitter_cuts_the_same_events_however_the_bytes_arrive(parts, data):
    stream = b"".join(parts)
    whole = EventSplitter()
    expected = whole.feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    split = EventSplitter()
    assert [e for p in pieces for e in split.feed(p)] == expected
    assert split.rest == whole.rest


@pytest.mark.parametrize("size", [1024, 1025])
async def test_a_chunked_body_that_came_with_its_head_is_held_to_max_body_bytes(
    make_client, fake: FakeUpstream, size
):
    """The body read without waiting (it all came in one write with the head) is measured too."""
    client = await make_client(MAX_BODY_BYTES="1024")
    text = '{"user_content": "' + "x" * (size - 20) + '"}'
    assert len(text) == size
    body = text.encode()
    head = b"POST /api HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    chunked = b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    raw = head + chunked + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await read_until_closed(reader, 10 + MARGIN)
    finally:
        writer.close()
    head_part, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    assert status == (200 if size <= 1024 else 413), answer
    if status == 413:
        assert b"1024" in rest


@given(st.lists(st.sampled_from([b"a", b"data: x", b"\n", b"\r", b"\r\n", b":"]), max_size=40))
def test_the_splitter_cuts_as_its_pattern_does(parts):
    stream = b"".join(parts)
    ends = [m.end() for m in re.finditer(rb"\r\n\r\n|\n\n|\r\r", stream)]
    expected = [stream[start:end] for start, end in zip([0, *ends], ends, strict=False)]
    splitter = EventSplitter()
    assert splitter.feed(stream) == expected
    assert splitter.rest == stream[(ends or [0])[-1] :]
