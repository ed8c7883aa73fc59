"""Token budgets: the worst case reserved, the usage chunk asked for, and what a call is charged."""

from __future__ import annotations

import json

import pytest

from gateway.budget import Meter, prompt_estimate, usage_tokens, with_usage, worst_case


@pytest.mark.parametrize(
    ("call", "completes", "expected"),
    [
        ({}, True, 10 + 1024),
        ({"max_tokens": 50}, True, 10 + 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, True, 10 + 70),
        ({"max_tokens": 50, "n": 3}, True, 10 + 150),
        ({"max_tokens": 50, "best_of": 4, "n": 2}, True, 10 + 200),
        ({"max_tokens": 0}, True, 10 + 1024),
        ({"max_tokens": True}, True, 10 + 1024),
        ({"max_tokens": "50"}, True, 10 + 1024),
        ({"max_tokens": 50}, False, 10),
    ],
)
def test_worst_case_is_prompt_estimate_plus_every_completion(call, completes, expected):
    assert worst_case(call, 40, 1024, completes=completes) == expected


@pytest.mark.parametrize(("size", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (400, 100)])
def test_prompt_estimate_rounds_up(size, tokens):
    assert prompt_estimate(size) == tokens


def test_usage_is_spliced_in_leaving_every_other_byte():
    raw = b' {"model": "m",  "stream": true, "x": [1, 2.50]}'
    sent, hidden = with_usage(raw, json.loads(raw))
    assert hidden
    assert sent == b' {"stream_options":{"include_usage":true},' + raw[2:]
    assert json.loads(sent)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("options", "hidden", "merged"),
    [
        ({"include_usage": True}, False, {"include_usage": True}),
        ({"include_usage": False}, True, {"include_usage": True}),
        (
            {"include_obfuscation": False},
            True,
            {"include_obfuscation": False, "include_usage": True},
        ),
        (None, True, {"include_usage": True}),
    ],
)
def test_usage_asked_for_whatever_the_client_sent(options, hidden, merged):
    call = {"model": "m", "stream": True, "stream_options": options}
    raw = json.dumps(call).encode()
    sent, was_hidden = with_usage(raw, call)
    assert was_hidden is hidden
    assert json.loads(sent) == {**call, "stream_options": merged}
    if not hidden:
        assert sent == raw


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, 7),
        ({"prompt_tokens": 3, "total_tokens": 3}, 3),
        ({"total_tokens": 9}, 9),
        (None, None),
        ({"prompt_tokens": "3"}, None),
    ],
)
def test_usage_tokens(usage, tokens):
    assert usage_tokens(usage) == tokens


def chunk(content: str | None = None, usage: dict | None = None, choices: bool = True) -> bytes:
    data: dict = {"object": "chat.completion.chunk", "usage": usage}
    data["choices"] = [{"index": 0, "delta": {"content": content}}] if choices else []
    return json.dumps(data).encode()


USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}


def test_meter_counts_output_chunks_until_the_usage_arrives():
    meter = Meter(20)
    meter.answered = True
    assert meter.observe_event(chunk(""))
    assert meter.observe_event(chunk("Hel"))
    assert meter.observe_event(b": comment")
    assert meter.observe_event(b"[DONE]")
    assert meter.observe_event(b"{not json")
    assert meter.charge() == 20 + 1
    assert meter.observe_event(chunk(choices=False, usage=USAGE))
    assert meter.charge() == 15


@pytest.mark.parametrize("hide", [True, False])
def test_meter_hides_only_the_usage_chunk_it_asked_for(hide):
    meter = Meter(20, hide_usage=hide)
    assert meter.observe_event(chunk("x", usage=None))
    assert meter.observe_event(chunk("x", usage=USAGE))
    assert meter.observe_event(chunk(choices=False, usage=USAGE)) is not hide


def test_meter_charges_nothing_for_a_refusal_and_the_body_usage_otherwise():
    meter = Meter(20)
    assert meter.charge() == 0
    meter.answered = True
    meter.observe_body(b"not json")
    assert meter.charge() == 20
    meter.observe_body(json.dumps({"usage": USAGE}).encode())
    assert meter.charge() == 15


async def test_meter_settles_once():
    charges = []

    async def settle(tokens: int) -> None:
        charges.append(tokens)

    meter = Meter(5, settle=settle)
    meter.answered = True
    await meter.settle()
    await meter.settle()
    assert charges == [5]
