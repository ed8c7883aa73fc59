"""Token budgets: the worst case reserved, the usage chunk asked for, and what a call is charged."""

from __future__ import annotations

import json

import pytest

from gateway.config import load_settings
from gateway.limits.admission import Admission
from gateway.limits.budget import Meter, prompt_estimate, with_usage, worst_case
from gateway.limits.limiter import Limiter
from gateway.upstream.exchange import parse_usage
from tests.support.clock import hit
from tests.unit.test_limiter import REAL, _backend


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
    parsed = parse_usage(usage)
    assert (parsed.total if parsed is not None else None) == tokens


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


class RecordingLimiter(Limiter):
    def __init__(self) -> None:
        super().__init__(load_settings({"TOKENS_PER_MINUTE": "100", "DEFAULT_RESERVE_TOKENS": "1"}))
        self.charges: list[int] = []

    async def settle(self, key, reservation, tokens, **others):
        self.charges.append(tokens)
        await super().settle(key, reservation, tokens, **others)


async def test_an_admission_settles_once():
    limiter = RecordingLimiter()
    admission = Admission(limiter, "c", metered=True)
    meter = await admission.reserve(20, 30)
    meter.answered = True
    await admission.settle()
    await admission.settle()
    assert limiter.charges == [5]


# The limiter's token budgets, on every backend (embedded, fakeredis, real Redis).

S = 1_000_000
T0 = 1_700_000_000_123_457


@pytest.fixture(params=["embedded", "fake", REAL])
async def backend(request, key_prefix):
    async for make in _backend(request, request.param, key_prefix):
        yield make


def budget(decision, name: str = "minute"):
    return next(b for b in decision.budgets if b.name == name)


async def test_tokens_are_reserved_and_refused_with_an_exact_wait(backend):
    limiter = backend(TOKENS_PER_MINUTE=100)
    first = await hit(limiter, "c", tokens=60, at=T0)
    assert first.allowed and first.reservation.tokens == 60
    assert (budget(first).remaining, budget(first).reset, budget(first).unit) == (40, 60, "tokens")
    refused = await hit(limiter, "c", tokens=50, at=T0 + 10 * S)
    assert (refused.allowed, refused.retry_after, refused.reservation) == (False, 50, None)
    assert refused.blocked_by == budget(refused) and budget(refused).remaining == 40
    assert (await hit(limiter, "c", tokens=40, at=T0 + 10 * S)).allowed
    full = await hit(limiter, "c", tokens=1, at=T0 + 20 * S)
    assert (full.allowed, full.retry_after) == (False, 40)
    assert not (await hit(limiter, "c", tokens=60, at=T0 + 60 * S - 1)).allowed
    assert (await hit(limiter, "c", tokens=60, at=T0 + 60 * S)).allowed


async def test_settling_keeps_the_time_and_charges_what_was_used(backend):
    limiter = backend(TOKENS_PER_MINUTE=100)
    held = await hit(limiter, "c", tokens=90, at=T0)
    assert not (await hit(limiter, "c", tokens=85, at=T0 + S)).allowed
    await limiter.settle("c", held.reservation, 15)
    assert (await hit(limiter, "c", tokens=85, at=T0 + S)).allowed
    refused = await hit(limiter, "c", tokens=1, at=T0 + 2 * S)
    assert (refused.retry_after, budget(refused).remaining) == (58, 0)
    # Settling what already left the windows changes nothing.
    await limiter.settle("c", held.reservation, 1000)
    assert (await hit(limiter, "c", tokens=100, at=T0 + 61 * S + 1)).allowed


async def test_a_refusal_records_neither_the_request_nor_the_tokens(backend):
    limiter = backend(MINUTE_LIMIT=5, TOKENS_PER_MINUTE=100)
    assert (await hit(limiter, "c", tokens=80, at=T0)).allowed
    for i in range(3):
        refused = await hit(limiter, "c", tokens=30, at=T0 + i)
        assert refused.blocked_by.unit == "tokens"
    admitted = await hit(limiter, "c", tokens=20, at=T0 + 5)
    assert admitted.allowed and admitted.tightest.remaining == 3 and budget(admitted).remaining == 0


