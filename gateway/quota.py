"""What a limit is: so many requests, or tokens, in a rolling window; for a client's address or
for a gateway key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MICRO = 1_000_000
# The largest limit or budget. rate_limit.lua counts in doubles, and Redis turns a script's
# numbers into 64-bit integers: beyond 2**53 its counts would drift, beyond 2**63 be absurd.
LARGEST = 10**15
Unit = Literal["requests", "tokens"]
Scope = Literal["ip", "key"]
_POLICY_NAMES = {"second": "1s", "minute": "1m", "hour": "1h", "day": "1d"}
WINDOW_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Limit:
    """So many requests (or tokens) in any rolling window of `seconds`."""

    name: str  # second, minute, hour or day: the word used in headers, logs and messages
    seconds: int
    quantity: int
    unit: Unit = "requests"
    scope: Scope = "ip"  # whose: the client address's (the settings') or a gateway key's

    @property
    def micros(self) -> int:
        return self.seconds * MICRO

    @property
    def policy_name(self) -> str:
        """The window's name in RateLimit headers: 1s, 1m, 1h, 1d; key-1m for a key's own."""
        name = _POLICY_NAMES[self.name]
        return name if self.scope == "ip" else f"{self.scope}-{name}"


def request_limits(
    second: int = 0, minute: int = 0, hour: int = 0, day: int = 0, scope: Scope = "ip"
) -> tuple[Limit, ...]:
    """The request windows that are set (a quantity of 0 means no such window), shortest first."""
    every = {"second": second, "minute": minute, "hour": hour, "day": day}
    return tuple(
        Limit(name, WINDOW_SECONDS[name], quantity, "requests", scope)
        for name, quantity in every.items()
        if quantity > 0
    )


def token_budgets(minute: int = 0, day: int = 0, scope: Scope = "ip") -> tuple[Limit, ...]:
    """The token budgets that are set, shortest first."""
    every = {"minute": minute, "day": day}
    return tuple(
        Limit(name, WINDOW_SECONDS[name], quantity, "tokens", scope)
        for name, quantity in every.items()
        if quantity > 0
    )
