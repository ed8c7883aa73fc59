"""Who the client is: the trust rule for X-Forwarded-For, address forms, and IPv6 grouping."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.config import load_settings
from gateway.http.client_ip import bucket, client_address, parse_address

LB = "10.0.0.0/8"


def proxies(raw: str):
    return load_settings({"TRUSTED_PROXIES": raw}).trusted_proxies


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        # No trusted proxy: the header is ignored, whatever it says.
        ("203.0.113.7", ["198.51.100.1"], "", "203.0.113.7"),
        ("203.0.113.7", [], "", "203.0.113.7"),
        # An untrusted peer cannot choose its bucket even when proxies are configured.
        ("203.0.113.7", ["198.51.100.1"], LB, "203.0.113.7"),
        # A trusted load balancer: the address it appended is the client.
        ("10.0.0.5", ["198.51.100.1"], LB, "198.51.100.1"),
        # The client's own XFF entries sit left of the balancer's and are not read.
        ("10.0.0.5", ["6.6.6.6, 198.51.100.1"], LB, "198.51.100.1"),
        ("10.0.0.5", ["6.6.6.6", "198.51.100.1"], LB, "198.51.100.1"),
        # Several trusted hops: skip them all from the right.
        ("10.0.0.5", ["6.6.6.6, 198.51.100.1, 10.9.9.9, 10.1.1.1"], LB, "198.51.100.1"),
        ("127.0.0.1", ["198.51.100.1, 10.1.1.1"], f"{LB},127.0.0.1", "198.51.100.1"),
        # Every hop trusted: the leftmost one is as far as we can see.
        ("10.0.0.5", ["10.1.1.1, 10.2.2.2"], LB, "10.1.1.1"),
        # A trusted peer without the header is itself the client.
        ("10.0.0.5", [], LB, "10.0.0.5"),
        # Garbage stops the walk at the last address we could check.
        ("10.0.0.5", ["198.51.100.1, unknown"], LB, "10.0.0.5"),
        ("10.0.0.5", ["unknown, 10.1.1.1"], LB, "10.1.1.1"),
        # Ports and brackets, as some proxies write them.
        ("10.0.0.5", ["198.51.100.1:4711"], LB, "198.51.100.1"),
        ("10.0.0.5", ["[2001:db8::7]:4711"], LB, "2001:db8::7"),
        ("10.0.0.5", ["  198.51.100.1 ,"], LB, "198.51.100.1"),
        # IPv4-mapped IPv6 counts as IPv4, for the peer, the trust check and the header.
        ("::ffff:10.0.0.5", ["::ffff:198.51.100.1"], LB, "198.51.100.1"),
        ("::ffff:203.0.113.7", [], "", "203.0.113.7"),
        # IPv6 proxies.
        ("2001:db8:ffff::1", ["2001:db8:1:2::9"], "2001:db8:ffff::/48", "2001:db8:1:2::9"),
        ("fe80::1%eth0", [], "", "fe80::1"),
        # Not an IP peer (a Unix socket).
        (None, ["198.51.100.1"], LB, None),
    ],
)
def test_client_address(peer, xff, trusted, expected):
    found = client_address(peer, xff, proxies(trusted))
    assert (str(found) if found is not None else None) == expected


@pytest.mark.parametrize(
    ("address", "prefix", "expected"),
    [
        ("203.0.113.7", 64, "203.0.113.7"),
        ("2001:db8:1:2::1", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", 64, "2001:db8:1:3::/64"),
        ("2001:db8:1:2::1", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2::1", 128, "2001:db8:1:2::1/128"),
    ],
)
def test_bucket(address, prefix, expected):
    assert bucket(ipaddress.ip_address(address), prefix) == expected


def test_ipv4_mapped_shares_the_ipv4_bucket():
    mapped = parse_address("::ffff:203.0.113.7")
    assert bucket(mapped, 64) == bucket(parse_address("203.0.113.7"), 64) == "203.0.113.7"


@pytest.mark.parametrize("raw", ["", "unknown", "1.2.3", "[::1", "300.1.1.1", "_hidden"])
def test_parse_address_rejects_non_addresses(raw):
    assert parse_address(raw) is None
