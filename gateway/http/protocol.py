"""Requests aiohttp's HTTP parser rejects, answered in the legacy envelope with a request id.

aiohttp answers them from its connection handler (`RequestHandler.handle_error`), before any
middleware or signal runs, with a text/plain body and a logged traceback. The app's server is
made to build a handler that renders the envelope instead and logs one WARNING line, at most
one a second (the rest are counted into the next line).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.keys import SETTINGS_KEY, TRANSLATOR_KEY
from gateway.observe.request_id import REQUEST_ID_HEADER

log = logging.getLogger("gateway.protocol")

Render = Callable[[int], dict[str, Any]]


def _envelope(app: web.Application, status: int) -> dict[str, Any]:
    """The legacy envelope in LANG: the request's path and headers are not to be trusted."""
    reason = app[TRANSLATOR_KEY].translate(
        app[SETTINGS_KEY].language, "bad_http" if status < 500 else "internal_error"
    )
    return {"code": status, "msg": "failed", "data": {"response": reason}}


class _Quiet:
    """One WARNING a second at most; the lines held back are counted into the next one."""

    def __init__(self) -> None:
        self.last = -1.0
        self.held = 0

    def note(self, status: int, exc: BaseException | None, remote: str | None) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            self.held += 1
            return
        self.last, held, self.held = now, self.held, 0
        log.warning(
            "rejected a malformed request from %s with %s: %s%s",
            remote,
            status,
            type(exc).__name__ if exc is not None else "error",
            f" ({held} more not logged)" if held else "",
        )


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        server = self._manager
        if request.writer.output_size > 0 or not isinstance(server, _Server):
            return super().handle_error(request, status, exc, message)
        server.quiet.note(status, exc, request.remote)
        response = web.json_response(
            server.render(status), status=status, headers={REQUEST_ID_HEADER: uuid.uuid4().hex}
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, *args: Any, render: Render, quiet: _Quiet, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.render = render
        self.quiet = quiet

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


def install(app: web.Application) -> None:
    """Make the servers the app is run with answer parser errors in the legacy envelope."""
    original = app._make_handler
    render = partial(_envelope, app)
    quiet = _Quiet()

    def make_handler(**kwargs: Any) -> web.Server:
        made = original(**kwargs)
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            render=render,
            quiet=quiet,
            **made._kwargs,
        )

    app._make_handler = make_handler  # type: ignore[method-assign]
