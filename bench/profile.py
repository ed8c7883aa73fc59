"""`python -m bench.profile`: where the gateway spends its CPU under steady wrk load.

For each scenario py-spy samples the gateway for BENCH_PROFILE_SECONDS while wrk keeps it busy,
writes the folded stacks to profile-<scenario>.txt (speedscope opens them as they are), and
prints the functions with the most samples: on their own (self) and with their callees.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import redis

from bench.__main__ import TARGETS
from bench.load import find_wrk, wrk
from bench.stack import running_stack

SECONDS = int(os.environ.get("BENCH_PROFILE_SECONDS", "15"))
SCENARIOS = {
    "v1": "gateway /v1",
    "v1-stream": "gateway /v1, stream",
    "legacy": "gateway /api",
    "legacy-stream": "gateway /api, stream",
}
TOP = 12
# Shares of all samples that pass through each library (or gateway module), callees included.
LIBRARIES = (
    "openai/",
    "httpx",
    "httpcore",
    "h11/",
    "anyio/",
    "pydantic",
    "redis/",
    "logging/",
    "json/",
    "prometheus_client/",
    "concurrent/futures/",
    "gateway/limiter.py",
)
# py-spy names a frame "function (path:line)"; the line is dropped so a function counts once.
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^:]*)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = match["path"]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/wt-bench/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['function']} ({path})"


def summary(folded: Path) -> list[str]:
    """The top functions by self and by inclusive samples, as percentages of all samples."""
    own: collections.Counter[str] = collections.Counter()
    within: collections.Counter[str] = collections.Counter()
    libraries: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [_short(f) for f in stack.split(";")]
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            within[frame] += samples
        for library in LIBRARIES:
            if any(library in frame for frame in frames):
                libraries[library] += samples
    lines = [f"{total} samples"]
    lines += [f"  self {n / total:6.1%}  {name}" for name, n in own.most_common(TOP)]
    gateway = [(k, v) for k, v in within.most_common() if "gateway/" in k][:TOP]
    lines += [f"  incl {n / total:6.1%}  {name}" for name, n in gateway]
    lines += [f"  lib  {n / total:6.1%}  {name}" for name, n in libraries.most_common()]
    return lines


async def main() -> None:
    binary = find_wrk()
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("bench: py-spy is missing; install it with `.venv/bin/pip install py-spy`")
    chosen = os.environ.get("BENCH_PROFILE", ",".join(SCENARIOS)).split(",")
    targets = {t.name: t for t in TARGETS}
    async with running_stack() as stack:
        counter = redis.Redis.from_url(stack.redis.url)
        pid = stack.gateway.pid
        for name in chosen:
            target = targets[SCENARIOS[name]]
            url = stack.url(target.server) + target.path
            await wrk(binary, url, target.body, 2, pid, counter)  # warm-up
            load = asyncio.create_task(wrk(binary, url, target.body, SECONDS, pid, counter))
            await asyncio.sleep(1)
            out = Path(f"profile-{name}.txt")
            record = [spy, "record", "--pid", str(pid), "--duration", str(SECONDS - 3)]
            record += ["--rate", "200", "--nonblocking"]
            await asyncio.to_thread(
                subprocess.run, [*record, "--format", "raw", "-o", str(out)], capture_output=True
            )
            run = await load
            print(f"## {name}: {target.name}, {run.rps:.0f} req/s under wrk -c32 -t2", flush=True)
            print("\n".join(summary(out)), flush=True)
        counter.close()


if __name__ == "__main__":
    asyncio.run(main())
