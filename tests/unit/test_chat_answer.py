"""A chat completion read whole: the request that asks for one, and its answer read or refused."""

from __future__ import annotations

import json

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.upstream.chat import Answer, ChatRequest, read_answer
from gateway.upstream.exchange import Usage

MESSAGES = [{"role": "user", "content": "Hi"}]


def completion(message: object = None, **fields: object) -> bytes:
    choice = {"index": 0, "message": message or {"role": "assistant", "content": "Hello"}}
    body = {"object": "chat.completion", "choices": [choice], **fields}
    return json.dumps(body).encode()


USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


@pytest.mark.parametrize(
    ("stream", "include_usage", "expected"),
    [
        (False, False, {"stream": False}),
        (False, True, {"stream": False}),  # a JSON answer carries its usage unasked
        (True, False, {"stream": True}),
        (True, True, {"stream": True, "stream_options": {"include_usage": True}}),
    ],
)
def test_the_request_body(stream, include_usage, expected):
    call = ChatRequest("m", MESSAGES, 5, include_usage=include_usage, stream=stream)
    assert json.loads(call.body()) == {
        "model": "m",
        "messages": MESSAGES,
        "max_tokens": 5,
        **expected,
    }


def test_a_request_streams_unless_told_otherwise():
    assert json.loads(ChatRequest("m", MESSAGES, 5).body())["stream"] is True


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (completion(usage=USAGE), Answer("Hello", Usage(11, 4))),
        (completion(), Answer("Hello", None)),
        (completion(usage=None), Answer("Hello", None)),
        (completion({"role": "assistant", "content": ""}), Answer("", None)),
        # A refusal (or tool calls): content null, no text, as a stream of it gave.
        (completion({"role": "assistant", "content": None, "refusal": "No."}), Answer("", None)),
        (completion({"role": "assistant", "content": "é\u2028😀"}), Answer("é\u2028😀", None)),
        (completion(usage=USAGE, error=None), Answer("Hello", Usage(11, 4))),
    ],
)
def test_an_answer_is_read(body, answer):
    assert read_answer(body) == answer


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{this is not json",
        b'{"choices": [{"message": {"content": "Hel',
        b'["Hello"]',
        b'"Hello"',
        b"null",
        b"\xff\xfe",
        b"[" * 100_000 + b"]" * 100_000,
        json.dumps({"error": {"message": "The server had an error", "type": "server_error"}}),
        completion(error={"message": "late"}),
        json.dumps({"object": "chat.completion"}),
        json.dumps({"choices": []}),
        json.dumps({"choices": {"0": {}}}),
        json.dumps({"choices": ["Hello"]}),
        json.dumps({"choices": [{"index": 0}]}),
        json.dumps({"choices": [{"message": "Hello"}]}),
        completion({"role": "assistant", "content": 42}),
        completion({"role": "assistant", "content": ["Hello"]}),
        completion({"role": "assistant"}),
        completion(usage={"prompt_tokens": "many"}),
    ],
    ids=lambda body: repr(body[:40]),
)
def test_anything_else_is_a_broken_answer(body):
    raw = body.encode() if isinstance(body, str) else body
    with pytest.raises(UpstreamUnavailable) as raised:
        read_answer(raw)
    assert (raised.value.status, raised.value.code) == (502, "upstream_stream_broken")