async def test_a_request_window_refuses_before_any_token_is_reserved(backend):
    limiter = backend(MINUTE_LIMIT=1, TOKENS_PER_MINUTE=1000)
    assert (await hit(limiter, "c", tokens=10, at=T0)).allowed
    refused = await hit(limiter, "c", tokens=10, at=T0 + S)
    assert (refused.window, refused.blocked_by.unit, refused.retry_after) == (
        "minute",
        "requests",
        59,
    )
    assert budget(refused).remaining == 990


async def test_the_day_budget_outlasts_the_minute(backend):
    limiter = backend(TOKENS_PER_MINUTE=100, TOKENS_PER_DAY=150)
    assert (await hit(limiter, "c", tokens=100, at=T0)).allowed
    refused = await hit(limiter, "c", tokens=60, at=T0 + 61 * S)
    assert (refused.window, refused.retry_after) == ("day", 86400 - 61)
    assert budget(refused, "minute").remaining == 100
    assert (await hit(limiter, "c", tokens=50, at=T0 + 61 * S)).allowed


async def test_without_tokens_a_budget_changes_nothing(backend):
    limiter = backend(TOKENS_PER_MINUTE=10)
    plain = await hit(limiter, "c", at=T0)
    assert plain.allowed and plain.budgets == () and plain.reservation is None
    assert (await hit(limiter, "c", tokens=10, at=T0)).allowed


class Oracle:
    """Token budgets the plain way: every charge kept, every sum made from scratch."""

    def __init__(self, budgets: list[tuple[int, int]]) -> None:
        self.budgets = budgets
        self.charges: dict[str, list[list[int]]] = {}

    def hit(self, client: str, need: int, now: int) -> tuple[bool, int, list[int]]:
        charges = self.charges.setdefault(client, [])
        waits, left = [], []
        for length, limit in self.budgets:
            inside = [c for c in charges if c[0] > now - length]
            used = sum(c[1] for c in inside)
            left.append(limit - used)
            if used + need > limit:
                excess = used + need - limit
                for at, tokens in inside:
                    excess -= tokens
                    if excess <= 0:
                        waits.append(at + length - now)
                        break
        if waits:
            return False, -(-max(waits) // S), [max(x, 0) for x in left]
        charges.append([now, need])
        return True, 0, [x - need for x in left]

    def settle(self, client: str, index: int, tokens: int) -> None:
        self.charges[client][index][1] = tokens


async def test_budgets_agree_with_a_plain_model_over_random_calls(backend):
    import random

    rng = random.Random(20261126)
    limiter = backend(TOKENS_PER_MINUTE=200, TOKENS_PER_DAY=700)
    oracle = Oracle([(60 * S, 200), (86400 * S, 700)])
    held: dict[str, list] = {"a": [], "b": []}
    outcomes = []
    now = T0
    for _ in range(250):
        now += rng.choice([0, 1, rng.randrange(S), rng.randrange(30 * S), rng.randrange(3600 * S)])
        client = rng.choice("ab")
        if held[client] and rng.random() < 0.4:
            index, reservation = held[client].pop(rng.randrange(len(held[client])))
            used = rng.randrange(reservation.tokens + 1)
            await limiter.settle(client, reservation, used)
            oracle.settle(client, index, used)
            continue
        need = rng.randrange(1, 120)
        decision = await hit(limiter, client, tokens=need, at=now)
        allowed, wait, left = oracle.hit(client, need, now)
        got = (decision.allowed, decision.retry_after, [b.remaining for b in decision.budgets])
        assert got == (allowed, wait, left)
        outcomes.append(allowed)
        if allowed:
            held[client].append((len(oracle.charges[client]) - 1, decision.reservation))
    assert outcomes.count(True) > 50 and outcomes.count(False) > 50
