"""What the operator allows: client networks, models, and the size of a /v1 call."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from gateway.config import Settings
from gateway.errors import BadRequest, Forbidden
from gateway.http.client_ip import Address, within

# The /v1 fields that bound a call's output, and the cap each is held to.
_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def check_address(settings: Settings, address: Address | None) -> None:
    """DENY_IPS first, then ALLOW_IPS (when set, the client must be in it): else 403."""
    denied = address is not None and within(address, settings.deny_ips)
    allowed = not settings.allow_ips or (
        address is not None and within(address, settings.allow_ips)
    )
    if denied or not allowed:
        raise Forbidden("address_denied")


def check_ops(settings: Settings, address: Address | None, token: str | None) -> None:
    """An ops endpoint answers clients in OPS_ALLOW, and anyone bearing OPS_TOKEN; else 403."""
    if address is not None and within(address, settings.ops_allow):
        return
    expected = settings.ops_token.reveal().encode() if settings.ops_token else None
    if expected is None or not hmac.compare_digest(expected, (token or "").encode()):
        raise Forbidden()


def model_allowed(settings: Settings, model: object) -> bool:
    return not settings.allowed_models or model in settings.allowed_models


def check_model(settings: Settings, model: object) -> None:
    if not model_allowed(settings, model):
        shown = model[:100] if isinstance(model, str) else str(model)[:100]
        raise BadRequest("model_not_allowed", param="model", model=shown)


def _check_whole(call: Mapping[str, Any], field: str, cap: int) -> None:
    value = call.get(field)
    if cap <= 0 or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
        raise BadRequest("field_range", param=field, field=field, cap=cap)


def check_call(settings: Settings, call: Mapping[str, Any]) -> None:
    """A /v1 call within ALLOWED_MODELS, MAX_COMPLETION_TOKENS_CAP and MAX_N, or a 400."""
    check_model(settings, call.get("model"))
    for field in _TOKEN_FIELDS:
        _check_whole(call, field, settings.max_completion_tokens_cap)
    _check_whole(call, "n", settings.max_n)
