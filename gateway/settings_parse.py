"""The kinds of value a setting takes, each with its parser, and the error a bad one raises."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting has a value the gateway cannot use; the message names it."""


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def get(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    """`name` parsed, or `default` when it is unset or blank; the ValueError of a bad value
    becomes a ConfigError that names the key and the value."""
    raw = text(env, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise ConfigError(f"{name}={env[name]!r} is not valid{detail}") from None


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"

    def parse(raw: str) -> int:
        value = int(raw) if raw.isascii() and raw.isdigit() else -1
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"expected a whole number {bound}")
        return value

    return parse


def seconds(*, zero: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise ValueError("expected a number of seconds " + (">= 0" if zero else "> 0"))
        return value

    return parse


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return value

    return parse


def flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1 or 0")


def http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def redis_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix", "redis+cluster"):
        raise ValueError("expected a redis://, rediss://, unix:// or redis+cluster:// URL")
    if parts.scheme == "unix":
        return raw
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or not parts.hostname:
        raise ValueError("expected redis://host:port/db, the port from 1 to 65535")
    database = parts.path.strip("/")
    if database and not (database.isascii() and database.isdigit()):
        raise ValueError("expected a database number after the port, such as /0")
    return raw


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _network(item: str) -> Network:
    try:
        net = ipaddress.ip_network(item, strict=False)
    except ValueError:
        raise ValueError(f"{item!r} is not an IP address or CIDR") from None
    # Peers in IPv4-mapped form are compared as IPv4, so such a proxy is kept as IPv4 too.
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


def networks(raw: str) -> tuple[Network, ...]:
    return tuple(_network(item.strip()) for item in raw.split(",") if item.strip())


def names(raw: str) -> tuple[str, ...]:
    listed = tuple(item.strip() for item in raw.split(",") if item.strip())
    if any(any(c.isspace() for c in name) for name in listed):
        raise ValueError("expected comma-separated names without spaces")
    return listed


def origins(raw: str) -> tuple[str, ...]:
    listed = tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())
    for origin in listed:
        parts = urlsplit(origin)
        plain = parts.scheme in ("http", "https") and parts.netloc and not parts.path
        if origin != "*" and not (plain and not parts.query and not parts.fragment):
            raise ValueError(f"{origin!r} is not * or an origin such as https://app.example")
    return listed


def key_prefix(raw: str) -> str:
    if any(c in raw for c in "{} \t"):
        raise ValueError("no braces or spaces")
    return raw


def subset(options: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated choice of at least one of `options`, kept in their order."""

    def parse(raw: str) -> tuple[str, ...]:
        named = [item.strip().lower() for item in raw.split(",") if item.strip()]
        unknown = [name for name in named if name not in options]
        if unknown or not named:
            raise ValueError("expected a comma-separated list of " + ",".join(options))
        return tuple(option for option in options if option in named)

    return parse
