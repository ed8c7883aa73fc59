"""Every upstream failure is one WARNING naming the upstream's host, the route and the cause;
third-party chatter stays out of LOG_LEVEL=DEBUG unless LOG_LEVEL_LIBRARIES asks for it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.config import load_settings
from gateway.observe.logs import setup_logging
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import free_port

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
LEGACY = {"user_content": "Hi"}


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def call(client, route: str, stream: bool = False) -> int:
    if route == "/api":
        response = await client.post(route, json={**LEGACY, "stream": stream})
    else:
        response = await client.post(route, json={**CHAT, "stream": stream})
    await response.read()
    return response.status


@pytest.mark.parametrize("route", ["/api", "/v1/chat/completions"])
async def test_refused(make_client, caplog, route):
    port = free_port()
    client = await make_client(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
    caplog.set_level(logging.INFO)
    assert await call(client, route) == 502
    assert warnings(caplog) == [f"upstream 127.0.0.1:{port} failed POST {route}: refused"]


@pytest.mark.parametrize("route", ["/api", "/v1/chat/completions"])
async def test_timed_out(make_client, fake: FakeUpstream, fake_server, caplog, route):
    fake.hold_first_byte = asyncio.Event()
    client = await make_client(UPSTREAM_TIMEOUT="0.2")
    caplog.set_level(logging.INFO)
    try:
        assert await call(client, route) == 504
    finally:
        fake.hold_first_byte.set()
    host = f"127.0.0.1:{fake_server.port}"
    assert warnings(caplog) == [f"upstream {host} failed POST {route}: timed out"]


@pytest.mark.parametrize("route", ["/api", "/v1/chat/completions"])
async def test_reset_mid_stream(client, fake: FakeUpstream, fake_server, caplog, route):
    fake.cut_after = 2
    caplog.set_level(logging.INFO)
    assert await call(client, route, stream=True) == 200
    (line,) = warnings(caplog)
    assert line.startswith(f"upstream 127.0.0.1:{fake_server.port} failed POST {route}: ")
    assert line.endswith(("reset mid-stream", "stream ended early"))


@pytest.mark.parametrize(
    ("switches", "cause"),
    [
        ({"answer_fault": "reset"}, "reset mid-body"),
        ({"answer_fault": "garbage"}, "garbled answer"),
        ({"answer_fault": "error"}, "garbled answer"),
        ({"hold_answer": asyncio.Event()}, "timed out mid-body"),
    ],
    ids=["reset", "garbage", "error", "stalled"],
)
async def test_a_broken_legacy_json_answer(
    make_client, fake: FakeUpstream, fake_server, caplog, switches, cause
):
    for name, value in switches.items():
        setattr(fake, name, value)
    client = await make_client(UPSTREAM_TIMEOUT="0.3")
    caplog.set_level(logging.INFO)
    try:
        assert await call(client, "/api") in (502, 504)
    finally:
        if fake.hold_answer is not None:
            fake.hold_answer.set()
    assert warnings(caplog) == [f"upstream 127.0.0.1:{fake_server.port} failed POST /api: {cause}"]


@pytest.mark.parametrize(
    ("status", "cause"),
    [(500, "status 500 (server_error)"), (429, "status 429 (invalid_request_error)")],
)
@pytest.mark.parametrize("route", ["/api", "/v1/chat/completions", "/v1/responses"])
async def test_status(client, fake: FakeUpstream, fake_server, caplog, route, status, cause):
    fake.status = status
    caplog.set_level(logging.INFO)
    if route == "/v1/responses":
        response = await client.post(route, json={"model": "m", "input": "Hi"})
        await response.read()
    else:
        await call(client, route)
    assert warnings(caplog) == [
        f"upstream 127.0.0.1:{fake_server.port} failed POST {route}: {cause}"
    ]


async def test_a_good_call_warns_nothing(client, caplog):
    caplog.set_level(logging.DEBUG)
    assert await call(client, "/v1/chat/completions", stream=True) == 200
    assert await call(client, "/api") == 200
    assert warnings(caplog) == []


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("aiohttp", "asyncio", "httpx", "openai", "redis"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("env", "gateway_debug", "libraries_debug"),
    [
        ({"LOG_LEVEL": "DEBUG"}, True, False),
        ({"LOG_LEVEL": "DEBUG", "LOG_LEVEL_LIBRARIES": "DEBUG"}, True, True),
        ({"LOG_LEVEL": "INFO", "LOG_LEVEL_LIBRARIES": "DEBUG"}, False, False),
    ],
)
def test_library_chatter_stays_out_unless_asked(env, gateway_debug, libraries_debug):
    setup_logging(load_settings(env))
    assert logging.getLogger("gateway.access").isEnabledFor(logging.DEBUG) is gateway_debug
    for name in ("aiohttp.client", "asyncio", "httpx", "openai._base_client", "redis"):
        assert logging.getLogger(name).isEnabledFor(logging.DEBUG) is libraries_debug, name
