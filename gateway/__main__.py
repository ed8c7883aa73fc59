"""Entry point: load settings, then serve create_app(settings)."""

from __future__ import annotations

import gc
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
    from gateway.http.drain import BACKSTOP, DRAIN_KEY
    from gateway.observe.logs import setup_logging
    from gateway.observe.startup import log_startup

    log = setup_logging(settings)
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
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
    # Exiting: without this, the interpreter's teardown collects the whole heap (the SDK's, the
    # models') and the process outlives its grace by a second or more on a busy machine.
    gc.freeze()


if __name__ == "__main__":
    main()
