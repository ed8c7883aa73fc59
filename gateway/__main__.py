"""Entry point: load settings, then serve create_app(settings), in WORKERS processes if asked."""

from __future__ import annotations

import gc
import logging
import os
import sys
from functools import partial

from gateway.config import ConfigError, Settings, environment, load_settings


def main() -> None:
    try:
        settings = load_settings(environment())
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Only a valid configuration pays for importing aiohttp and the rest.
    from gateway.observe.logs import setup_logging
    from gateway.workers import run_workers

    log = setup_logging(settings)
    if settings.workers > 1:
        raise SystemExit(run_workers(settings.workers, partial(serve, settings, log)))
    serve(settings, log)


def serve(settings: Settings, log: logging.Logger) -> None:
    """Serve until SIGTERM or SIGINT; with WORKERS above 1, one of the workers sharing the port."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.http.drain import BACKSTOP, DRAIN_KEY
    from gateway.observe.startup import log_startup

    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    if settings.workers > 1:
        log.info("worker %d starting", os.getpid())
    app = create_app(settings)

    def serving(_: str) -> None:
        app[DRAIN_KEY].serving = True
        log_startup(log, settings)

    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            access_log=None,
            # The app cuts what is left just before the grace ends (http/drain.py); aiohttp's own
            # deadline, which cancels handlers silently, is only the backstop after it.
            shutdown_timeout=settings.shutdown_grace + BACKSTOP,
            handle_signals=True,
            handler_cancellation=True,
            reuse_port=settings.workers > 1,
            # Called once the port is bound: the block goes out only for a gateway that serves.
            print=serving,
            loop=loop_factory() if loop_factory else None,
        )
    except OSError as exc:
        # A HOST that does not resolve, a PORT already taken: one line, like a bad setting.
        reason = exc.strerror or str(exc)
        where = f"HOST={settings.host!r} PORT={settings.port}"
        print(f"gateway: cannot listen on {where}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    log.info("stopped")
    # Exiting: without this, the interpreter's teardown collects the whole heap and the process
    # outlives its grace by a second or more on a busy machine.
    gc.freeze()


if __name__ == "__main__":
    main()
