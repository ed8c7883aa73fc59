"""The image's HEALTHCHECK: `python -m gateway.probe` exits 0 when local /healthz answers."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from dotenv import dotenv_values

from gateway.config import ConfigError, load_settings

# A wildcard listener is reached on the loopback address of its own family (asyncio binds "::"
# IPv6-only).
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def liveness_url(environ: dict[str, str]) -> str:
    settings = load_settings(environ)
    host = _LOOPBACK.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/healthz"


def main() -> int:
    # The settings the server read: the environment first, then .env in the working directory.
    env_file = Path.cwd() / ".env"
    found = dotenv_values(env_file) if env_file.is_file() else {}
    environ = {k: v for k, v in found.items() if v is not None} | dict(os.environ)
    try:
        url = liveness_url(environ)
    except ConfigError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 1
    # Straight to the local port, whatever HTTP_PROXY the upstream calls may need.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"probe: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
