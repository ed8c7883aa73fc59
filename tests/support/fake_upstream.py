"""A real aiohttp server that speaks OpenAI's wire format, with switches for every misbehaviour.

Tests flip the attributes of `FakeUpstream` and read `received` to see what reached the upstream.
Run it alone with `python -m tests.support.fake_upstream --port 8001` to try the gateway by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email.parser
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

FAKE_UPSTREAM_KEY = web.AppKey("FAKE_UPSTREAM_KEY", "FakeUpstream")


@dataclass
class Received:
    method: str
    path: str
    query: str
    key: str | None
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw: bytes

    @property
    def model(self) -> Any:
        return (self.body or {}).get("model")

    @property
    def messages(self) -> Any:
        return (self.body or {}).get("messages")

    @property
    def max_tokens(self) -> Any:
        return (self.body or {}).get("max_tokens")


@dataclass
class FakeUpstream:
    """What the upstream does next; tests change these between requests."""

    answer: list[str] = field(default_factory=lambda: ["Hello", ", ", "world", "!"])
    status: int = 200  # 400, 401, 404, 429, 500 ... answer with OpenAI's error body
    error_message: str = "The model `nope` does not exist"
    first_byte_delay: float = 0.0  # before the response headers
    hold_first_byte: asyncio.Event | None = None  # chat waits for it before the response headers
    tool_arguments: str = '{"city": "Paris"}'  # a chat call offering tools gets a call to the first
    first_chunk_delay: float = 0.0  # after the headers, before the first event
    chunk_delay: float = 0.0  # between deltas
    cut_after: int | None = None  # deltas sent before the connection is dropped
    error_event_after: int | None = None  # deltas sent before an error event
    garbage_after: int | None = None  # deltas sent before a `data:` line that is not JSON
    oversized_after: int | None = None  # deltas sent before 2 MiB that never end an event
    split_events: bool = True  # write events in pieces that cut through lines and events
    hold_after_first: asyncio.Event | None = None  # the stream waits for it after the first delta
    # A chat answer that is not streamed (one JSON body): one of ANSWER_FAULTS, ...
    answer_fault: str | None = None
    answer_delay: float = 0.0  # ... or whole, its second half this long after its first
    hold_answer: asyncio.Event | None = None  # ... its second half waits for it
    refusal: str | None = None  # a JSON chat answer refuses: content null, and this refusal
    prompt_tokens: int = 11
    accepted_keys: set[str] | None = None  # None accepts any key
    extra_headers: dict[str, str] = field(default_factory=dict)  # on every JSON answer
    raw_error: bytes | None = None  # with status: this body as it is, instead of OpenAI's shape
    oversized_body: int | None = None  # every route answers (in status) this many bytes of JSON
    oversized_sized: bool = False  # ... with a Content-Length rather than chunked
    oversized_sent: int = 0  # how many of them the gateway let the fake write
    received: list[Received] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    stream_bytes: list[bytes] = field(default_factory=list)
    speech: list[bytes] = field(default_factory=lambda: [b"ID3\x04fake", b"-mp3-", b"frames"])
    image: bytes = b"\x89PNG fake image"
    flagged: bool = False  # what moderations answers

    def completion_tokens(self) -> int:
        return len(self.answer)


def _error_body(status: int, message: str) -> dict[str, Any]:
    kinds = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": kinds.get(status),
        }
    }


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


# What a chat answer that is not streamed can be instead of a whole chat completion: see _faulty.
ANSWER_FAULTS = (
    "garbage",
    "not object",
    "error",
    "no choices",
    "bad content",
    "truncated",
    "reset",
)


def _faulty(fault: str | None, completion: dict[str, Any]) -> bytes:
    """The body of a JSON chat answer with `fault`: "reset" is the whole body (the connection is
    dropped halfway through it), "truncated" its first half as if that were all of it."""
    whole = json.dumps(completion).encode()
    choice = completion["choices"][0]
    bodies: dict[str | None, object] = {
        "garbage": b"{this is not json",
        "not object": ["Hello", "world"],
        "error": _error_body(500, "The server had an error"),
        "no choices": {**completion, "choices": []},
        "bad content": {**completion, "choices": [{**choice, "message": {"content": 42}}]},
        "truncated": whole[: len(whole) // 2],
    }
    body = bodies.get(fault, whole)
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _chunk(model: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


async def _record(request: web.Request) -> Received:
    fake = request.app[FAKE_UPSTREAM_KEY]
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    auth = request.headers.get("Authorization", "")
    received = Received(
        method=request.method,
        path=request.path,
        query=request.query_string,
        key=auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None,
        headers=dict(request.headers),
        body=body if isinstance(body, dict) else None,
        raw=raw,
    )
    fake.received.append(received)
    fake.started.set()
    return received


RECEIVED_KEY = web.RequestKey("RECEIVED_KEY", Received)


@web.middleware
async def _front(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route: record the call, wait if asked, and refuse it if a switch says so."""
    fake = request.app[FAKE_UPSTREAM_KEY]
    received = await _record(request)
    if fake.first_byte_delay:
        await asyncio.sleep(fake.first_byte_delay)
    if fake.hold_first_byte is not None:
        await fake.hold_first_byte.wait()
    if fake.oversized_body is not None:
        return await _oversized(request, fake, fake.oversized_body)
    refusal = _refusal(fake, received)
    if refusal is not None:
        return refusal
    request[RECEIVED_KEY] = received
    response = await handler(request)
    if not response.prepared:
        response.headers.update(fake.extra_headers)
    return response


