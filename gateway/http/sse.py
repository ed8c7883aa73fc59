"""Server-sent events: writing them, cutting a stream into them, and heartbeats while waiting."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDict

T = TypeVar("T")

log = logging.getLogger(__name__)

# An event ends with a blank line; the spec allows all three line endings.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")

SSE_HEADERS = CIMultiDict(
    {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
)


def sse_event(data: Any, *, event: str | None = None) -> bytes:
    """One event; JSON keeps newlines escaped, so `data` always fits on one line."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


HEARTBEAT = b": keep-alive\n\n"


class ClientGone(Exception):
    """The client hung up. Kept apart from aiohttp's reset error, which is also a ClientError."""


async def end_with(request: web.Request, response: web.StreamResponse, last: bytes) -> None:
    """Send a stream's last event (an error, after a failure) and close it; a client already
    gone is only noted."""
    try:
        await send(response, request, last)
        await response.write_eof()
    except (ClientGone, ConnectionResetError):
        log.info("client went away before the stream's end")


async def send(response: web.StreamResponse, request: web.Request, data: bytes = b"") -> None:
    try:
        if not response.prepared:
            await response.prepare(request)
        if data:
            await response.write(data)
    except ConnectionResetError as exc:
        raise ClientGone() from exc


class Heartbeat:
    """Waits on the upstream; every STREAM_HEARTBEAT seconds meanwhile, an SSE comment goes out.

    The first comment sends the headers (status 200), so errors known before it still get theirs.
    """

    def __init__(
        self, request: web.Request, response: web.StreamResponse, interval: float | None
    ) -> None:
        self.request = request
        self.response = response
        self.interval = interval
        self.loop = asyncio.get_running_loop()
        self.due = self.loop.time() + (interval or 0.0)

    async def wait(self, awaitable: Awaitable[T]) -> T:
        if self.interval is None:
            return await awaitable
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, self.due - self.loop.time()))
                if done:
                    return task.result()
                await send(self.response, self.request, HEARTBEAT)
                self.due += self.interval
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled():
                task.exception()


# Far above any real event (a chunk of a few tokens); an upstream that sends more is broken.
MAX_EVENT_BYTES = 1024 * 1024


class EventTooLarge(Exception):
    """The upstream sent more than MAX_EVENT_BYTES without ending an event."""


class EventSplitter:
    """Cuts a byte stream into whole SSE events, each kept byte for byte with its blank line.

    Each byte is searched about once: a new chunk is searched from just before where the last
    search ended (an event's end may straddle two chunks), never from the start of the buffer.
    """

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self.buffer = bytearray()
        self.searched = 0
        self.limit = limit

    @property
    def rest(self) -> bytes:
        return bytes(self.buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        self.buffer += chunk
        events = []
        start = 0
        # The longest end, \r\n\r\n, is 4 bytes: 3 of them may precede the new chunk.
        for match in _EVENT_END.finditer(self.buffer, max(0, self.searched - 3)):
            events.append(bytes(self.buffer[start : match.end()]))
            start = match.end()
        del self.buffer[:start]
        self.searched = len(self.buffer)
        if self.searched > self.limit:
            raise EventTooLarge()
        return events


def event_data(event: bytes) -> bytes:
    lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    return b"\n".join(data)
