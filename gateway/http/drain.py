"""Shutdown: what is in flight when draining starts, and the requests cut as the grace ends.

aiohttp waits SHUTDOWN_GRACE for handlers, then cancels them and waits as long again, and a
cancelled stream just stops. So the drain cuts what is left itself, a moment before the grace
ends: a stream ends with its route's error event, a call not yet answered gets a 503.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import ShuttingDown
from gateway.http.middleware import render_error
from gateway.http.render import fail_stream
from gateway.keys import CUT_KEY, RESPONSE_KEY, STREAMING_KEY

log = logging.getLogger("gateway.shutdown")

# aiohttp's own deadline comes this much after the grace: a backstop for a handler the cut missed.
BACKSTOP = 0.5


def cut_after(grace: float) -> float:
    """Seconds after SIGTERM at which what is still in flight is cut: just before the grace ends,
    so that the last events are written by then."""
    return max(0.0, grace - min(0.5, grace / 10))


class Drain:
    """Tracks each request's task; on shutdown, says what is in flight and later cuts it."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.serving = (
            False  # set once the port is bound: a gateway that never served drains nothing
        )
        self.cutting = False
        self.tasks: dict[asyncio.Task[object], web.Request] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self.tasks[task] = request
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if not self.cutting:
                raise
            task.uncancel()
            return await self._cut(request)
        finally:
            del self.tasks[task]

    async def _cut(self, request: web.Request) -> web.StreamResponse:
        request[CUT_KEY] = True
        response: web.StreamResponse | None = request.get(RESPONSE_KEY)
        if response is None or not response.prepared:
            return render_error(request, ShuttingDown())
        if request.get(STREAMING_KEY):
            await fail_stream(request, response, ShuttingDown())
        return response

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        request[RESPONSE_KEY] = response

    async def on_shutdown(self, app: web.Application) -> None:
        if not self.serving:
            return
        streams = sum(1 for request in self.tasks.values() if request.get(STREAMING_KEY))
        log.info(
            "draining: %d requests in flight, %d of them streams; SHUTDOWN_GRACE=%ss",
            len(self.tasks),
            streams,
            f"{self.grace:g}",
        )
        asyncio.get_running_loop().call_later(cut_after(self.grace), self.cut)

    def cut(self) -> None:
        self.cutting = True
        if self.tasks:
            log.warning(
                "SHUTDOWN_GRACE is up: cutting %d requests still in flight", len(self.tasks)
            )
        for task in self.tasks:
            task.cancel()


# Here rather than in keys.py, which cannot import this module without a circle through it.
DRAIN_KEY = web.AppKey("DRAIN_KEY", Drain)
