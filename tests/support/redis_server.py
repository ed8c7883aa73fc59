"""Redis for the tests: the shared server, or a private redis-server a test may stop and start.

The shared server is REDIS_URL, else 127.0.0.1:6379, else a redis-server started for the session.
Nothing here flushes it: each test works under its own KEY_PREFIX and deletes its own keys.
Under CI=true a missing Redis fails the run instead of skipping the tests that need it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

READY_WAIT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


class RedisServer:
    """A redis-server of our own on a loopback port, without persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_WAIT
        while not answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=READY_WAIT)
            self.process = None


def _shared_url() -> Iterator[str]:
    env = os.environ.get("REDIS_URL")
    candidates = [env] if env else ["redis://127.0.0.1:6379"]
    for url in candidates:
        if answers(url):
            yield url
            return
    if shutil.which("redis-server") and not env:
        server = RedisServer()
        server.start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    message = f"no Redis at {candidates[0]} and no redis-server to start"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: a missing Redis is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The shared Redis; never flushed."""
    yield from _shared_url()


@pytest.fixture
def key_prefix() -> str:
    return f"gwtest-{uuid.uuid4().hex[:12]}"


async def delete_prefix(client: redis.asyncio.Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def real_redis(redis_url: str, key_prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the shared Redis; the test's keys (under key_prefix) are deleted after it."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await delete_prefix(client, key_prefix)
        await client.aclose()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server, started; the test may stop and start it."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed (CI=true: a missing Redis is a failure)")
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
