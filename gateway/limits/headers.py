"""The RateLimit headers (IETF draft) and the older X-RateLimit-* trio, from a decision."""

from __future__ import annotations

from gateway.config import Limit
from gateway.limits.decision import Decision


def rate_limit_headers(limits: tuple[Limit, ...], decision: Decision | None) -> dict[str, str]:
    """RateLimit-Policy for every configured window; RateLimit and X-RateLimit-* (the tightest
    window) only when the decision knows the counts."""
    if not limits:
        return {}
    headers = {
        "RateLimit-Policy": ", ".join(
            f'"{limit.policy_name}";q={limit.quantity};w={limit.seconds}' for limit in limits
        )
    }
    tightest = decision.tightest if decision is not None else None
    if decision is None or tightest is None:
        return headers
    headers["RateLimit"] = ", ".join(
        f'"{w.limit.policy_name}";r={w.remaining};t={w.reset}' for w in decision.windows
    )
    headers["X-RateLimit-Limit"] = str(tightest.quantity)
    headers["X-RateLimit-Remaining"] = str(tightest.remaining)
    headers["X-RateLimit-Reset"] = str(tightest.reset)
    return headers
