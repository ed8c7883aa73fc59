"""`python -m bench.parts`: what each part of the gateway costs per request, measured in place.

The same gateway runs several times beside one fake upstream and one redis-server, each copy
with one part turned off: the Redis limiter (no REDIS_URL, no limits), the access log
(LOG_LEVEL=WARNING), or both. Each copy gets the same wrk load on POST /v1/chat/completions in
rounds of alternating order; a part's cost is the difference of the medians of CPU ms/request.
In place, under load, a part costs more than a micro-benchmark of it says (caches are shared
with everything else the process does), so this is the figure to cut against.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

import redis

from bench.load import find_wrk, wrk
from bench.stack import LIMITS, STREAM_EVENTS
from tests.support.processes import ROOT, Process, base_env, free_port, gateway, wait_until_serving
from tests.support.redis_server import RedisServer

SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BODY = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
STREAM_BODY = BODY[:-1] + ', "stream": true}'


def variants(upstream: str, redis_url: str) -> dict[str, dict[str, str]]:
    base = {"OPENAI_BASE_URL": upstream, "API_KEY": "sk-bench", "ROUTE": "api"}
    limited = {**base, "REDIS_URL": redis_url, **LIMITS}
    return {
        "whole gateway": limited,
        "without the limiter": base,
        "without the access log": {**limited, "LOG_LEVEL": "WARNING"},
        "without both": {**base, "LOG_LEVEL": "WARNING"},
    }


async def main() -> None:
    binary = find_wrk()
    logs = Path(tempfile.mkdtemp(prefix="gateway-parts-"))
    server = RedisServer()
    server.start()
    processes: list[Process] = []
    try:
        port = free_port()
        upstream = Process(
            [
                *(sys.executable, "-m", "tests.support.fake_upstream", "--port", str(port)),
                *("--events", str(STREAM_EVENTS), "--whole-events"),
            ],
            log=logs / "upstream.log",
            env=base_env(PYTHONPATH=str(ROOT)),
            cwd=ROOT,
        )
        processes.append(upstream)
        await wait_until_serving(f"http://127.0.0.1:{port}/v1/models", upstream)
        ports = {}
        for name, settings in variants(f"http://127.0.0.1:{port}/v1", server.url).items():
            ports[name] = free_port()
            log = logs / f"{name.replace(' ', '-')}.log"
            processes.append(gateway(ports[name], log, **settings))
            await wait_until_serving(f"http://127.0.0.1:{ports[name]}/healthz", processes[-1])
        pids = {name: process.pid for name, process in zip(ports, processes[1:], strict=True)}
        counter = redis.Redis.from_url(server.url)
        body = STREAM_BODY if os.environ.get("BENCH_STREAM") == "1" else BODY
        costs: dict[str, list[float]] = {name: [] for name in ports}
        for round_ in range(ROUNDS):
            order = list(ports) if round_ % 2 == 0 else list(reversed(ports))
            for name in order:
                url = f"http://127.0.0.1:{ports[name]}/v1/chat/completions"
                run = await wrk(binary, url, body, SECONDS, pids[name], counter)
                costs[name].append(run.cpu / run.requests * 1000)
        medians = {name: statistics.median(values) for name, values in costs.items()}
        whole = medians["whole gateway"]
        print(f"POST /v1/chat/completions{' (stream)' if body is STREAM_BODY else ''}, ", end="")
        print(f"wrk -c32 -t2, {ROUNDS} rounds of {SECONDS}s, CPU ms/request (medians)")
        for name, cost in medians.items():
            print(f"  {name:24s} {cost:.3f}   {whole - cost:+.3f} for what is off")
    finally:
        for process in reversed(processes):
            with contextlib.suppress(Exception):
                process.close()
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
