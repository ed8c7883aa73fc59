"""The app's connection handler: parser rejections and slow request heads, answered in the envelope.

aiohttp answers parser rejections from its connection handler (`RequestHandler.handle_error`),
before any middleware or signal runs, with a text/plain body and a logged traceback; and it times
no request head: a client sending its headers a byte every few seconds holds the connection. The
app's server is made to build a handler that renders the legacy envelope with a request id, logs
one WARNING line at most a second (the rest are counted into the next line), and closes a
connection whose request line and headers are not in within HEADER_TIMEOUT of their first byte,
and one whose client reads nothing of its answer for SEND_TIMEOUT while the answer waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, cast

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.http.connections import Connections
from gateway.keys import SETTINGS_KEY, TRANSLATOR_KEY
from gateway.observe.request_id import REQUEST_ID_HEADER

log = logging.getLogger("gateway.protocol")

Render = Callable[[int, str, Mapping[str, object]], dict[str, Any]]


class HeadTimeout(Exception):
    """The request line and headers did not arrive within HEADER_TIMEOUT."""


def _envelope(
    app: web.Application, status: int, code: str, params: Mapping[str, object]
) -> dict[str, Any]:
    """The legacy envelope in LANG: the request's path and headers are not to be trusted."""
    reason = app[TRANSLATOR_KEY].translate(app[SETTINGS_KEY].language, code, **params)
    return {"code": status, "msg": "failed", "data": {"response": reason}}


class _Quiet:
    """One WARNING a second at most; the lines held back are counted into the next one."""

    def __init__(self) -> None:
        self.last = -1.0
        self.held = 0

    def note(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < 1.0:
            self.held += 1
            return
        self.last, held, self.held = now, self.held, 0
        log.warning(message + (f" ({held} more not logged)" if held else ""), *args)


class _Handler(RequestHandler):
    __slots__ = ("_address", "_head_late", "_head_timer", "_last_body", "_send_timer", "_server")

    def __init__(self, server: _Server, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        # aiohttp forgets its manager when the connection is lost; errors after that need ours.
        self._server = server
        self._address: str | None = None  # counted against MAX_CONNECTIONS_PER_IP
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._head_late = False
        # The body of the last request parsed: until it is whole, bytes received are body bytes.
        self._last_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        address = self._server.per_address.open(transport.get_extra_info("peername"))
        if address is False:
            # One more than the address may hold: answered at once, then closed.
            self._head_late = True
            self._server.quiet.note(
                "refused a connection from a client address at MAX_CONNECTIONS_PER_IP=%d",
                self._server.per_address.cap,
            )
            status, params = 503, {"limit": self._server.per_address.cap}
            body = json.dumps(self._server.render(status, "too_many_connections", params))
            head = (
                f"HTTP/1.1 {status} Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body.encode())}\r\nRetry-After: 1\r\n"
                f"{REQUEST_ID_HEADER}: {uuid.uuid4().hex}\r\nConnection: close\r\n\r\n"
            )
            cast(asyncio.WriteTransport, transport).write((head + body).encode())
            transport.close()
            return
        self._address = address

    def data_received(self, data: bytes) -> None:
        if self._head_late:
            return
        server = self._server
        if (
            data
            and self._head_timer is None
            and not self._upgraded
            and (self._last_body is None or self._last_body.is_eof())
        ):
            # The first byte of a request head. Bytes that finish a body and start the next head
            # in one read arm nothing: the next read does, and silence is keep-alive's to end.
            self._head_timer = self._loop.call_later(server.header_timeout, self._head_too_slow)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._last_body = self._messages[-1][1]
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._force_close or self._close or self.transport is None:
            return
        # Answered like a parser rejection, after any request still in hand; what the client
        # sends from now on is dropped.
        self._head_late = True
        self._messages.append(
            (_ErrInfo(status=408, exc=HeadTimeout(), message="Request Timeout"), EMPTY_PAYLOAD)
        )
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def pause_writing(self) -> None:
        # The client is not reading what we send: its buffers and ours are full. If it reads
        # nothing more for SEND_TIMEOUT, it is cut off (and its upstream call with it).
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self._loop.call_later(self._server.send_timeout, self._send_too_slow)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_too_slow(self) -> None:
        self._send_timer = None
        server = self._server
        if self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            server.quiet.note(
                "cut off %s: it read nothing of its answer for %gs", peer, server.send_timeout
            )
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is not None:
            self._server.per_address.close(self._address)
            self._address = None
        for timer in (self._head_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._send_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        server = self._server
        if isinstance(exc, ConnectionResetError) and self.transport is None:
            # The client went away while its request was read: nothing to answer, no error.
            log.debug("client %s went away mid-request", request.remote)
            return web.Response(status=499)
        if request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        server.quiet.note(
            "rejected a request from %s with %s: %s",
            request.remote,
            status,
            type(exc).__name__ if exc is not None else "error",
        )
        params: dict[str, object] = {}
        if isinstance(exc, HeadTimeout):
            code, params["seconds"] = "header_timeout", f"{server.header_timeout:g}"
        else:
            code = "bad_http" if status < 500 else "internal_error"
        response = web.json_response(
            server.render(status, code, params),
            status=status,
            headers={REQUEST_ID_HEADER: uuid.uuid4().hex},
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(
        self,
        *args: Any,
        render: Render,
        quiet: _Quiet,
        header_timeout: float,
        send_timeout: float,
        connections: Connections,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.render = render
        self.quiet = quiet
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self.per_address = connections

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


def install(app: web.Application) -> None:
    """Make the servers the app is run with answer parser errors and slow request heads in the
    legacy envelope."""
    original = app._make_handler
    header_timeout = app[SETTINGS_KEY].header_timeout
    send_timeout = app[SETTINGS_KEY].send_timeout
    settings = app[SETTINGS_KEY]
    connections = Connections(settings.max_connections_per_ip, settings.trusted_proxies)
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
            header_timeout=header_timeout,
            send_timeout=send_timeout,
            connections=connections,
            **made._kwargs,
        )

    app._make_handler = make_handler  # type: ignore[method-assign]
