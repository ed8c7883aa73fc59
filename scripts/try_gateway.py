"""`make try`: the gateway in front of the fake upstream the tests use; no OpenAI key needed.

Starts both, prints where to send requests, and stops both on Ctrl-C. PORT (5000) and the other
settings come from the environment as for `make run`; OPENAI_BASE_URL and API_KEY are the fake's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(url: str, process: subprocess.Popen[bytes], deadline: float = 60) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    give_up = time.monotonic() + deadline
    while process.poll() is None and time.monotonic() < give_up:
        try:
            with opener.open(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"make try: {url} did not answer; see the output above")


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    upstream_port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(upstream_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    env = {
        "ROUTE": "api",
        "HOST": "127.0.0.1",
        "SHUTDOWN_GRACE": "2",
        **os.environ,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "API_KEY": "sk-fake-upstream",
    }
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env)
    try:
        wait_until_serving(f"http://127.0.0.1:{upstream_port}/v1/models", fake)
        port = env.get("PORT", "5000")
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", gateway)
        keyed = env.get("GATEWAY_KEYS") or env.get("GATEWAY_KEYS_FILE")
        bearer = "-H 'Authorization: Bearer <your gateway key>' " if keyed else ""
        print(
            f"\nThe gateway is on http://127.0.0.1:{port}, in front of a fake upstream. Try:\n"
            f"  curl -s http://127.0.0.1:{port}/{env['ROUTE'].strip('/')} {bearer}"
            "-H 'Content-Type: application/json' -d '{\"user_content\": \"Hi\"}'\n"
            f"  or open http://127.0.0.1:{port}/playground. Ctrl-C stops both.\n",
            flush=True,
        )
        gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(gateway, fake)


if __name__ == "__main__":
    main()
