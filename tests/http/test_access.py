"""Request IDs on every response, and the one access-log line each request leaves."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.keys import EXCHANGE_KEY, UPSTREAM_KEY
from gateway.observe.logs import JsonFormatter, TextFormatter
from gateway.upstream.chat import ChatRequest
from tests.support.fake_upstream import FakeUpstream

GENERATED = re.compile(r"[0-9a-f]{32}")
SECRET_KEY = "sk-test-secret-key-0123456789"
SECRET_PROMPT = "my very private prompt about the moon"


def access_lines(caplog) -> list[dict]:
    """The access records, formatted exactly as LOG_FORMAT=json prints them."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "gateway.access"]


class AccessWaiter(logging.Handler):
    """Wakes a test when the next access line is logged, so it never guesses with a sleep."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.logged.set()


@pytest.fixture
def access_waiter():
    waiter = AccessWaiter()
    logger = logging.getLogger("gateway.access")
    logger.addHandler(waiter)
    yield waiter
    logger.removeHandler(waiter)


def gateway_output(caplog) -> str:
    """Everything our own loggers said, in both formats (the SDK's loggers are capped at WARNING
    by setup_logging, and the test server's aiohttp.access log is off in production)."""
    ours = [r for r in caplog.records if r.name.split(".")[0] == "gateway"]
    text = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return "\n".join(f(r) for r in ours for f in (JsonFormatter().format, text.format))


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        ("abc-123", True),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("trace.id:7_x", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("-starts-with-dash", False),
        ("has space", False),
        ("semi;colon", False),
        ("<script>", False),
        ("", False),
    ],
)
async def test_request_id_is_kept_only_when_short_and_safe(client, offered, kept):
    response = await client.get("/healthz", headers={"X-Request-ID": offered})
    returned = response.headers["X-Request-ID"]
    if kept:
        assert returned == offered
    else:
        assert GENERATED.fullmatch(returned)


async def test_each_request_gets_its_own_id(client):
    first = (await client.get("/healthz")).headers["X-Request-ID"]
    second = (await client.get("/healthz")).headers["X-Request-ID"]
    assert GENERATED.fullmatch(first) and GENERATED.fullmatch(second) and first != second


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/nowhere", None, 404),
        ("PUT", "/api", None, 405),
        ("GET", "/api", None, 403),
        ("POST", "/api", b'{"user_content": ""}', 400),
        ("POST", "/api", io.BytesIO(b"x" * (1024 * 1024 + 1)), 413),
    ],
)
async def test_errors_carry_the_request_id(client, method, path, body, status):
    headers = {"X-Request-ID": "err-1", "Content-Type": "application/json"}
    response = await client.request(method, path, data=body, headers=headers)
    assert response.status == status
    assert response.headers["X-Request-ID"] == "err-1"


async def test_upstream_failure_carries_the_request_id(client, fake: FakeUpstream):
    fake.status = 500
    response = await client.post(
        "/api", json={"user_content": "Hi"}, headers={"X-Request-ID": "up-1"}
    )
    assert response.status == 502
    assert response.headers["X-Request-ID"] == "up-1"


