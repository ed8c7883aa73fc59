"""Settings, read once from a mapping of environment variables, and the typed limits they set."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

from gateway.i18n import language_from_env
from gateway.keyring import Keyring, load_keyring
from gateway.quota import LARGEST, Limit, request_limits, token_budgets

T = TypeVar("T")

FAILURE_MODES = ("local", "open", "closed")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The families of OpenAI's API relayed under /v1; OPENAI_ROUTES turns each on or off.
OPENAI_FAMILIES = (
    "chat",
    "completions",
    "embeddings",
    "models",
    "responses",
    "moderations",
    "images",
    "audio",
)
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


@dataclass(frozen=True)
class Settings:
    api_key: Secret | None = None
    second_limit: int = 0
    minute_limit: int = 0
    hour_limit: int = 0
    day_limit: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0
    default_reserve_tokens: int = 1024
    route: str = "/"
    language: str = "en"
    language_unknown: str | None = None
    host: str = "0.0.0.0"
    port: int = 5000
    openai_base_url: str = "https://api.openai.com/v1"
    default_model: str = "gpt-4o-mini"
    default_max_tokens: int = 100
    max_tokens_cap: int = 3500
    upstream_timeout: float = 60.0
    max_body_bytes: int = 1024 * 1024
    max_upstream_body_bytes: int = 32 * 1024 * 1024
    redis_url: str | None = None
    redis_cluster: bool = False
    redis_timeout: float = 0.5
    redis_call_timeout: float = 5.0
    replicas: int = 1
    redis_failure_mode: str = "local"
    key_prefix: str = "gw"
    trusted_proxies: tuple[Network, ...] = ()
    ipv6_prefix: int = 64
    stream_heartbeat: float = 10.0
    log_format: str = "text"
    log_level: str = "INFO"
    log_level_libraries: str = "WARNING"
    openai_routes: tuple[str, ...] = OPENAI_FAMILIES
    shutdown_grace: float = 30.0
    workers: int = 1
    limits: tuple[Limit, ...] = field(init=False)
    budgets: tuple[Limit, ...] = field(init=False)
    playground: bool = True
    gateway_keys: Keyring = field(default_factory=Keyring)
    body_timeout: float = 30.0
    header_timeout: float = 15.0
    allowed_models: tuple[str, ...] = ()
    max_completion_tokens_cap: int = 0
    max_n: int = 0
    allow_ips: tuple[Network, ...] = ()
    deny_ips: tuple[Network, ...] = ()
    ops_allow: tuple[Network, ...] = ()
    ops_token: Secret | None = None
    cors_origins: tuple[str, ...] = ()
    otel_endpoint: str | None = None
    otel_service_name: str = "chatgpt-gateway"

    def __post_init__(self) -> None:
        limits = request_limits(
            self.second_limit, self.minute_limit, self.hour_limit, self.day_limit
        )
        object.__setattr__(self, "limits", limits)
        budgets = token_budgets(self.tokens_per_minute, self.tokens_per_day)
        object.__setattr__(self, "budgets", budgets)


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _get(env: Mapping[str, str], name: str, parse: Callable[[str], T], default: T) -> T:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        detail = f" ({exc})" if str(exc) else ""
        raise ConfigError(f"{name}={env[name]!r} is not valid{detail}") from None


def _whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"

    def parse(raw: str) -> int:
        value = int(raw) if raw.isascii() and raw.isdigit() else -1
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"expected a whole number {bound}")
        return value

    return parse


def _seconds(*, zero: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise ValueError("expected a number of seconds " + (">= 0" if zero else "> 0"))
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in options:
            raise ValueError("expected one of " + ", ".join(options))
        return value

    return parse


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1 or 0")


# The gateway's own paths; the legacy route may not shadow them.
RESERVED_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json")


def _route(raw: str) -> str:
    path = raw.strip("/")
    if any(c in path for c in "?#{} \t") or "//" in path:
        raise ValueError("expected a path such as api or v2/chat")
    route = "/" + path
    if route in RESERVED_PATHS or route == "/v1" or route.startswith("/v1/"):
        raise ValueError(
            "that path is one of the gateway's own: /v1/..., " + ", ".join(RESERVED_PATHS)
        )
    return route


def _base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL")
    return raw.rstrip("/")


def _redis_url(raw: str) -> str:
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


def _networks(raw: str) -> tuple[Network, ...]:
    return tuple(_network(item.strip()) for item in raw.split(",") if item.strip())


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(item.strip() for item in raw.split(",") if item.strip())
    if any(any(c.isspace() for c in name) for name in names):
        raise ValueError("expected comma-separated names without spaces")
    return names


# Who may read /metrics and /readyz by default: loopback and the private ranges that compose
# networks, Kubernetes pods and their kubelets use.
OPS_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(item.strip().rstrip("/") for item in raw.split(",") if item.strip())
    for origin in origins:
        parts = urlsplit(origin)
        plain = parts.scheme in ("http", "https") and parts.netloc and not parts.path
        if origin != "*" and not (plain and not parts.query and not parts.fragment):
            raise ValueError(f"{origin!r} is not * or an origin such as https://app.example")
    return origins


def _key_prefix(raw: str) -> str:
    if any(c in raw for c in "{} \t"):
        raise ValueError("no braces or spaces")
    return raw


def _log_level(raw: str) -> str:
    value = raw.upper()
    if value not in LOG_LEVELS:
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return value


def _families(raw: str) -> tuple[str, ...]:
    named = [item.strip().lower() for item in raw.split(",") if item.strip()]
    unknown = [name for name in named if name not in OPENAI_FAMILIES]
    if unknown or not named:
        raise ValueError("expected a comma-separated list of " + ",".join(OPENAI_FAMILIES))
    return tuple(family for family in OPENAI_FAMILIES if family in named)


def redis_location(url: str, cluster: bool) -> str:
    """Where Redis is, for a log line: host and port (or socket), database, TLS; no password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        where = f"unix socket {parts.path}"
    else:
        where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
        where += "" if cluster else f" database {parts.path.strip('/') or '0'}"
    tls = " (TLS)" if parts.scheme == "rediss" else ""
    return f"{'Redis Cluster' if cluster else 'Redis'} at {where}{tls}"