async def _oversized(request: web.Request, fake: FakeUpstream, size: int) -> web.StreamResponse:
    """`size` bytes in 64 KiB writes, until they are all sent or the reader lets go."""
    response = web.StreamResponse(status=fake.status, headers={"Content-Type": "application/json"})
    if fake.oversized_sized:
        response.content_length = size
    else:
        response.enable_chunked_encoding()
    await response.prepare(request)
    piece = b'"LEAK"' * (64 * 1024 // 6)
    try:
        while fake.oversized_sent < size:
            part = piece[: size - fake.oversized_sent]
            await response.write(part)
            fake.oversized_sent += len(part)
        await response.write_eof()
    except ConnectionError:
        pass
    finally:
        fake.finished.set()
    return response


def _refusal(fake: FakeUpstream, received: Received) -> web.Response | None:
    if fake.accepted_keys is not None and received.key not in fake.accepted_keys:
        return web.json_response(_error_body(401, "Incorrect API key provided"), status=401)
    if fake.status != 200 and fake.raw_error is not None:
        return web.Response(body=fake.raw_error, status=fake.status, content_type="text/html")
    if fake.status != 200:
        message = (
            fake.error_message if fake.status in (400, 404) else f"fake upstream {fake.status}"
        )
        headers = {"Retry-After": "7"} if fake.status == 429 else None
        return web.json_response(
            _error_body(fake.status, message), status=fake.status, headers=headers
        )
    return None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_UPSTREAM_KEY]
    body = request[RECEIVED_KEY].body or {}
    model = str(body.get("model", "gpt-4o-mini"))
    created = int(time.time())
    if body.get("tools") and not body.get("stream"):
        return _tool_call(fake, body, model, created)
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(fake.answer)}
        if fake.refusal is not None:
            message = {"role": "assistant", "content": None, "refusal": fake.refusal}
        usage = _usage(fake.prompt_tokens, fake.completion_tokens())
        if fake.answer_fault or fake.answer_delay or fake.hold_answer is not None:
            completion = _completion_body(model, created, message, "stop", usage)
            return await _answer_in_halves(request, fake, completion)
        return _completion(model, created, message, "stop", usage)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def write_events(response: web.StreamResponse) -> bool:
        return await _chat_events(request, response, fake, model, created, include_usage)

    return await _event_stream(request, fake, write_events)


def _tool_call(fake: FakeUpstream, body: dict[str, Any], model: str, created: int) -> web.Response:
    name = body["tools"][0]["function"]["name"]
    call = {"id": "call_fake", "type": "function", "function": {"name": name}}
    call["function"]["arguments"] = fake.tool_arguments
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return _completion(model, created, message, "tool_calls", _usage(fake.prompt_tokens, 9))


def _completion_body(
    model: str, created: int, message: dict[str, Any], finish: str, usage: dict[str, int]
) -> dict[str, Any]:
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def _completion(
    model: str, created: int, message: dict[str, Any], finish: str, usage: dict[str, int]
) -> web.Response:
    return web.json_response(_completion_body(model, created, message, finish, usage))


async def _answer_in_halves(
    request: web.Request, fake: FakeUpstream, completion: dict[str, Any]
) -> web.StreamResponse:
    """A JSON chat answer (or what `answer_fault` makes of it) in two writes: the second after
    `answer_delay`, or once `hold_answer` is set; "reset" drops the connection instead."""
    body = _faulty(fake.answer_fault, completion)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    half = len(body) // 2
    try:
        await response.write(body[:half])
        if fake.answer_delay:
            await asyncio.sleep(fake.answer_delay)
        if fake.hold_answer is not None:
            await fake.hold_answer.wait()
        if fake.answer_fault == "reset":
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(body[half:])
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        fake.cancelled.set()
        raise
    fake.finished.set()
    return response


