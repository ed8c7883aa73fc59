"""Gateway keys at the door, and the OpenAI key a call spends upstream."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import Unauthorized
from gateway.keys import GATEWAY_KEY_KEY, KEY_NAME_KEY, SETTINGS_KEY

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gateway"'}


def bearer(request: web.BaseRequest) -> str | None:
    """The token of `Authorization: Bearer <token>`, if the request has one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(request: web.Request) -> None:
    """With GATEWAY_KEYS set, the request must bear one of them; it is kept on the request.

    Runs before the body is read and before the limiter: a refusal costs one hash.
    """
    keyring = request.app[SETTINGS_KEY].gateway_keys
    if not keyring:
        return
    token = bearer(request)
    if token is None:
        raise Unauthorized("gateway_key_missing", headers=_CHALLENGE)
    key = keyring.find(token)
    if key is None:
        raise Unauthorized("gateway_key_invalid", headers=_CHALLENGE)
    request[KEY_NAME_KEY] = key.name
    request[GATEWAY_KEY_KEY] = key


def upstream_key(request: web.Request, own: str | None, missing: str) -> str:
    """The OpenAI key this call spends.

    With gateway keys, always API_KEY: what the client presented is our key and is never
    forwarded, and neither is any key of its own. Without them, the client's own key if it
    brought one, else API_KEY; with neither, a 401 with the code `missing`.
    """
    settings = request.app[SETTINGS_KEY]
    if own and not settings.gateway_keys:
        return own
    if settings.api_key:
        return settings.api_key.reveal()
    raise Unauthorized(missing)
