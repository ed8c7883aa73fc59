"""The one place that talks to the upstream; its failures become gateway errors here."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager

import aiohttp
from openai.types.chat import ChatCompletionMessageParam

from gateway.config import Settings
from gateway.errors import (
    GatewayError,
    Unauthorized,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.chat import ChatRequest, ChatStream, Delta
from gateway.upstream.exchange import Exchange

log = logging.getLogger(__name__)

# Bytes are read as they come, so nothing may be compressed on the way back.
_CHAT_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


def error_reason(status: int, body: bytes) -> str:
    """What an upstream error body says went wrong: OpenAI's error message, else the status."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    inner = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return str(inner["message"])
    return f"Error code: {status}"


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
        self.base_url = settings.openai_base_url
        self.chat_url = f"{self.base_url}/chat/completions"

    async def stream_chat(
        self,
        *,
        api_key: str,
        model: str,
        messages: Sequence[ChatCompletionMessageParam],
        max_tokens: int,
        exchange: Exchange,
        include_usage: bool = False,
    ) -> AsyncGenerator[Delta, None]:
        """Stream a chat completion; any failure, before or during the stream, is a GatewayError."""
        call = ChatRequest(model, messages, max_tokens, include_usage)
        chunks = self.chat_chunks(call, api_key=api_key, exchange=exchange)
        async with aclosing(chunks):
            async for deltas in chunks:
                for delta in deltas:
                    yield delta

    async def chat_chunks(
        self, call: ChatRequest, *, api_key: str, exchange: Exchange
    ) -> AsyncGenerator[list[Delta], None]:
        """stream_chat's deltas, as many at a time as each piece the upstream sent holds."""
        body = call.body()
        headers = {**_CHAT_HEADERS, "Authorization": f"Bearer {api_key}"}
        reader = ChatStream()
        exchange.start()
        try:
            async with self.session.post(self.chat_url, data=body, headers=headers) as response:
                exchange.answered()
                if not 200 <= response.status < 300:
                    why = error_reason(response.status, await response.read())
                    raise map_status(response.status, why, response.headers.get("Retry-After"))
                # Read to the end, past [DONE], so that the connection goes back to the pool.
                async for chunk in response.content.iter_any():
                    deltas = reader.feed(chunk)
                    if reader.usage is not None:
                        exchange.usage = reader.usage
                    if deltas:
                        yield deltas
        except TimeoutError as exc:
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            if exchange.first_byte is None:
                log.warning("upstream request failed: %s", type(exc).__name__)
                raise UpstreamUnavailable() from exc
            # Connected and answering, then cut off: the answer broke, the upstream is reachable.
            raise UpstreamUnavailable("upstream_stream_broken") from exc
        finally:
            exchange.finish()
        if not reader.finished:
            raise UpstreamUnavailable("upstream_stream_broken")

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
        """Send a raw request to OPENAI_BASE_URL/path and hold its response open."""
        send = {**headers, "Authorization": f"Bearer {api_key}"}
        exchange.start()
        try:
            async with self.session.request(
                method, f"{self.base_url}/{path}", data=body, headers=send
            ) as response:
                exchange.answered()
                yield response
        except TimeoutError as exc:
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            log.warning("upstream request failed: %s", type(exc).__name__)
            raise UpstreamUnavailable() from exc
        finally:
            exchange.finish()


def connect_timeout(settings: Settings) -> float:
    """A connection takes at most 10 s, or UPSTREAM_TIMEOUT if that is shorter."""
    return min(10.0, settings.upstream_timeout)


def client_timeout(settings: Settings) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        connect=connect_timeout(settings),
        sock_read=settings.upstream_timeout,
    )