def _keyring(env: Mapping[str, str]) -> Keyring:
    try:
        return load_keyring(_text(env, "GATEWAY_KEYS"), _text(env, "GATEWAY_KEYS_FILE"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def environment(folder: Path | None = None) -> dict[str, str]:
    """What the gateway reads its settings from: the environment, over `.env` in the working
    directory (only there: python-dotenv's own search would start from this file)."""
    env_file = (folder or Path.cwd()) / ".env"
    found = dotenv_values(env_file) if env_file.is_file() else {}
    return {k: v for k, v in found.items() if v is not None} | dict(os.environ)


def _otel_endpoint(env: Mapping[str, str]) -> str | None:
    """Where traces go: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else
    OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended, as OpenTelemetry's own SDKs read them;
    None turns tracing off."""
    traces = _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _base_url, None)
    if traces is not None:
        return traces
    base = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT", _base_url, None)
    return None if base is None else base + "/v1/traces"


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse every setting; the first bad one raises ConfigError naming it and its value."""
    api_key = _text(env, "API_KEY")
    language, unknown = language_from_env(env.get("LANG"))
    redis_url = _get(env, "REDIS_URL", _redis_url, None)
    cluster = _get(env, "REDIS_CLUSTER", _flag, False)
    if redis_url and redis_url.startswith("redis+cluster://"):
        redis_url, cluster = "redis://" + redis_url[len("redis+cluster://") :], True
    settings = Settings(
        api_key=Secret(api_key) if api_key else None,
        second_limit=_get(env, "SECOND_LIMIT", _whole(0, LARGEST), 0),
        minute_limit=_get(env, "MINUTE_LIMIT", _whole(0, LARGEST), 0),
        hour_limit=_get(env, "HOUR_LIMIT", _whole(0, LARGEST), 0),
        day_limit=_get(env, "DAY_LIMIT", _whole(0, LARGEST), 0),
        route=_get(env, "ROUTE", _route, "/"),
        language=language,
        language_unknown=unknown,
        host=_get(env, "HOST", str, "0.0.0.0"),
        port=_get(env, "PORT", _whole(1, 65535), 5000),
        openai_base_url=_get(env, "OPENAI_BASE_URL", _base_url, "https://api.openai.com/v1"),
        default_model=_get(env, "DEFAULT_MODEL", str, "gpt-4o-mini"),
        default_max_tokens=_get(env, "DEFAULT_MAX_TOKENS", _whole(1), 100),
        max_tokens_cap=_get(env, "MAX_TOKENS_CAP", _whole(1), 3500),
        upstream_timeout=_get(env, "UPSTREAM_TIMEOUT", _seconds(), 60.0),
        max_body_bytes=_get(env, "MAX_BODY_BYTES", _whole(1), 1024 * 1024),
        max_upstream_body_bytes=_get(env, "MAX_UPSTREAM_BODY_BYTES", _whole(1), 32 * 1024 * 1024),
        redis_url=redis_url,
        redis_cluster=cluster,
        redis_timeout=_get(env, "REDIS_TIMEOUT", _seconds(), 0.5),
        redis_call_timeout=_get(env, "REDIS_CALL_TIMEOUT", _seconds(), 5.0),
        replicas=_get(env, "REPLICAS", _whole(1), 1),
        redis_failure_mode=_get(env, "REDIS_FAILURE_MODE", _choice(FAILURE_MODES), "local"),
        key_prefix=_get(env, "KEY_PREFIX", _key_prefix, "gw"),
        trusted_proxies=_get(env, "TRUSTED_PROXIES", _networks, ()),
        ipv6_prefix=_get(env, "IPV6_PREFIX", _whole(1, 128), 64),
        stream_heartbeat=_get(env, "STREAM_HEARTBEAT", _seconds(), 10.0),
        tokens_per_minute=_get(env, "TOKENS_PER_MINUTE", _whole(0, LARGEST), 0),
        tokens_per_day=_get(env, "TOKENS_PER_DAY", _whole(0, LARGEST), 0),
        default_reserve_tokens=_get(env, "DEFAULT_RESERVE_TOKENS", _whole(1), 1024),
        log_format=_get(env, "LOG_FORMAT", _choice(LOG_FORMATS), "text"),
        log_level=_get(env, "LOG_LEVEL", _log_level, "INFO"),
        log_level_libraries=_get(env, "LOG_LEVEL_LIBRARIES", _log_level, "WARNING"),
        openai_routes=_get(env, "OPENAI_ROUTES", _families, OPENAI_FAMILIES),
        shutdown_grace=_get(env, "SHUTDOWN_GRACE", _seconds(zero=True), 30.0),
        workers=_get(env, "WORKERS", _whole(1, 64), 1),
        playground=_get(env, "PLAYGROUND", _flag, True),
        gateway_keys=_keyring(env),
        body_timeout=_get(env, "BODY_TIMEOUT", _seconds(), 30.0),
        header_timeout=_get(env, "HEADER_TIMEOUT", _seconds(), 15.0),
        allowed_models=_get(env, "ALLOWED_MODELS", _names, ()),
        max_completion_tokens_cap=_get(env, "MAX_COMPLETION_TOKENS_CAP", _whole(0), 0),
        max_n=_get(env, "MAX_N", _whole(0), 0),
        allow_ips=_get(env, "ALLOW_IPS", _networks, ()),
        deny_ips=_get(env, "DENY_IPS", _networks, ()),
        ops_allow=_get(env, "OPS_ALLOW", _networks, _networks(OPS_NETWORKS)),
        ops_token=_get(env, "OPS_TOKEN", Secret, None),
        cors_origins=_get(env, "CORS_ORIGINS", _origins, ()),
        otel_endpoint=_otel_endpoint(env),
        otel_service_name=_get(env, "OTEL_SERVICE_NAME", str, "chatgpt-gateway"),
    )
    if settings.allowed_models and settings.default_model not in settings.allowed_models:
        raise ConfigError(f"DEFAULT_MODEL={settings.default_model!r} is not in ALLOWED_MODELS")
    if settings.default_max_tokens > settings.max_tokens_cap:
        raise ConfigError(
            f"DEFAULT_MAX_TOKENS={settings.default_max_tokens} is above "
            f"MAX_TOKENS_CAP={settings.max_tokens_cap}"
        )
    for budget, name in ((settings.tokens_per_minute, "MINUTE"), (settings.tokens_per_day, "DAY")):
        if 0 < budget < settings.default_reserve_tokens:
            # Every call that names no max_tokens would be refused as too large for the budget.
            raise ConfigError(
                f"TOKENS_PER_{name}={budget} is below "
                f"DEFAULT_RESERVE_TOKENS={settings.default_reserve_tokens}"
            )
    for key in settings.gateway_keys.keys:
        for held in key.budgets:
            if held.quantity < settings.default_reserve_tokens:
                raise ConfigError(
                    f"the gateway key {key.name!r}: tokens_per_{held.name}={held.quantity} is "
                    f"below DEFAULT_RESERVE_TOKENS={settings.default_reserve_tokens}"
                )
    if settings.workers > 1 and not settings.redis_url:
        raise ConfigError(
            f"WORKERS={settings.workers} needs REDIS_URL: without it each worker would count "
            "its clients' requests alone"
        )
    if settings.playground and (settings.route + "/").startswith("/playground/"):
        raise ConfigError(f"ROUTE={env['ROUTE']!r} is the playground's path (or set PLAYGROUND=0)")
    return settings
