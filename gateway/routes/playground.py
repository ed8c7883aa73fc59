"""The playground: a page for trying the gateway from a browser, shipped inside the package."""

from __future__ import annotations

import html
from importlib.resources import files

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.config import Settings

PAGE_PATH = "/playground"

# Self only: the page runs no inline code, loads nothing from elsewhere and talks to this gateway.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_ASSETS = {"playground.js": "text/javascript", "playground.css": "text/css"}


def _read(name: str) -> str:
    return (files("gateway") / "playground" / name).read_text(encoding="utf-8")


def render_page(route: str, default_model: str) -> str:
    """index.html with the legacy route and the default model filled into its <meta> tags."""
    page = _read("index.html")
    page = page.replace("{{route}}", html.escape(route))
    return page.replace("{{default_model}}", html.escape(default_model))


def _serve(text: str, content_type: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=text, content_type=content_type, charset="utf-8", headers=_HEADERS)

    return handler


def playground_routes(settings: Settings) -> dict[str, Handler]:
    """The handlers of /playground and of its script and stylesheet, by path."""
    page = render_page(settings.route, settings.default_model)
    routes = {PAGE_PATH: _serve(page, "text/html")}
    for name, content_type in _ASSETS.items():
        routes[f"{PAGE_PATH}/{name}"] = _serve(_read(name), content_type)
    return routes