async def _event_stream(
    request: web.Request,
    fake: FakeUpstream,
    write_events: Callable[[web.StreamResponse], Awaitable[bool]],
) -> web.StreamResponse:
    """An SSE response around `write_events`, which says whether the stream ran to its end."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    try:
        if await write_events(response):
            await response.write_eof()
            fake.finished.set()
    except (ConnectionResetError, asyncio.CancelledError):
        fake.cancelled.set()
        raise
    return response


async def _chat_events(
    request: web.Request,
    response: web.StreamResponse,
    fake: FakeUpstream,
    model: str,
    created: int,
    include_usage: bool,
) -> bool:
    async def send(payload: bytes) -> None:
        fake.stream_bytes.append(payload)
        if fake.split_events and len(payload) > 8:
            cut = len(payload) // 2
            await response.write(payload[:cut])
            await asyncio.sleep(0.001)
            await response.write(payload[cut:])
        else:
            await response.write(payload)

    def event(data: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(data)}\n\n".encode()

    if fake.first_chunk_delay:
        await asyncio.sleep(fake.first_chunk_delay)
    await send(event(_chunk(model, created, {"role": "assistant", "content": ""}, None)))
    for index, piece in enumerate(fake.answer):
        if fake.cut_after is not None and index == fake.cut_after:
            assert request.transport is not None
            request.transport.close()
            return False
        if fake.oversized_after is not None and index == fake.oversized_after:
            await response.write(b"data: " + b"x" * (2 * 1024 * 1024))
            await response.write_eof()
            return False
        if fake.garbage_after is not None and index == fake.garbage_after:
            await send(b"data: {this is not json\n\n")
            await response.write_eof()
            return False
        if fake.error_event_after is not None and index == fake.error_event_after:
            await send(event(_error_body(500, "The server had an error mid-stream")))
            await response.write_eof()
            return False
        if index and fake.chunk_delay:
            await asyncio.sleep(fake.chunk_delay)
        if index == 1 and fake.hold_after_first is not None:
            await fake.hold_after_first.wait()
        await send(event(_chunk(model, created, {"content": piece}, None)))
    await send(event(_chunk(model, created, {}, "stop")))
    if include_usage:
        usage = _usage(fake.prompt_tokens, fake.completion_tokens())
        final = {**_chunk(model, created, {}, None), "choices": [], "usage": usage}
        await send(event(final))
    await send(b"data: [DONE]\n\n")
    return True


async def completions(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_UPSTREAM_KEY]
    received = request[RECEIVED_KEY]
    return web.json_response(
        {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": int(time.time()),
            "model": (received.body or {}).get("model", "gpt-3.5-turbo-instruct"),
            "choices": [
                {
                    "text": "".join(fake.answer),
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(fake.prompt_tokens, 4),
        }
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    received = request[RECEIVED_KEY]
    return web.json_response(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]}],
            "model": (received.body or {}).get("model", "text-embedding-3-small"),
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
    )


MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": "fake"}


async def list_models(request: web.Request) -> web.StreamResponse:
    return web.json_response({"object": "list", "data": [_model(m) for m in MODELS]})


async def get_model(request: web.Request) -> web.StreamResponse:
    name = request.match_info["model"]
    if name not in MODELS:
        return web.json_response(_error_body(404, f"The model `{name}` does not exist"), status=404)
    return web.json_response(_model(name))


def _response(fake: FakeUpstream, model: str, status: str, text: str) -> dict[str, Any]:
    """A Responses API response object; usage only once it is completed."""
    content = [{"type": "output_text", "text": text, "annotations": []}]
    message = {"type": "message", "id": "msg_fake", "status": status, "role": "assistant"}
    done = status == "completed"
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [{**message, "content": content}] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": fake.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": fake.completion_tokens(),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": fake.prompt_tokens + fake.completion_tokens(),
        }
        if done
        else None,
    }


async def responses(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_UPSTREAM_KEY]
    body = request[RECEIVED_KEY].body or {}
    model = str(body.get("model", "gpt-4o-mini"))
    text = "".join(fake.answer)
    if not body.get("stream"):
        return web.json_response(_response(fake, model, "completed", text))
    item = {"type": "message", "id": "msg_fake", "status": "in_progress", "role": "assistant"}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response(fake, model, "in_progress", "")},
        {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
        {"type": "response.content_part.added", **where, "part": part},
        *({"type": "response.output_text.delta", **where, "delta": p} for p in fake.answer),
        {"type": "response.output_text.done", **where, "text": text},
        {"type": "response.completed", "response": _response(fake, model, "completed", text)},
    ]

    async def write_events(response: web.StreamResponse) -> bool:
        for number, event in enumerate(events):
            if event["type"] == "response.output_text.delta" and fake.chunk_delay:
                await asyncio.sleep(fake.chunk_delay)
            data = json.dumps({**event, "sequence_number": number})
            payload = f"event: {event['type']}\ndata: {data}\n\n".encode()
            fake.stream_bytes.append(payload)
            await response.write(payload)
        return True

    return await _event_stream(request, fake, write_events)


_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


async def moderations(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_UPSTREAM_KEY]
    body = request[RECEIVED_KEY].body or {}
    result = {
        "flagged": fake.flagged,
        "categories": {name: fake.flagged and name == "violence" for name in _CATEGORIES},
        "category_scores": {name: 0.9 if fake.flagged else 0.01 for name in _CATEGORIES},
        "category_applied_input_types": {name: ["text"] for name in _CATEGORIES},
    }
    model = body.get("model", "omni-moderation-latest")
    return web.json_response({"id": "modr-fake", "model": model, "results": [result]})


async def image_generations(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_UPSTREAM_KEY]
    body = request[RECEIVED_KEY].body or {}
    image = {
        "b64_json": base64.b64encode(fake.image).decode(),
        "revised_prompt": body.get("prompt"),
    }
    count = body.get("n") if isinstance(body.get("n"), int) else 1
    return web.json_response({"created": int(time.time()), "data": [image] * count})


_AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg", "pcm": "audio/pcm"}


async def speech(request: web.Request) -> web.StreamResponse:
    """The audio in several writes, chunked, as OpenAI streams it."""
    fake = request.app[FAKE_UPSTREAM_KEY]
    body = request[RECEIVED_KEY].body or {}
    kind = _AUDIO_TYPES.get(str(body.get("response_format", "mp3")), "audio/mpeg")
    response = web.StreamResponse(headers={"Content-Type": kind})
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        for index, piece in enumerate(fake.speech):
            if index and fake.chunk_delay:
                await asyncio.sleep(fake.chunk_delay)
            await response.write(piece)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        fake.cancelled.set()  # the gateway hung up
        raise
    fake.finished.set()
    return response


def form_fields(received: Received) -> dict[str, bytes]:
    """The fields of a multipart form the fake received, each name with its bytes."""
    head = f"Content-Type: {received.headers.get('Content-Type', '')}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + received.raw)
    fields: dict[str, bytes] = {}
    parts = message.get_payload() if message.is_multipart() else []
    for part in parts if isinstance(parts, list) else []:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload
    return fields


async def transcriptions(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_UPSTREAM_KEY]
    fields = form_fields(request[RECEIVED_KEY])
    if "file" not in fields or "model" not in fields:
        error = _error_body(400, "Missing required parameter: 'file' or 'model'.")
        return web.json_response(error, status=400)
    text = "".join(fake.answer)
    if fields.get("response_format") == b"text":
        return web.Response(text=text + "\n", content_type="text/plain")
    usage = {"type": "duration", "seconds": 1}
    return web.json_response({"text": text, "usage": usage})


def create_fake_upstream(fake: FakeUpstream | None = None) -> web.Application:
    app = web.Application(middlewares=[_front])
    app[FAKE_UPSTREAM_KEY] = fake or FakeUpstream()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_post("/v1/images/generations", image_generations)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="SSE events in a stream without usage, [DONE] included (at least 4); default 7",
    )
    parser.add_argument(
        "--whole-events", action="store_true", help="write each event at once, never split"
    )
    args = parser.parse_args()
    fake = FakeUpstream(chunk_delay=args.chunk_delay, split_events=not args.whole_events)
    if args.events is not None:
        if args.events < 4:
            parser.error("--events must be at least 4: role, one delta, stop, [DONE]")
        # The role event, the stop event and [DONE] frame the content deltas.
        fake.answer = [f"word{n} " for n in range(args.events - 3)]
    web.run_app(
        create_fake_upstream(fake),
        host="127.0.0.1",
        port=args.port,
    )
