"""Server-sent events: writing them, and heartbeats while waiting (upstream/events.py cuts them)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from multidict import CIMultiDict

T = TypeVar("T")

log = logging.getLogger(__name__)

SSE_HEADERS = CIMultiDict(
    {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
)


class EventStream(web.StreamResponse):
    """A streamed response whose headers leave with its first bytes (an event, a heartbeat or
    the end), as a plain Response's do: one write to the client instead of two."""

    # aiohttp's switch for this (a plain Response sets it so); prepare() still runs the
    # on_response_prepare hooks and fixes the status and headers.
    _send_headers_immediately = False


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
