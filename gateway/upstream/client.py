"""The one place that talks to the upstream; its failures become gateway errors here."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aiohttp

from gateway.config import Settings
from gateway.errors import (
    GatewayError,
    Unauthorized,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.chat import Answer, ChatRequest, ChatStream, Delta, read_answer
from gateway.upstream.events import EventTooLarge
from gateway.upstream.exchange import Exchange
from gateway.upstream.redact import mask

# Bytes are read as they come (and capped as read), so nothing may be compressed on the way back.
_CHAT_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


def error_reason(status: int, body: bytes) -> str:
    """What an upstream error body says went wrong: OpenAI's error message, else the status."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    inner = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return mask(str(inner["message"]))
    return f"Error code: {status}"


def status_cause(status: int, error_type: object) -> str:
    return f"status {status} ({error_type})" if isinstance(error_type, str) else f"status {status}"


def _body_type(body: bytes) -> object:
    try:
        error = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None
    return error.get("type") if isinstance(error, dict) else None


def failure_cause(exc: BaseException) -> str:
    """Why a call failed, in a word or two: refused, timed out, reset, name not resolved..."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "name not resolved"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused" if isinstance(exc.os_error, ConnectionRefusedError) else "cannot connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return "reset"
    if isinstance(exc, aiohttp.ClientOSError) and isinstance(exc.__cause__, ConnectionResetError):
        return "reset"
    return type(exc).__name__


def map_status(status: int, reason: str, retry_after: str | None = None) -> GatewayError:
    """The gateway error for an upstream error status; the upstream's Retry-After is kept."""
    if status in (401, 403):
        return Unauthorized("upstream_unauthorized")
    if status == 429:
        # Every 429 we send names a wait; with none from the upstream, a short one.
        headers = {"Retry-After": retry_after or "1"}
        return UpstreamRejected("upstream_busy", status=429, headers=headers)
    if 400 <= status < 500:
        return UpstreamRejected("upstream_bad_request", status=400, reason=reason)
    return UpstreamRejected("upstream_error", status=502, upstream_status=status)


