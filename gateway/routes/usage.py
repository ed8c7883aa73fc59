"""GET /v1/usage: the caller's own limits, what it has used and when that frees, for its address
and for its gateway key; looking counts nothing."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.http.client_ip import bucket, parse_address
from gateway.keys import CLIENT_IP_KEY, GATEWAY_KEY_KEY, LIMITER_KEY, SETTINGS_KEY
from gateway.limits.backend import Subject
from gateway.limits.decision import Decision, WindowState
from gateway.limits.limiter import Limiter


def _entry(state: WindowState) -> dict[str, Any]:
    remaining = max(state.remaining, 0)
    return {
        "window": state.name,
        "seconds": state.limit.seconds,
        "limit": state.quantity,
        "used": state.quantity - remaining,
        "remaining": remaining,
        "reset_seconds": state.reset,  # until it frees a unit; 0 when it holds none
    }


def _section(decision: Decision) -> dict[str, Any]:
    return {
        "limits": [_entry(w) for w in decision.windows],
        "token_budgets": [_entry(b) for b in decision.budgets],
        "source": decision.source,
    }


async def _look(limiter: Limiter, subject: Subject | None) -> dict[str, Any]:
    if subject is None or (not subject.limits and not subject.budgets):
        return {"limits": [], "token_budgets": [], "source": "none"}
    return _section(await limiter.peek(subject))


async def usage(request: web.Request) -> web.StreamResponse:
    """The caller's own limits, what is used and when it frees, for its address and its key."""
    settings = request.app[SETTINGS_KEY]
    limiter = request.app[LIMITER_KEY]
    address = request.get(CLIENT_IP_KEY)
    client = bucket(parse_address(address) if address else None, settings.ipv6_prefix)
    (subject,) = limiter.subjects(client)
    ip = {"address": address, "bucket": client, **await _look(limiter, subject)}
    body: dict[str, Any] = {"object": "gateway.usage", "ip": ip, "key": None}
    key = request.get(GATEWAY_KEY_KEY)
    if key is not None:
        body["key"] = {"name": key.name, **await _look(limiter, key.subject)}
    response = web.json_response(body)
    response.headers["Cache-Control"] = "no-store"
    return response
