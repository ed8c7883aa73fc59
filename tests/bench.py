"""`make bench`: what the gateway adds, as ratios against a baseline measured in the same run.

Starts the fake upstream and one gateway as processes on loopback, then times, per request:
time to first byte and total time of a streamed answer straight from the upstream (the baseline)
and through the gateway's legacy and /v1 routes. With Redis reachable it also times one limiter
decision against a plain Redis PING (the floor for any round trip).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "200"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(url):
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise SystemExit(f"nothing answered at {url}")


async def timed_stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, object]
) -> tuple[float, float]:
    start = time.perf_counter()
    async with session.post(
        url, json=body, headers={"Authorization": "Bearer sk-bench"}
    ) as response:
        assert response.status == 200, response.status
        first = None
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter() - start
        return first or 0.0, time.perf_counter() - start


async def measure(call: Callable[[], Awaitable[tuple[float, float]]]) -> tuple[float, float]:
    """Median time to first byte and median total, over REQUESTS calls CONCURRENCY at a time."""
    results: list[tuple[float, float]] = []
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        async with semaphore:
            results.append(await call())

    for _ in range(10):
        await call()
    await asyncio.gather(*(one() for _ in range(REQUESTS)))
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


async def limiter_figures() -> None:
    from redis.asyncio import Redis

    from gateway.config import load_settings
    from gateway.limits.limiter import Limiter

    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    redis = Redis.from_url(url)
    try:
        await redis.ping()
    except Exception:
        print("limiter: no Redis reachable, skipped")
        await redis.aclose()
        return
    settings = load_settings(
        {
            "REDIS_URL": url,
            "SECOND_LIMIT": "1000000",
            "MINUTE_LIMIT": "1000000",
            "KEY_PREFIX": f"bench{os.getpid()}",
        }
    )
    limiter = Limiter(settings, redis)
    samples: dict[str, list[float]] = {"ping": [], "hit": []}
    for n in range(2000):
        start = time.perf_counter()
        await redis.ping()
        samples["ping"].append(time.perf_counter() - start)
        start = time.perf_counter()
        await limiter.hit(f"10.0.{n % 250}.1")
        samples["hit"].append(time.perf_counter() - start)
    ping, hit = (statistics.median(samples[k]) for k in ("ping", "hit"))
    print(f"limiter decision   {hit * 1e6:8.0f} us   ratio to a Redis PING {hit / ping:5.2f}x")
    await redis.aclose()


async def main() -> None:
    upstream_port, gateway_port = free_port(), free_port()
    python = sys.executable
    env = {
        **os.environ,
        "PORT": str(gateway_port),
        "HOST": "127.0.0.1",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "API_KEY": "sk-bench",
        "ROUTE": "api",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    processes = [
        subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
            [python, "-m", "tests.support.fake_upstream", "--port", str(upstream_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(  # noqa: ASYNC220
            [python, "-m", "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ),
    ]
    try:
        await wait_up(f"http://127.0.0.1:{upstream_port}/v1/models")
        await wait_up(f"http://127.0.0.1:{gateway_port}/healthz")
        chat = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            rows = {
                "upstream directly": lambda: timed_stream(
                    session, f"http://127.0.0.1:{upstream_port}/v1/chat/completions", chat
                ),
                "gateway /v1 relay": lambda: timed_stream(
                    session, f"http://127.0.0.1:{gateway_port}/v1/chat/completions", chat
                ),
                "gateway legacy": lambda: timed_stream(
                    session,
                    f"http://127.0.0.1:{gateway_port}/api",
                    {"user_content": "hi", "stream": True},
                ),
            }
            figures = {name: await measure(call) for name, call in rows.items()}
        base_first, base_total = figures["upstream directly"]
        print(f"{REQUESTS} streamed requests, {CONCURRENCY} at a time; medians")
        print(f"{'path':<20}{'first byte':>12}{'ratio':>8}{'total':>12}{'ratio':>8}")
        for name, (first, total) in figures.items():
            ratios = f"{first / base_first:7.2f}x{total * 1e3:10.2f}ms{total / base_total:7.2f}x"
            print(f"{name:<20}{first * 1e3:10.2f}ms{ratios}")
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    await limiter_figures()


if __name__ == "__main__":
    asyncio.run(main())
