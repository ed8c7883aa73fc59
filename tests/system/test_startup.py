"""`python -m gateway` explains itself: one block at start, risky settings, the drain's lines."""

from __future__ import annotations

import os
import signal

import aiohttp
import pytest

from tests.support.processes import (
    ROOT,
    Process,
    base_env,
    free_port,
    gateway,
    require,
    wait_until_refused,
    wait_until_serving,
)

pytestmark = pytest.mark.e2e

KEY = "sk-do-not-print-me-4242"
GATEWAY_KEY = "gw-startup-0123456789abcdef"


def info_lines(process: Process) -> list[str]:
    """The messages the gateway's own loggers wrote at INFO."""
    lines = process.text_lines("INFO")
    return [line.split(": ", 1)[1] for line in lines if line.startswith("gateway")]


async def test_the_block_names_every_setting_that_matters_and_never_the_key(tmp_path):
    port = free_port()
    proc = gateway(
        port,
        tmp_path / "gateway.log",
        API_KEY=KEY,
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        ROUTE="api",
        MINUTE_LIMIT="3",
        HOUR_LIMIT="50",
        TOKENS_PER_MINUTE="40000",
        REDIS_URL="redis://:hunter2-secret@127.0.0.1:6390/3",
        REDIS_FAILURE_MODE="closed",
        GATEWAY_KEYS=f"alice:{GATEWAY_KEY} minute_limit=5,bob:{GATEWAY_KEY[::-1]}",
        TRUSTED_PROXIES="10.0.0.0/24",
        LANG="zh_TW.UTF-8",
        OPENAI_ROUTES="chat,models,responses",
        PLAYGROUND="0",
        SHUTDOWN_GRACE="2",
    )
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc)
        proc.signal(signal.SIGTERM)
        assert await proc.wait(30) == 0
    finally:
        proc.close()
    output = proc.output()
    assert KEY not in output and "hunter2" not in output and GATEWAY_KEY not in output
    lines = info_lines(proc)
    assert lines[0].startswith("chatgpt-gateway ")
    assert lines[1:] == [
        f"listening on http://127.0.0.1:{port} (legacy route /api)",
        "upstream http://127.0.0.1:9/v1",
        "server API_KEY set",
        "limits: 3 per minute, 50 per hour",
        "token budgets: 40000 per minute, 1024 reserved by default",
        "limiter: Redis at 127.0.0.1:6390 database 3, REDIS_FAILURE_MODE=closed, REPLICAS=1",
        "gateway keys: 2 (1 with limits of their own)",
        "trusted proxies: 10.0.0.0/24",
        "language: zh_TW",
        "OpenAI routes: chat,models,responses",
        "playground: off",
        "draining: 0 requests in flight, 0 of them streams; SHUTDOWN_GRACE=2s",
        "stopped",
    ]
    # HOST is loopback here: no open-relay warning. The one warning: nothing answers on 6390.
    assert proc.text_lines("WARNING") == [
        "gateway.limits.limiter: Redis at 127.0.0.1:6390 database 3 did not answer at start-up "
        "(ConnectionError); REDIS_FAILURE_MODE=closed decides until it does"
    ]


async def test_an_open_relay_is_a_warning_and_the_defaults_read_plainly(tmp_path):
    port = free_port()
    proc = gateway(port, tmp_path / "gateway.log", API_KEY=KEY, REDIS_URL="", HOST="0.0.0.0")
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc)
    finally:
        proc.close()
    output = proc.output()
    assert KEY not in output
    lines = info_lines(proc)
    assert "limits: none" in lines and "token budgets: none" in lines
    assert "limiter: embedded (in-process, one replica)" in lines
    assert "playground: on at /playground" in lines
    assert any(
        line.startswith("gateway: open relay: API_KEY is set and HOST=0.0.0.0 is not loopback")
        for line in proc.text_lines("WARNING")
    )


async def test_a_cluster_is_named_as_such(tmp_path):
    port = free_port()
    proc = gateway(port, tmp_path / "gateway.log", REDIS_URL="redis+cluster://127.0.0.1:7000")
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc)
    finally:
        proc.close()
    lines = info_lines(proc)
    assert "limiter: Redis Cluster at 127.0.0.1:7000, REDIS_FAILURE_MODE=local, REPLICAS=1" in lines
    assert "server API_KEY not set (clients bring their own)" in lines


async def test_make_try_serves_from_any_directory_and_ctrl_c_stops_both(tmp_path):
    make = require("make")
    port = free_port()
    env = base_env(PORT=str(port))
    # Its own process group, as a terminal gives it: Ctrl-C reaches make and both children.
    proc = Process(
        [make, "-C", str(ROOT), "try"],
        log=tmp_path / "try.log",
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", proc, deadline=120)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/api", json={"user_content": "Hi"}) as response,
        ):
            assert (await response.json())["current_response"] == "Hello, world!"
        os.killpg(proc.pid, signal.SIGINT)
        await proc.wait(30)
        await wait_until_refused("127.0.0.1", port)
        assert not group_alive(proc.pid), proc.output()
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
