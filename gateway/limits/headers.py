"""The RateLimit headers (IETF draft) and the older X-RateLimit-* trio, from a decision."""

from __future__ import annotations

from gateway.limits.decision import Decision
from gateway.quota import Limit


def rate_limit_headers(limits: tuple[Limit, ...], decision: Decision | None) -> dict[str, str]:
    """RateLimit-Policy for every configured window; RateLimit and X-RateLimit-* (the tightest
    window) only when the decision knows the counts, and the token headers when it weighed the
    call's tokens."""
    headers: dict[str, str] = {}
    if limits:
        headers["RateLimit-Policy"] = ", ".join(
            f'"{limit.policy_name}";q={limit.quantity};w={limit.seconds}' for limit in limits
        )
    if decision is None:
        return headers
    tightest = decision.tightest
    if tightest is not None:
        headers["RateLimit"] = ", ".join(
            f'"{w.limit.policy_name}";r={w.remaining};t={w.reset}' for w in decision.windows
        )
        headers["X-RateLimit-Limit"] = str(tightest.quantity)
        headers["X-RateLimit-Remaining"] = str(tightest.remaining)
        headers["X-RateLimit-Reset"] = str(tightest.reset)
    headers.update(token_headers(decision))
    return headers


def token_headers(decision: Decision) -> dict[str, str]:
    """What is left of the tightest token budget, after this call's reservation, with the names
    OpenAI gives its own; only when the call was weighed against budgets."""
    tightest = decision.tightest_budget
    if tightest is None:
        return {}
    return {
        "X-RateLimit-Limit-Tokens": str(tightest.quantity),
        "X-RateLimit-Remaining-Tokens": str(max(tightest.remaining, 0)),
        "X-RateLimit-Reset-Tokens": str(tightest.reset),
    }
