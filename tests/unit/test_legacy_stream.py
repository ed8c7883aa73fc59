"""The legacy route's stream, read and written fast: the same deltas and bytes as the slow way."""

from __future__ import annotations

import json

import pytest

from gateway.errors import UpstreamUnavailable
from gateway.http.sse import sse_event
from gateway.routes.legacy import _delta_event
from gateway.upstream.chat import ChatStream, Delta, _json
from gateway.upstream.exchange import Usage

TEXTS = ["Hello", "", 'quote " and \\ slash', "line\nbreak\u2028", "中文 ünï 🙂", "\x00\x1f\x7f"]


@pytest.mark.parametrize("text", TEXTS)
def test_a_delta_event_is_what_sse_event_writes(text):
    assert _delta_event(text) == sse_event({"delta": text}, event="delta")


def _chunk(content: object) -> bytes:
    body = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


@pytest.mark.parametrize("text", TEXTS)
def test_each_delta_is_read_as_sent(text):
    stream = ChatStream()
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}\n\n'
    assert stream.feed(_chunk(text) + usage + b"data: [DONE]\n\n") == [
        Delta(text),
        Delta("", Usage(3, 4)),
    ]
    assert stream.done


@pytest.mark.parametrize(
    "data",
    [
        b"data: {nope\n\n",
        b"data: \xff\xfe\n\n",
        b'data: {"error": {"message": "x"}}\n\n',
        b"data: 1\n\n",
    ],
)
def test_anything_but_a_chunk_breaks_the_stream(data):
    with pytest.raises(UpstreamUnavailable):
        ChatStream().feed(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}',
        b'  {"a": [1, 2.5, null, true]} ',
        b'{"a": 1} x',
        b'{"a": 1}{"b": 2}',
        b'"text"',
        b"",
        b"   ",
        b"[1,",
        b"Infinity",
        '{"k": "\u4e2d\u6587"}'.encode(),
        b'{"a": "\\ud800"}',
    ],
)
def test_a_chunk_is_parsed_as_json_loads_would(data):
    try:
        expected = json.loads(data)
    except ValueError:
        with pytest.raises(ValueError):
            _json(data)
    else:
        assert _json(data) == expected
