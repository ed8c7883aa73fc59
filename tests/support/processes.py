"""Helpers for tests that run real processes on loopback: free ports, readiness, clean stops."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.redis_server import free_port as free_port

ROOT = Path(__file__).resolve().parents[2]
# Long enough for a cold start on a loaded two-core machine; a wait that ends early costs nothing.
START_DEADLINE = 30.0


def base_env(**settings: str) -> dict[str, str]:
    """A clean environment: no REDIS_URL, LANG or proxy from the machine running the tests."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}
    env.update(settings)
    return env


class Process:
    """A child process whose output goes to a file, stopped (and if need be killed) on close."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        start_new_session: bool = False,
    ) -> None:
        self.args = list(args)
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(
            self.args,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=start_new_session,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """The records of a LOG_FORMAT=json log; lines that are not JSON are left out."""
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def text_lines(self, level: str) -> list[str]:
        """`logger: message` of every line of a text log at `level` (INFO, WARNING ...)."""
        marker = f" {level} "
        return [line.split(marker, 1)[1] for line in self.output().splitlines() if marker in line]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    async def wait(self, seconds: float) -> int:
        """The exit code; subprocess.TimeoutExpired if it is still running after `seconds`."""
        return await asyncio.to_thread(self.popen.wait, seconds)

    def close(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._out.close()


async def run(args: str | Sequence[str], **options: object) -> subprocess.CompletedProcess[str]:
    """subprocess.run off the event loop, output captured as text."""
    return await asyncio.to_thread(
        subprocess.run,
        args,
        capture_output=True,
        text=True,
        **options,
    )


def gateway(port: int, log: Path, *, cwd: Path | None = None, **settings: str) -> Process:
    env = base_env(**{"HOST": "127.0.0.1", "PORT": str(port), **settings})
    env["PYTHONPATH"] = str(ROOT)
    return Process([sys.executable, "-m", "gateway"], log=log, env=env, cwd=cwd or log.parent)


async def wait_until_serving(url: str, process: Process, deadline: float = START_DEADLINE) -> None:
    """Poll url until it answers 200; fail at once, with the output, if the process dies."""
    give_up = time.monotonic() + deadline
    async with aiohttp.ClientSession() as session:
        while True:
            if not process.alive():
                raise AssertionError(f"{process.args} exited early:\n{process.output()}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > give_up:
                raise AssertionError(f"{url} not serving after {deadline}s:\n{process.output()}")
            await asyncio.sleep(0.05)


def wait_until_serving_sync(url: str, process: Process, deadline: float = START_DEADLINE) -> None:
    """wait_until_serving for fixtures that run outside the event loop."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    give_up = time.monotonic() + deadline
    while True:
        if not process.alive():
            raise AssertionError(f"{process.args} exited early:\n{process.output()}")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > give_up:
            raise AssertionError(f"{url} not serving after {deadline}s:\n{process.output()}")
        time.sleep(0.05)


def require(binary: str) -> str:
    """The binary's path; without it the test skips, or fails under CI=true."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{binary} is not installed (CI=true: a missing {binary} is a failure)")
        pytest.skip(f"{binary} is not installed")
    return found


async def wait_until_refused(host: str, port: int, deadline: float = START_DEADLINE) -> None:
    """Poll until connecting to host:port is refused: the listener has closed."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except ConnectionRefusedError:
            return
        except ConnectionResetError:
            # Caught in the accept queue as the listener closed: the next try is refused.
            pass
        else:
            writer.close()
            await writer.wait_closed()
        if time.monotonic() > give_up:
            raise AssertionError(f"{host}:{port} still accepts connections after {deadline}s")
        await asyncio.sleep(0.02)
