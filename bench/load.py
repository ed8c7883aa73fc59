"""Load with wrk, and the costs read around a run: process CPU time and Redis commands."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

SCRIPT = Path(__file__).with_name("post.lua")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SCRIPT_CALLS = ("eval", "evalsha", "eval_ro", "evalsha_ro")
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class Run:
    requests: int
    rps: float
    p50: float  # seconds
    p99: float
    errors: int  # non-2xx answers and socket errors
    cpu: float  # seconds of the measured process's CPU
    redis_commands: int  # commands run, those that scripts call included
    redis_scripts: int  # EVAL and EVALSHA: the round trips that run a script


def find_wrk() -> str:
    """wrk's path, installing the Debian package if we may; else exit saying how."""
    found = shutil.which("wrk")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing; installing it with apt-get", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)
        found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench: wrk is not installed; install it with `sudo apt-get install wrk`")
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process and its live children (WORKERS' workers)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = stat.read().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return own + sum(cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(child) for child in children.read().split()]
    except FileNotFoundError:
        return []


def commands_processed(client: redis.Redis) -> tuple[int, int]:
    """Commands run so far, and of them the script calls."""
    total = int(client.info("stats")["total_commands_processed"])
    stats = client.info("commandstats")
    scripts = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in SCRIPT_CALLS)
    return total, scripts


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unreadable wrk duration {text!r}")
    return float(match[1]) * UNITS[match[2]]


def parse(output: str) -> tuple[int, float, float, float, int]:
    """Requests, requests per second, p50, p99 and errors from wrk --latency's report."""
    requests = int(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", output)[1])  # type: ignore[index]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", output)[1])  # type: ignore[index]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return requests, rps, p50, p99, errors


async def wrk(
    binary: str, url: str, body: str, seconds: int, pid: int, counter: redis.Redis
) -> Run:
    """One wrk run of -c32 -t2, with the CPU time of `pid` and Redis's commands around it."""
    # A 10 s timeout (wrk says 2 s) keeps slow answers in the latency figures, not in errors.
    args = [binary, "-c32", "-t2", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    args += ["-s", str(SCRIPT), url]
    env = {**os.environ, "BENCH_BODY": body}
    cpu, (commands, scripts) = cpu_seconds(pid), commands_processed(counter)
    done = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=seconds + 30
    )
    cpu = cpu_seconds(pid) - cpu
    after = commands_processed(counter)
    commands, scripts = after[0] - commands, after[1] - scripts
    if done.returncode != 0:
        raise SystemExit(f"bench: wrk failed on {url}:\n{done.stdout}{done.stderr}")
    requests, rps, p50, p99, errors = parse(done.stdout)
    return Run(requests, rps, p50, p99, errors, cpu, commands, scripts)
