"""Schemathesis against a live gateway and the fake upstream, from the gateway's own /openapi.json.

The document is loaded from the running gateway; Schemathesis draws POSITIVE valid and NEGATIVE
invalid requests for every operation in it (derandomized, so a run is repeatable), and they are
sent over loopback from a few threads while the gateway serves on the test's loop. With the
upstream behaving: no 5xx, every answer conforms to the document (status, content type, schema,
a required X-Request-ID), every error is in its route's envelope, every valid request with the
gateway key is answered 2xx (or with a status its operation names). Then the valid chat calls
go again as streams while the upstream cuts them or sends an error event: every stream that
started ends in the documented error event, every other error is a 502 or 504 in the envelope.

Requests: 1,200 valid + 800 invalid, then the 345 valid chat calls (legacy route and
/v1/chat/completions) again under 2 faults: 2,690. With tests/http/test_fuzz.py (5,200 generated
and 400 raw malformed) the suite sends 8,290 generated requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
import schemathesis
from schemathesis import Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.fake_upstream import FakeUpstream
from tests.support.fuzzing import ENV, KEY, check_envelope, check_stream, generate

POSITIVE = 1200
NEGATIVE = 800
THREADS = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH = {"Authorization": f"Bearer {KEY}"}
FAULTS: dict[str, dict[str, Any]] = {
    "cut": {"cut_after": 1},
    "error event": {"error_event_after": 1},
}
# The calls whose streams the fake upstream can break.
BREAKABLE = ("POST /api", "POST /v1/chat/completions")

Check = Callable[[Case, Response], None]


def draw(schema: Any) -> list[tuple[Case, dict[str, str]]]:
    """The cases to send, each with the headers it is sent with: every valid case bears the
    gateway key, and three invalid ones in four, so that their bodies are read."""
    positive = generate(schema.as_strategy(GenerationMode.POSITIVE), POSITIVE)
    negative = generate(schema.as_strategy(GenerationMode.NEGATIVE), NEGATIVE)
    keyed = [(case, AUTH) for case in positive]
    return keyed + [(case, AUTH if n % 4 else {}) for n, case in enumerate(negative)]


def send_all(base: str, cases: list[tuple[Case, dict[str, str]]], check: Check) -> list[str]:
    """Send the cases from THREADS threads, each with its own session; the problems found."""
    local = threading.local()
    problems: list[str] = []

    def one(case: Case, headers: dict[str, str]) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = case.call(base_url=base, session=session, headers=headers, timeout=30)
        try:
            check(case, response)
        except Exception as exc:
            sent = f"{case.operation.label} {case.body!r:.200} {case.query!r:.100}"
            problems.append(f"{sent} -> {response.status_code}: {str(exc)[:600]}")

    with ThreadPoolExecutor(THREADS) as pool:
        for done in [pool.submit(one, case, headers) for case, headers in cases]:
            done.result()
    return problems


def header(response: Response, name: str) -> str:
    return next(iter(response.headers.get(name.lower(), [])), "")


def whole_floats(case: Case) -> bool:
    """A /v1 cap given as 2.0: valid JSON Schema, refused by the caps (the document says so)."""
    body = case.body if isinstance(case.body, dict) else {}
    fields = ("max_tokens", "max_completion_tokens", "n")
    return on_v1(case) and any(isinstance(body.get(name), float) for name in fields)


def on_v1(case: Case) -> bool:
    return str(case.operation.path).startswith("/v1/")


def well_behaved(case: Case, response: Response) -> None:
    assert header(response, "X-Request-ID"), "no X-Request-ID"
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500
    if response.status_code >= 400:
        check_envelope(on_v1(case), response.status_code, response.content)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    # A valid call is answered 2xx, or with a status its operation names (MAX_BODY_BYTES bounds
    # the whole body, which the document cannot say field by field).
    named = {int(code) for code in case.operation.responses.status_codes if code.isdigit()}
    if positive and response.status_code not in named | {413} and not whole_floats(case):
        assert response.status_code < 400, response.content[:300]
    if header(response, "Content-Type").startswith("text/event-stream"):
        check_stream(on_v1(case), response.content)


def faulty(broken: list[Case]) -> Check:
    """The check while the upstream breaks its streams; `broken` gathers the streams it broke."""

    def check(case: Case, response: Response) -> None:
        assert header(response, "X-Request-ID"), "no X-Request-ID"
        if response.status_code >= 400:
            # The upstream's fault is a 502 or 504; a 4xx is the call's own (413, say).
            assert response.status_code < 500 or response.status_code in (502, 504)
            check_envelope(on_v1(case), response.status_code, response.content)
        elif header(response, "Content-Type").startswith("text/event-stream"):
            check_stream(on_v1(case), response.content)
            last = response.content.rstrip().rsplit(b"\n\n", 1)[-1]
            assert b"error" in last, last
            broken.append(case)

    return check


async def test_schemathesis_cases_from_the_gateways_own_document(make_client, fake: FakeUpstream):
    client = await make_client(**ENV)
    base = str(client.make_url("")).rstrip("/")
    schema = await asyncio.to_thread(schemathesis.openapi.from_url, base + "/openapi.json")
    schema.validate()
    cases = await asyncio.to_thread(draw, schema)
    assert {case.operation.label for case, _ in cases} == {
        operation.ok().label for operation in schema.get_all_operations()
    }
    problems = await asyncio.to_thread(send_all, base, cases, well_behaved)
    assert not problems, "\n\n".join(problems[:5])

    # The valid chat calls again, each asking for a stream, while the upstream breaks it.
    breakable = [pair for pair in cases[:POSITIVE] if pair[0].operation.label in BREAKABLE]
    for case, _ in breakable:
        case.body = {**case.body, "stream": True}
    assert len(cases) + len(FAULTS) * len(breakable) >= 2500
    for switches in FAULTS.values():
        fake.cut_after = switches.get("cut_after")
        fake.error_event_after = switches.get("error_event_after")
        broken: list[Case] = []
        problems = await asyncio.to_thread(send_all, base, breakable, faulty(broken))
        assert not problems, "\n\n".join(problems[:5])
        assert len(broken) > len(breakable) // 2
