"""`make bench`: req/s, latency, CPU and Redis commands per request, beside direct and a floor.

Every target runs under the same wrk load (-c32 -t2) for BENCH_SECONDS, in BENCH_ROUNDS rounds
that alternate their order; the table shows medians. Time to first byte is measured apart, one
request at a time. Ratios compare the gateway with the fake upstream alone (direct) and with a
bare relay (the floor) from the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis
from redis.asyncio import Redis

from bench.load import Run, find_wrk, wrk
from bench.stack import LIMITS, STREAM_EVENTS, Stack, running_stack
from gateway.config import load_settings
from gateway.limits.limiter import Limiter

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
FIRST_BYTE_REQUESTS = int(os.environ.get("BENCH_TTFB_REQUESTS", "100"))
FIRST_BYTE_DEADLINE = 20.0  # seconds per target, whatever BENCH_TTFB_REQUESTS says
FIRST_BYTE_RUN = 10  # requests to a target before the next target's turn
RESULTS = Path("bench-results.md")


def _chat(stream: bool) -> str:
    body: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body)


@dataclass(frozen=True)
class Target:
    name: str
    server: str  # whose port takes the load and whose CPU is read (upstream, floor, gateway…)
    path: str
    body: str
    upstream_streams: bool  # which direct and floor rows it is compared with


CHAT = "/v1/chat/completions"
TARGETS = [
    Target("direct", "upstream", CHAT, _chat(False), False),
    Target("direct, stream", "upstream", CHAT, _chat(True), True),
    Target("floor", "floor", CHAT, _chat(False), False),
    Target("floor, stream", "floor", CHAT, _chat(True), True),
    Target("gateway /v1", "gateway", CHAT, _chat(False), False),
    Target("gateway /v1, stream", "gateway", CHAT, _chat(True), True),
    # The legacy route asks the upstream for a stream only when its client asked for one.
    Target("gateway /api", "gateway", "/api", json.dumps({"user_content": "hi"}), False),
    Target(
        "gateway /api, stream",
        "gateway",
        "/api",
        json.dumps({"user_content": "hi", "stream": True}),
        True,
    ),
    Target("gateway /v1, WORKERS=2", "workers", CHAT, _chat(False), False),
]


@dataclass(frozen=True)
class Figures:
    rps: float
    p50: float
    p99: float
    cpu: float  # seconds per request
    redis: float  # commands per request
    scripts: float  # script calls (round trips) per request
    errors: int
    first_byte: float  # median seconds, sequential


def _pid(stack: Stack, server: str) -> int:
    processes = {"upstream": stack.upstream, "floor": stack.floor, "gateway": stack.gateway}
    return {**processes, "workers": stack.workers}[server].pid


async def first_bytes(targets: dict[str, tuple[str, str]]) -> dict[str, float]:
    """Median time from sending a request to reading the first chunk of its body, one request
    at a time, per target. The targets take turns in short runs, so that a machine whose
    latency drifts (a shared host) weighs on each of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in targets}
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}
    turns = max(1, FIRST_BYTE_REQUESTS // FIRST_BYTE_RUN)
    give_up = time.monotonic() + FIRST_BYTE_DEADLINE * len(targets)
    async with contextlib.AsyncExitStack() as stack:
        # One session (one kept-alive connection) per target, opened by an uncounted request.
        sessions = {n: await stack.enter_async_context(aiohttp.ClientSession()) for n in targets}
        for name, (url, body) in targets.items():
            await _first_byte(sessions[name], url, body, headers)
        for turn in range(turns):
            for name in targets if turn % 2 == 0 else reversed(targets):
                url, body = targets[name]
                for _ in range(FIRST_BYTE_RUN):
                    samples[name].append(await _first_byte(sessions[name], url, body, headers))
            if time.monotonic() > give_up:
                break
    return {name: statistics.median(values) for name, values in samples.items()}


async def _first_byte(
    session: aiohttp.ClientSession, url: str, body: str, headers: dict[str, str]
) -> float:
    start = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise SystemExit(f"bench: {url} answered {response.status}")
        await response.content.readany()
        elapsed = time.perf_counter() - start
        async for _ in response.content.iter_any():
            pass
    return elapsed


async def measure(stack: Stack, binary: str) -> dict[str, Figures]:
    counter = redis.Redis.from_url(stack.redis.url)
    first = await first_bytes({t.name: (stack.url(t.server) + t.path, t.body) for t in TARGETS})
    for target in TARGETS:  # warm-up, not counted
        url = stack.url(target.server) + target.path
        await wrk(binary, url, target.body, 1, _pid(stack, target.server), counter)
    runs: dict[str, list[Run]] = {t.name: [] for t in TARGETS}
    for round_ in range(ROUNDS):
        order = TARGETS if round_ % 2 == 0 else TARGETS[::-1]
        for target in order:
            url = stack.url(target.server) + target.path
            pid = _pid(stack, target.server)
            runs[target.name].append(await wrk(binary, url, target.body, SECONDS, pid, counter))
            print(f"  round {round_ + 1}/{ROUNDS}: {target.name}", file=sys.stderr, flush=True)
    counter.close()
    figures = {}
    for name, done in runs.items():
        figures[name] = Figures(
            rps=statistics.median(r.rps for r in done),
            p50=statistics.median(r.p50 for r in done),
            p99=statistics.median(r.p99 for r in done),
            cpu=statistics.median(r.cpu / max(r.requests, 1) for r in done),
            redis=statistics.median(r.redis_commands / max(r.requests, 1) for r in done),
            scripts=statistics.median(r.redis_scripts / max(r.requests, 1) for r in done),
            errors=sum(r.errors for r in done),
            first_byte=first[name],
        )
    return figures


async def limiter_vs_ping(url: str) -> str:
    """The old bench's figure: one limiter decision against the floor of any Redis round trip."""
    client = Redis.from_url(url)
    settings = load_settings({"REDIS_URL": url, **LIMITS, "KEY_PREFIX": "benchlimiter"})
    limiter = Limiter(settings, client)
    samples: dict[str, list[float]] = {"ping": [], "hit": []}
    try:
        for n in range(1000):
            start = time.perf_counter()
            await client.ping()
            samples["ping"].append(time.perf_counter() - start)
            start = time.perf_counter()
            await limiter.hit(f"10.0.{n % 250}.1")
            samples["hit"].append(time.perf_counter() - start)
    finally:
        await limiter.aclose()
        await client.aclose()
    ping, hit = (statistics.median(samples[k]) for k in ("ping", "hit"))
    return (
        f"limiter decision (request windows only) {hit * 1e6:.0f} us median, "
        f"{hit / ping:.2f}x a Redis PING ({ping * 1e6:.0f} us)"
    )


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def table(figures: dict[str, Figures]) -> list[str]:
    lines = [
        "| target | req/s | p50 ms | p99 ms | CPU ms/req | TTFB p50 ms "
        "| Redis cmd/req (EVALSHA) | errors "
        "| req/s vs direct / floor | CPU/req vs direct / floor | TTFB vs direct / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in TARGETS:
        f = figures[target.name]
        suffix = ", stream" if target.upstream_streams else ""
        direct, floor = figures["direct" + suffix], figures["floor" + suffix]
        lines.append(
            f"| {target.name} | {f.rps:.0f} | {f.p50 * 1e3:.2f} | {f.p99 * 1e3:.2f} "
            f"| {f.cpu * 1e3:.3f} | {f.first_byte * 1e3:.2f} "
            f"| {f.redis:.1f} ({f.scripts:.2f}) | {f.errors} "
            f"| {_ratio(f.rps, direct.rps)} / {_ratio(f.rps, floor.rps)} "
            f"| {_ratio(f.cpu, direct.cpu)} / {_ratio(f.cpu, floor.cpu)} "
            f"| {_ratio(f.first_byte, direct.first_byte)} "
            f"/ {_ratio(f.first_byte, floor.first_byte)} |"
        )
    return lines


def machine(binary: str) -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    wrk_line = (version.stdout or version.stderr).splitlines()[0:1] or ["wrk"]
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    return (
        f"nproc {os.cpu_count()}, {model}, Python {platform.python_version()}, "
        f"{wrk_line[0].split(' Copyright')[0]}, load average {load}"
    )


def cpu_ticks() -> tuple[int, int]:
    """All the machine's CPU time so far, and the part a hypervisor gave to other guests."""
    with open("/proc/stat") as stat:
        fields = [int(n) for n in stat.readline().split()[1:]]
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


async def main() -> None:
    binary = find_wrk()
    started = time.monotonic()
    before = machine(binary)
    ticks = cpu_ticks()
    async with running_stack() as stack:
        figures = await measure(stack, binary)
        limiter = await limiter_vs_ping(stack.redis.url)
        logs = stack.logs
    total, stolen = (after - start for after, start in zip(cpu_ticks(), ticks, strict=True))
    lines = [
        f"## Gateway bench: wrk -c32 -t2, {ROUNDS} rounds of {SECONDS}s per target, medians",
        "",
        *table(figures),
        "",
        f"- Machine at the start: {before}",
        f"- Load average at the end: {', '.join(f'{n:.2f}' for n in os.getloadavg())}; "
        f"CPU time stolen by the host (other guests) during the run: {stolen / max(total, 1):.1%}",
        f"- Fake upstream streams {STREAM_EVENTS} SSE events, each written whole; "
        "non-streamed answers are one JSON body.",
        "- CPU ms/req: the loaded process's user+system time (direct: the fake upstream; "
        "floor: the floor relay; gateway: the gateway) over requests served.",
        f"- Gateway: Redis limiter ({', '.join(f'{k}={v}' for k, v in LIMITS.items())}), "
        "access log at INFO to a file. Redis cmd/req: total_commands_processed delta "
        "on the bench's own redis-server (commands that scripts call included); in brackets, "
        "the script calls alone, one round trip each.",
        "- WORKERS=2: the same gateway in two worker processes on one port; its CPU is both "
        "workers' (and the idle parent's).",
        "- The legacy route streams from the upstream only when its client asks for a stream, "
        "so its ratios are to the direct and floor rows of the same kind.",
        f"- TTFB: sequential, {FIRST_BYTE_REQUESTS} requests per target in turns of "
        f"{FIRST_BYTE_RUN}, first body chunk, median.",
        f"- {limiter}",
        f"- Process logs: {logs}; whole run {time.monotonic() - started:.0f}s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    await asyncio.to_thread(RESULTS.write_text, text)


if __name__ == "__main__":
    asyncio.run(main())