async def test_a_stream_carries_the_request_id(client):
    response = await client.post(
        "/api", json={"user_content": "Hi", "stream": True}, headers={"X-Request-ID": "sse-1"}
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Request-ID"] == "sse-1"
    assert b"event: done" in await response.read()


async def test_one_json_line_per_request_without_key_or_prompt(client, caplog):
    caplog.set_level(logging.DEBUG)
    body = {"user_content": SECRET_PROMPT, "api_key": SECRET_KEY, "system_content": SECRET_PROMPT}
    response = await client.post(
        "/api?api_key=" + SECRET_KEY,
        json=body,
        headers={"X-Request-ID": "log-1", "Authorization": f"Bearer {SECRET_KEY}"},
    )
    assert response.status == 200
    lines = access_lines(caplog)
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "log-1"
    assert line["client_ip"] == "127.0.0.1"
    assert (line["method"], line["route"], line["status"]) == ("POST", "/api", 200)
    assert line["message"] == "POST /api 200"
    assert line["level"] == "info" and line["time"]
    assert line["duration_ms"] >= line["upstream_ms"] >= line["upstream_first_byte_ms"] >= 0
    output = gateway_output(caplog)
    assert SECRET_KEY not in output
    assert "private prompt" not in output


async def test_a_stream_is_logged_once_it_ends(client, fake: FakeUpstream, caplog, access_waiter):
    caplog.set_level(logging.INFO)
    fake.hold_after_first = asyncio.Event()
    response = await client.post("/api", json={"user_content": "Hi", "stream": True})
    await response.content.readuntil(b"\n\n")
    assert access_lines(caplog) == []
    fake.hold_after_first.set()
    await response.read()
    # The handler returns after the client has read the last byte.
    await asyncio.wait_for(access_waiter.logged.wait(), timeout=10)
    lines = access_lines(caplog)
    assert [(line["route"], line["status"]) for line in lines] == [("/api", 200)]


async def test_probes_are_logged_at_debug(client, caplog):
    caplog.set_level(logging.DEBUG)
    await client.get("/healthz")
    (line,) = access_lines(caplog)
    assert (line["route"], line["level"]) == ("/healthz", "debug")


async def test_tokens_are_logged_when_the_upstream_reports_them(
    aiohttp_client, settings, translator, caplog
):
    app = create_app(settings, translator=translator)

    async def ask(request):
        call = ChatRequest("gpt-4o-mini", [{"role": "user", "content": "Hi"}], 5, True)
        chunks = request.app[UPSTREAM_KEY].chat_chunks(
            call, api_key="sk-x", exchange=request[EXCHANGE_KEY]
        )
        text = "".join([d.text async for deltas in chunks for d in deltas])
        return web.Response(text=text)

    app.router.add_get("/probe-usage", ask)
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO)
    response = await client.get("/probe-usage")
    assert await response.text() == "Hello, world!"
    (line,) = access_lines(caplog)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 4)


async def test_tokens_of_a_legacy_answer_are_logged_without_a_budget(client, caplog, access_waiter):
    caplog.set_level(logging.INFO)
    response = await client.post("/api", json={"user_content": "Hi"})
    assert response.status == 200
    await response.read()
    await asyncio.wait_for(access_waiter.logged.wait(), timeout=10)
    (line,) = access_lines(caplog)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 4)


async def test_the_limit_decision_is_logged_and_a_429_carries_the_id(make_client, caplog):
    client = await make_client(MINUTE_LIMIT=1)
    caplog.set_level(logging.INFO)
    assert (await client.post("/api", json={"user_content": "Hi"})).status == 200
    refused = await client.post(
        "/api", json={"user_content": "Hi"}, headers={"X-Request-ID": "r-2"}
    )
    assert refused.status == 429
    assert refused.headers["X-Request-ID"] == "r-2"
    lines = access_lines(caplog)
    assert [(x["status"], x["limit"], x["limit_source"]) for x in lines] == [
        (200, "allowed", "embedded"),
        (429, "limited:minute", "embedded"),
    ]
    assert "upstream_ms" not in lines[1]


@pytest.mark.parametrize("stream", [False, True])
async def test_tokens_of_a_metered_v1_call_are_logged(make_client, caplog, access_waiter, stream):
    client = await make_client(TOKENS_PER_MINUTE=100_000)
    caplog.set_level(logging.INFO)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    response = await client.post("/v1/chat/completions", json={**body, "stream": stream})
    assert response.status == 200
    await response.read()
    await asyncio.wait_for(access_waiter.logged.wait(), timeout=10)
    (line,) = access_lines(caplog)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 4)


async def test_tokens_of_a_v1_json_answer_are_logged_without_a_budget(
    client, caplog, access_waiter
):
    caplog.set_level(logging.INFO)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    await response.read()
    await asyncio.wait_for(access_waiter.logged.wait(), timeout=10)
    (line,) = access_lines(caplog)
    assert (line["prompt_tokens"], line["completion_tokens"]) == (11, 4)


async def test_a_hostile_path_cannot_forge_an_access_line(client, caplog):
    caplog.set_level(logging.INFO)
    response = await client.get("/v1/x%0AINFO%20gateway.access:%20GET%20/%20200%1B%5B31m")
    assert response.status == 404
    text = TextFormatter("%(levelname)s %(name)s: %(message)s")
    (line,) = [text.format(r) for r in caplog.records if r.name == "gateway.access"]
    assert "\n" not in line and "\x1b" not in line
    assert line.split(" ", 3)[3].startswith("/v1/x%0AINFO%20gateway.access:%20GET%20/%20200%1B")
