"""The floor: the least an aiohttp relay can do, so the bench can tell the gateway's own cost.

No limits, no parsing, no logging: each GET or POST goes to the upstream on one pooled session
and its body comes back chunk by chunk. Run it as `python -m bench.floor --port N --upstream URL`.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

SESSION_KEY = web.AppKey("SESSION_KEY", aiohttp.ClientSession)
UPSTREAM_KEY = web.AppKey("UPSTREAM_KEY", str)
PASSED = ("Content-Type", "Authorization")


async def relay(request: web.Request) -> web.StreamResponse:
    headers = {name: request.headers[name] for name in PASSED if name in request.headers}
    async with request.app[SESSION_KEY].request(
        request.method,
        request.app[UPSTREAM_KEY] + request.path_qs,
        data=await request.read(),
        headers=headers,
    ) as upstream:
        response = web.StreamResponse(status=upstream.status)
        response.content_type = upstream.content_type
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[SESSION_KEY] = session
        yield


def create_floor(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM_KEY] = upstream.rstrip("/")
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("GET", "/{tail:.*}", relay)
    app.router.add_route("POST", "/{tail:.*}", relay)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="scheme://host:port, no path")
    args = parser.parse_args()
    web.run_app(
        create_floor(args.upstream),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
