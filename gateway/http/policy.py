"""What a route is, said where it is added: limited, metered, and the envelope of its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractRoute

Envelope = Literal["legacy", "openai"]


@dataclass(frozen=True)
class Policy:
    limited: bool = False  # each request counts against the client's limits
    metered: bool = False  # under a token budget, the call's tokens count too (implies limited)
    envelope: Envelope = "legacy"  # the original project's {"code","msg","data"}, or OpenAI's
    guarded: bool = False  # needs a gateway key when GATEWAY_KEYS is set
    private: bool = False  # only from OPS_ALLOW networks, or with OPS_TOKEN


OPS = Policy()


@dataclass
class Policies:
    """The route table's policies, and the one for paths that match no route under a prefix."""

    routes: dict[AbstractRoute, Policy] = field(default_factory=dict)
    prefixes: dict[str, Policy] = field(default_factory=dict)

    def add(
        self,
        app: web.Application,
        method: str,
        path: str,
        handler: Handler,
        policy: Policy,
    ) -> None:
        """Add a route (a GET answers HEAD too) with its policy."""
        for each in (method, "HEAD") if method == "GET" else (method,):
            self.routes[app.router.add_route(each, path, handler)] = policy

    def unmatched(self, prefix: str, policy: Policy) -> None:
        """The policy of a request under `prefix` that no route takes (its 404 or 405)."""
        self.prefixes[prefix.rstrip("/")] = policy

    def of(self, request: web.Request) -> Policy:
        policy = self.routes.get(request.match_info.route)
        if policy is not None:
            return policy
        path = request.path
        for prefix, fallback in self.prefixes.items():
            if path == prefix or path.startswith(prefix + "/"):
                return fallback
        return OPS
