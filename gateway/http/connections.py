"""Open connections per client address, for MAX_CONNECTIONS_PER_IP (http/protocol.py refuses
the one over the cap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from gateway.config import Network
from gateway.http.client_ip import parse_address, within


class Connections:
    """Open connections per client address, for MAX_CONNECTIONS_PER_IP (0: no cap). Trusted
    proxies are not counted: their connections carry many clients."""

    def __init__(self, cap: int, trusted: Sequence[Network]) -> None:
        self.cap = cap
        self.trusted = trusted
        self.open_by: dict[str, int] = {}

    def open(self, peer: Any) -> str | Literal[False] | None:
        """The address counted for a new connection (None: not counted), or False: refuse it."""
        if not self.cap or not isinstance(peer, tuple) or not peer:
            return None
        address = parse_address(str(peer[0]))
        if address is None or within(address, self.trusted):
            return None
        key = str(address)
        held = self.open_by.get(key, 0)
        if held >= self.cap:
            return False
        self.open_by[key] = held + 1
        return key

    def close(self, key: str) -> None:
        held = self.open_by.get(key, 1) - 1
        if held > 0:
            self.open_by[key] = held
        else:
            self.open_by.pop(key, None)
