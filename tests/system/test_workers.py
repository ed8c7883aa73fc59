"""WORKERS=2: two processes on one port share the limits through Redis and stop together."""

from __future__ import annotations

import asyncio
import collections
import os
import signal

import aiohttp
import pytest
import redis.asyncio

from tests.support.fake_upstream import FakeUpstream, create_fake_upstream
from tests.support.processes import (
    Process,
    free_port,
    gateway,
    wait_until_refused,
    wait_until_serving,
)
from tests.support.redis_server import delete_prefix

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

LIMIT = 20
REQUESTS = 100


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def until_listening(process: Process, count: int, deadline: float = 30.0) -> None:
    """Until `count` workers have logged that they listen (each logs once its port is bound)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while True:
        listening = {
            line["pid"]
            for line in process.json_lines()
            if str(line["message"]).startswith("listening on ")
        }
        if len(listening) >= count:
            return
        assert loop.time() < give_up, f"{len(listening)} of {count} workers listening"
        await asyncio.sleep(0.05)


@pytest.fixture
async def workers(aiohttp_server, redis_url, key_prefix, tmp_path):
    upstream = await aiohttp_server(
        create_fake_upstream(FakeUpstream(answer=["ok"])), host="127.0.0.1"
    )
    port = free_port()
    process = gateway(
        port,
        tmp_path / "gateway.log",
        OPENAI_BASE_URL=str(upstream.make_url("/v1")),
        API_KEY="sk-test",
        ROUTE="api",
        REDIS_URL=redis_url,
        KEY_PREFIX=key_prefix,
        MINUTE_LIMIT=str(LIMIT),
        # Loaded on two cores, a call may wait; closed mode turns any fallback into a visible 503
        # rather than a count in one worker.
        REDIS_TIMEOUT="5",
        REDIS_FAILURE_MODE="closed",
        LOG_FORMAT="json",
        SHUTDOWN_GRACE="10",
        WORKERS="2",
    )
    try:
        await wait_until_serving(f"http://127.0.0.1:{port}/healthz", process)
        # One worker may answer before the other has bound the port: wait for both.
        await until_listening(process, 2)
        yield port, process
    finally:
        process.close()
        async with redis.asyncio.Redis.from_url(redis_url) as conn:
            await delete_prefix(conn, key_prefix)


async def test_two_workers_admit_exactly_the_limit_then_stop_together(workers):
    port, process = workers
    # One connection per request, so that the kernel spreads them over both workers.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def ask() -> int:
            url = f"http://127.0.0.1:{port}/api"
            async with session.post(url, json={"user_content": "Hi"}) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*[ask() for _ in range(REQUESTS)])
    assert collections.Counter(statuses) == {200: LIMIT, 429: REQUESTS - LIMIT}

    lines = process.json_lines()
    started = {line["pid"] for line in lines if str(line["message"]).startswith("worker ")}
    served = {line["pid"] for line in lines if line.get("route") == "/api"}
    assert len(started) == 2 and process.pid not in started
    assert served == started

    process.signal(signal.SIGTERM)
    assert await process.wait(30) == 0
    await wait_until_refused("127.0.0.1", port)
    assert all(gone(int(str(pid))) for pid in started)


def test_workers_without_redis_is_a_one_line_config_error(tmp_path):
    process = gateway(free_port(), tmp_path / "gateway.log", WORKERS="2")
    try:
        assert process.popen.wait(30) == 2
        assert process.output().strip().splitlines() == [
            "gateway: configuration error: WORKERS=2 needs REDIS_URL: without it each worker "
            "would count its clients' requests alone"
        ]
    finally:
        process.close()