class Upstream:
    """One pooled HTTP session for the whole process.

    Each call fills in the Exchange its caller hands it: when it started, answered and ended,
    and the usage the upstream reported.
    """

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.max_body = settings.max_upstream_body_bytes
        self.base_url = settings.openai_base_url
        self.chat_url = f"{self.base_url}/chat/completions"
        parts = urlsplit(settings.openai_base_url)
        self.host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    async def chat_chunks(
        self, call: ChatRequest, *, api_key: str, exchange: Exchange
    ) -> AsyncGenerator[list[Delta], None]:
        """Stream a chat completion: its deltas, as many at a time as each piece the upstream
        sent holds. Any failure, before or during the stream, is a GatewayError."""
        reader = ChatStream()
        try:
            async with self._chat(call, api_key, exchange, "mid-stream") as response:
                # Read to the end, past [DONE], so that the connection goes back to the pool.
                async for chunk in response.content.iter_any():
                    deltas = reader.feed(chunk)
                    if reader.usage is not None:
                        exchange.usage = reader.usage
                    if deltas:
                        yield deltas
        except EventTooLarge as exc:
            exchange.failed("oversized event")
            raise UpstreamUnavailable("upstream_stream_broken") from exc
        except UpstreamUnavailable:
            exchange.failed("garbled stream")
            raise
        if not reader.finished:
            exchange.failed("stream ended early")
            raise UpstreamUnavailable("upstream_stream_broken")

    async def chat_answer(self, call: ChatRequest, *, api_key: str, exchange: Exchange) -> Answer:
        """Ask for a chat completion that is not streamed and read its JSON answer whole, capped
        at MAX_UPSTREAM_BODY_BYTES. Any failure is a GatewayError; once the upstream has begun
        to answer, one that breaks off or is not a chat completion is `upstream_stream_broken`,
        as a stream that broke is."""
        async with self._chat(call, api_key, exchange, "mid-body") as response:
            body = await self.read(response, exchange)
        try:
            answer = read_answer(body)
        except UpstreamUnavailable:
            exchange.failed("garbled answer")
            raise
        exchange.usage = answer.usage
        return answer

    @asynccontextmanager
    async def _chat(
        self, call: ChatRequest, api_key: str, exchange: Exchange, part: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST a chat completion and hold its answer open, once its status says it is one (an
        error status is its GatewayError here). A timeout or a cut after the upstream began to
        answer is noted as `part` of the answer ("mid-stream"): the answer broke, the upstream
        is reachable."""
        headers = {**_CHAT_HEADERS, **exchange.headers, "Authorization": f"Bearer {api_key}"}
        exchange.model = call.model
        exchange.start()
        exchange.host = self.host
        try:
            async with self.session.post(
                self.chat_url, data=call.body(), headers=headers
            ) as response:
                exchange.answered()
                exchange.status = response.status
                if not 200 <= response.status < 300:
                    error = await self.read(response, exchange)
                    why = error_reason(response.status, error)
                    raise map_status(response.status, why, response.headers.get("Retry-After"))
                yield response
        except TimeoutError as exc:
            answering = exchange.first_byte is not None
            exchange.failed(failure_cause(exc) + (f" {part}" if answering else ""))
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            if exchange.first_byte is None:
                exchange.failed(failure_cause(exc))
                raise UpstreamUnavailable() from exc
            exchange.failed(f"{failure_cause(exc)} {part}")
            raise UpstreamUnavailable("upstream_stream_broken") from exc
        finally:
            exchange.finish()

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        api_key: str,
        body: bytes | None,
        headers: dict[str, str],
        exchange: Exchange,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a raw request to OPENAI_BASE_URL/path and hold its response open; read its body
        with `read`, inside the block, so that its failures become gateway errors here."""
        send = {**headers, **exchange.headers, "Authorization": f"Bearer {api_key}"}
        exchange.start()
        exchange.host = self.host
        try:
            async with self.session.request(
                method, f"{self.base_url}/{path}", data=body, headers=send
            ) as response:
                exchange.answered()
                exchange.status = response.status
                yield response
        except TimeoutError as exc:
            exchange.failed(failure_cause(exc))
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            exchange.failed(failure_cause(exc))
            raise UpstreamUnavailable() from exc
        finally:
            exchange.finish()

    async def read(self, response: aiohttp.ClientResponse, exchange: Exchange) -> bytes:
        """The whole body of an answer, noting why the call failed if it is an error.

        A body over MAX_UPSTREAM_BODY_BYTES is let go at that size (or unread, if its
        Content-Length says so) and is a 502: none of it reaches the client.
        """
        failed = response.status >= 400
        try:
            body = await self._read_capped(response, exchange)
        except BaseException:
            if failed:
                exchange.failed(status_cause(response.status, None))
            raise
        if failed:
            exchange.failed(status_cause(response.status, _body_type(body)))
        return body

    async def _read_capped(self, response: aiohttp.ClientResponse, exchange: Exchange) -> bytes:
        limit = self.max_body
        received = bytearray()
        if response.content_length is None or response.content_length <= limit:
            async for chunk in response.content.iter_any():
                received += chunk
                if len(received) > limit:
                    break
            else:
                return bytes(received)
        exchange.failed("oversized answer")
        # What is left of it is not worth reading to keep the connection for another call.
        response.close()
        raise UpstreamUnavailable("upstream_too_large")


def connect_timeout(settings: Settings) -> float:
    """A connection takes at most 10 s, or UPSTREAM_TIMEOUT if that is shorter."""
    return min(10.0, settings.upstream_timeout)


def client_timeout(settings: Settings) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        connect=connect_timeout(settings),
        sock_read=settings.upstream_timeout,
    )
