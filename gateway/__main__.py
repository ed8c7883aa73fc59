"""Entry point: load settings, then serve create_app(settings)."""

from __future__ import annotations

import sys

from gateway.config import ConfigError, environment, load_settings


def main() -> None:
    try:
        settings = load_settings(environment())
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Only a valid configuration pays for importing aiohttp, the SDK and the rest.
    from aiohttp import web

    from gateway.app import create_app
    from gateway.observe.logs import setup_logging
    from gateway.observe.startup import log_startup

    log = setup_logging(settings)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
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
            # Called once the port is bound: the block goes out only for a gateway that serves.
            print=lambda _: log_startup(log, settings),
            loop=loop_factory() if loop_factory else None,
        )
    except OSError as exc:
        # A HOST that does not resolve, a PORT already taken: one line, like a bad setting.
        reason = exc.strerror or str(exc)
        where = f"HOST={settings.host!r} PORT={settings.port}"
        print(f"gateway: cannot listen on {where}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    log.info("stopped")


if __name__ == "__main__":
    main()
