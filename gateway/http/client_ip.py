"""Who the client is: the TCP peer, or what trusted proxies say about it, grouped into buckets."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from gateway.config import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(raw: str) -> Address | None:
    """An address as a peer or a proxy writes it: bare, with a port, or in brackets."""
    text = raw.strip().strip('"')
    if text.startswith("["):
        text, closed, _ = text[1:].partition("]")
        if not closed:
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            address = ipaddress.IPv6Address(text.partition("%")[0])
    return address


# A process sees few distinct peers and clients: each is parsed and written out once. Only what
# the socket says is cached, never a header's text, which a client may vary at will.
_SEEN = 4096


@functools.lru_cache(maxsize=_SEEN)
def _peer_address(peer: str) -> Address | None:
    return parse_address(peer)


@functools.lru_cache(maxsize=_SEEN)
def address_text(address: Address) -> str:
    return str(address)


def within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[Network]
) -> Address | None:
    """The client's address.

    The TCP peer, unless the peer is a trusted proxy: then X-Forwarded-For is read from the right,
    skipping trusted proxies, and the first untrusted address is the client. Every entry right of
    it was written by a trusted proxy, so a client cannot choose what we read. An entry that is no
    address stops the walk at the last address we could check. None only for a peer that is no IP
    (a Unix socket).
    """
    address = _peer_address(peer) if peer else None
    if address is None or not within(address, proxies):
        return address
    hops = [item for value in forwarded_for for item in value.split(",") if item.strip()]
    for raw in reversed(hops):
        hop = parse_address(raw)
        if hop is None:
            return address
        address = hop
        if not within(address, proxies):
            return address
    return address


@functools.lru_cache(maxsize=_SEEN)
def bucket(address: Address | None, ipv6_prefix: int) -> str:
    """The rate-limit bucket: one per IPv4 address, one per IPv6 network of ipv6_prefix bits."""
    if address is None:
        return "unix"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return str(address)
