"""What the gateway says as it starts: its settings in one block, and the risky ones as warnings."""

from __future__ import annotations

import ipaddress
import logging
from importlib.metadata import PackageNotFoundError, version

from gateway.config import Settings, redis_location
from gateway.quota import Limit

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def _version() -> str:
    try:
        return version("chatgpt-gateway")
    except PackageNotFoundError:
        return "unknown"


def _windows(limits: tuple[Limit, ...]) -> str:
    return ", ".join(f"{limit.quantity} per {limit.name}" for limit in limits) or "none"


def _limiter(settings: Settings) -> str:
    if settings.redis_url is None:
        return "embedded (in-process, one replica)"
    return (
        f"{redis_location(settings.redis_url, settings.redis_cluster)}, "
        f"REDIS_FAILURE_MODE={settings.redis_failure_mode}, REPLICAS={settings.replicas}"
    )


def _keys(settings: Settings) -> str:
    keys = settings.gateway_keys.keys
    if not keys:
        return "none (any client may call)"
    own = sum(1 for key in keys if key.subject is not None)
    return f"{len(keys)} ({own} with limits of their own)"


def describe(settings: Settings) -> list[str]:
    """One line per fact worth knowing at start; no secret is ever among them."""
    proxies = ", ".join(str(net) for net in settings.trusted_proxies) or "none"
    return [
        f"chatgpt-gateway {_version()}",
        f"listening on http://{settings.host}:{settings.port} (legacy route {settings.route})",
        f"upstream {settings.openai_base_url}",
        "server API_KEY " + ("set" if settings.api_key else "not set (clients bring their own)"),
        f"limits: {_windows(settings.limits)}",
        f"token budgets: {_windows(settings.budgets)}"
        + (f", {settings.default_reserve_tokens} reserved by default" if settings.budgets else ""),
        f"limiter: {_limiter(settings)}",
        f"gateway keys: {_keys(settings)}",
        f"trusted proxies: {proxies}",
        f"language: {settings.language}",
        "OpenAI routes: " + ",".join(settings.openai_routes),
        "playground: " + ("on at /playground" if settings.playground else "off"),
    ]


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def risks(settings: Settings) -> list[str]:
    """Combinations of settings that work, but probably not as the operator meant."""
    found = []
    if settings.api_key and not settings.gateway_keys and not _loopback(settings.host):
        found.append(
            f"open relay: API_KEY is set and HOST={settings.host} is not loopback, with no "
            "GATEWAY_KEYS: anyone who reaches this port spends that key (docs/security.md)"
        )
    return found


def log_startup(log: logging.Logger, settings: Settings) -> None:
    for line in describe(settings):
        log.info("%s", line)
    for line in risks(settings):
        log.warning("%s", line)
    if settings.language_unknown is not None:
        log.warning(
            "LANG=%r names no language we have; answering in English", settings.language_unknown
        )
