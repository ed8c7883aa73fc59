"""The processes under test, on loopback: redis-server, fake upstream, floor and gateway."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ROOT, Process, base_env, free_port, gateway, wait_until_serving
from tests.support.redis_server import RedisServer

# 19 content deltas between the role event and the stop event, then [DONE].
STREAM_EVENTS = 22
# High enough never to refuse, so that every request pays for the limiter's full round trip.
# Request limits only, so that each request costs one Redis round trip (token budgets add a second).
LIMITS = {
    "SECOND_LIMIT": "1000000",
    "MINUTE_LIMIT": "100000000",
}


@dataclass
class Stack:
    upstream: Process
    floor: Process
    gateway: Process
    workers: Process  # the same gateway with WORKERS=2
    redis: RedisServer
    ports: dict[str, int]
    logs: Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


@contextlib.asynccontextmanager
async def running_stack() -> AsyncIterator[Stack]:
    """Everything started and answering; every process stopped on the way out."""
    logs = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    ports = {name: free_port() for name in ("upstream", "floor", "gateway", "workers")}
    redis = RedisServer()
    redis.start()
    processes: list[Process] = []
    try:
        env = base_env(PYTHONPATH=str(ROOT))
        upstream = Process(
            [
                *(
                    sys.executable,
                    "-m",
                    "tests.support.fake_upstream",
                    "--port",
                    str(ports["upstream"]),
                ),
                *("--events", str(STREAM_EVENTS), "--whole-events"),
            ],
            log=logs / "upstream.log",
            env=env,
            cwd=ROOT,
        )
        processes.append(upstream)
        floor = Process(
            [
                *(sys.executable, "-m", "bench.floor", "--port", str(ports["floor"])),
                *("--upstream", f"http://127.0.0.1:{ports['upstream']}"),
            ],
            log=logs / "floor.log",
            env=env,
            cwd=ROOT,
        )
        processes.append(floor)
        # Run from an empty directory so that no .env is read; the access log stays at INFO.
        settings = {
            "OPENAI_BASE_URL": f"http://127.0.0.1:{ports['upstream']}/v1",
            "API_KEY": "sk-bench",
            "ROUTE": "api",
            "REDIS_URL": redis.url,
            **LIMITS,
        }
        gw = gateway(ports["gateway"], logs / "gateway.log", **settings)
        processes.append(gw)
        workers = gateway(ports["workers"], logs / "workers.log", WORKERS="2", **settings)
        processes.append(workers)
        stack = Stack(upstream, floor, gw, workers, redis, ports, logs)
        await wait_until_serving(stack.url("upstream") + "/v1/models", upstream)
        await wait_until_serving(stack.url("floor") + "/v1/models", floor)
        await wait_until_serving(stack.url("gateway") + "/healthz", gw)
        await wait_until_serving(stack.url("workers") + "/healthz", workers)
        yield stack
    finally:
        for process in reversed(processes):
            process.close()
        redis.stop()
