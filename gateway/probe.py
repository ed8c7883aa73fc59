"""The image's HEALTHCHECK: `python -m gateway.probe` exits 0 when local /healthz answers."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Mapping

from gateway.config import ConfigError, environment, load_settings

# A wildcard listener is reached on the loopback address of its own family (asyncio binds "::"
# IPv6-only).
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def liveness_url(environ: Mapping[str, str]) -> str:
    settings = load_settings(environ)
    host = _LOOPBACK.get(settings.host, settings.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/healthz"


def main() -> int:
    try:
        url = liveness_url(environment())
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
