"""Entry point: load settings, then serve create_app(settings)."""

from __future__ import annotations

import logging
import os
import sys
from functools import partial

from aiohttp import web

from gateway.app import create_app
from gateway.config import ConfigError, Settings, environment, load_settings
from gateway.observe.logs import setup_logging
from gateway.workers import run_workers


def main() -> None:
    try:
        settings = load_settings(environment())
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log = setup_logging(settings)
    if settings.language_unknown is not None:
        log.warning(
            "LANG=%r names no language we have; answering in English", settings.language_unknown
        )
    if settings.workers > 1:
        raise SystemExit(run_workers(settings.workers, partial(serve, settings, log)))
    serve(settings, log)


def serve(settings: Settings, log: logging.Logger) -> None:
    """Serve until SIGTERM or SIGINT; with WORKERS above 1, one of the workers sharing the port."""
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    if settings.workers > 1:
        log.info("worker %d starting", os.getpid())
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            access_log=None,
            # aiohttp reads a timeout of 0 as no timeout at all; SHUTDOWN_GRACE=0 means no grace.
            shutdown_timeout=settings.shutdown_grace or 0.001,
            handle_signals=True,
            handler_cancellation=True,
            reuse_port=settings.workers > 1,
            print=lambda text: log.info("%s", text.strip()),
            loop=loop_factory() if loop_factory else None,
        )
    except OSError as exc:
        # A HOST that does not resolve, a PORT already taken: one line, like a bad setting.
        reason = exc.strerror or str(exc)
        where = f"HOST={settings.host!r} PORT={settings.port}"
        print(f"gateway: cannot listen on {where}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
