"""The one place that talks to the upstream; its failures become gateway errors here."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import openai
from openai.types.chat import ChatCompletionMessageParam

from gateway.config import Settings
from gateway.errors import (
    GatewayError,
    Unauthorized,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.upstream.exchange import Exchange, Usage
from gateway.upstream.redact import mask

# The SDK insists on a key when the client is built; every call passes the real one.
_NO_KEY = "sk-no-key-configured"


@dataclass(frozen=True)
class Delta:
    """One piece of a streamed answer; usage arrives on the last chunk only when asked for."""

    text: str
    usage: Usage | None = None


def _reason(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return mask(str(inner["message"]))
    return mask(str(exc.message))


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


def status_cause(status: int, error_type: object) -> str:
    return f"status {status} ({error_type})" if isinstance(error_type, str) else f"status {status}"


def _body_type(body: bytes) -> object:
    try:
        error = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None
    return error.get("type") if isinstance(error, dict) else None


def failure_cause(exc: BaseException) -> str:
    """Why a call failed, in a word or two: refused, timed out, reset, status N (type)..."""
    if isinstance(exc, openai.APIStatusError):
        return status_cause(exc.status_code, exc.type)
    if isinstance(exc, (TimeoutError, openai.APITimeoutError)):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "name not resolved"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused" if isinstance(exc.os_error, ConnectionRefusedError) else "cannot connect"
    if isinstance(exc, openai.APIConnectionError):
        # The SDK's HTTP client says which in the exception it wraps.
        inner = type(exc.__cause__).__name__
        return "refused" if inner == "ConnectError" else "reset"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return "reset"
    if isinstance(exc, aiohttp.ClientOSError) and isinstance(exc.__cause__, ConnectionResetError):
        return "reset"
    return type(exc).__name__


def map_sdk_error(exc: openai.OpenAIError) -> GatewayError:
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable()
    if isinstance(exc, openai.APIStatusError):
        return map_status(exc.status_code, _reason(exc), exc.response.headers.get("Retry-After"))
    return UpstreamUnavailable("upstream_stream_broken")


class Upstream:
    """One SDK client and one pooled HTTP session for the whole process.

    Each call fills in the Exchange its caller hands it: when it started, answered and ended,
    and the usage the upstream reported.
    """

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.base_url = settings.openai_base_url
        parts = urlsplit(settings.openai_base_url)
        self.host = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        self.sdk = openai.AsyncOpenAI(
            api_key=settings.api_key.reveal() if settings.api_key else _NO_KEY,
            base_url=settings.openai_base_url,
            max_retries=0,
            timeout=openai.Timeout(settings.upstream_timeout, connect=connect_timeout(settings)),
        )

    async def close(self) -> None:
        await self.sdk.close()

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
        extra: dict[str, Any] = {}
        if include_usage:
            extra["stream_options"] = {"include_usage": True}
        client = self.sdk.with_options(api_key=api_key)
        exchange.start()
        exchange.host = self.host
        try:
            stream = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, stream=True, **extra
            )
        except openai.OpenAIError as exc:
            exchange.finish()
            exchange.failed(failure_cause(exc))
            raise map_sdk_error(exc) from exc
        exchange.answered()
        finished = False
        try:
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                        exchange.usage = usage
                        yield Delta("", usage)
                    for choice in chunk.choices[:1]:
                        finished = finished or choice.finish_reason is not None
                        yield Delta(choice.delta.content or "")
        except openai.APITimeoutError as exc:
            exchange.failed("timed out mid-stream")
            raise UpstreamTimeout() from exc
        except (openai.OpenAIError, ValueError) as exc:
            # Connected and answering, then cut off or garbled (a `data:` line that is no JSON):
            # the answer broke, the upstream is reachable.
            cause = failure_cause(exc) if isinstance(exc, openai.OpenAIError) else "garbled"
            exchange.failed(cause + " mid-stream")
            raise UpstreamUnavailable("upstream_stream_broken") from exc
        finally:
            exchange.finish()
        if not finished:
            exchange.failed("stream ended early")
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
        exchange.host = self.host
        try:
            async with self.session.request(
                method, f"{self.base_url}/{path}", data=body, headers=send
            ) as response:
                exchange.answered()
                if response.status >= 400:
                    # Error bodies are small; read here, they stay cached for the caller.
                    exchange.failed(
                        status_cause(response.status, _body_type(await response.read()))
                    )
                yield response
        except TimeoutError as exc:
            exchange.failed(failure_cause(exc))
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            exchange.failed(failure_cause(exc))
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
