"""Settings, read once from a mapping of environment variables, and the typed limits they set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from gateway.i18n import language_from_env
from gateway.keyring import Keyring, load_keyring
from gateway.quota import LARGEST, Limit, request_limits, token_budgets
from gateway.settings_parse import ConfigError as ConfigError
from gateway.settings_parse import Network as Network
from gateway.settings_parse import Secret as Secret
from gateway.settings_parse import (
    choice,
    flag,
    get,
    http_url,
    key_prefix,
    names,
    networks,
    origins,
    redis_url,
    seconds,
    subset,
    text,
    whole,
)

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
    send_timeout: float = 30.0
    max_connections_per_ip: int = 0
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


# Who may read /metrics and /readyz by default: loopback and the private ranges that compose
# networks, Kubernetes pods and their kubelets use.
OPS_NETWORKS = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"


def _log_level(raw: str) -> str:
    value = raw.upper()
    if value not in LOG_LEVELS:
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return value


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
        return load_keyring(text(env, "GATEWAY_KEYS"), text(env, "GATEWAY_KEYS_FILE"))
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
    traces = get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", http_url, None)
    if traces is not None:
        return traces
    base = get(env, "OTEL_EXPORTER_OTLP_ENDPOINT", http_url, None)
    return None if base is None else base + "/v1/traces"


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse every setting; the first bad one raises ConfigError naming it and its value."""
    api_key = text(env, "API_KEY")
    language, unknown = language_from_env(env.get("LANG"))
    redis = get(env, "REDIS_URL", redis_url, None)
    cluster = get(env, "REDIS_CLUSTER", flag, False)
    if redis and redis.startswith("redis+cluster://"):
        redis, cluster = "redis://" + redis[len("redis+cluster://") :], True
    settings = Settings(
        api_key=Secret(api_key) if api_key else None,
        second_limit=get(env, "SECOND_LIMIT", whole(0, LARGEST), 0),
        minute_limit=get(env, "MINUTE_LIMIT", whole(0, LARGEST), 0),
        hour_limit=get(env, "HOUR_LIMIT", whole(0, LARGEST), 0),
        day_limit=get(env, "DAY_LIMIT", whole(0, LARGEST), 0),
        route=get(env, "ROUTE", _route, "/"),
        language=language,
        language_unknown=unknown,
        host=get(env, "HOST", str, "0.0.0.0"),
        port=get(env, "PORT", whole(1, 65535), 5000),
        openai_base_url=get(env, "OPENAI_BASE_URL", http_url, "https://api.openai.com/v1"),
        default_model=get(env, "DEFAULT_MODEL", str, "gpt-4o-mini"),
        default_max_tokens=get(env, "DEFAULT_MAX_TOKENS", whole(1), 100),
        max_tokens_cap=get(env, "MAX_TOKENS_CAP", whole(1), 3500),
        upstream_timeout=get(env, "UPSTREAM_TIMEOUT", seconds(), 60.0),
        max_body_bytes=get(env, "MAX_BODY_BYTES", whole(1), 1024 * 1024),
        max_upstream_body_bytes=get(env, "MAX_UPSTREAM_BODY_BYTES", whole(1), 32 * 1024 * 1024),
        redis_url=redis,
        redis_cluster=cluster,
        redis_timeout=get(env, "REDIS_TIMEOUT", seconds(), 0.5),
        redis_call_timeout=get(env, "REDIS_CALL_TIMEOUT", seconds(), 5.0),
        replicas=get(env, "REPLICAS", whole(1), 1),
        redis_failure_mode=get(env, "REDIS_FAILURE_MODE", choice(FAILURE_MODES), "local"),
        key_prefix=get(env, "KEY_PREFIX", key_prefix, "gw"),
        trusted_proxies=get(env, "TRUSTED_PROXIES", networks, ()),
        ipv6_prefix=get(env, "IPV6_PREFIX", whole(1, 128), 64),
        stream_heartbeat=get(env, "STREAM_HEARTBEAT", seconds(), 10.0),
        tokens_per_minute=get(env, "TOKENS_PER_MINUTE", whole(0, LARGEST), 0),
        tokens_per_day=get(env, "TOKENS_PER_DAY", whole(0, LARGEST), 0),
        default_reserve_tokens=get(env, "DEFAULT_RESERVE_TOKENS", whole(1), 1024),
        log_format=get(env, "LOG_FORMAT", choice(LOG_FORMATS), "text"),
        log_level=get(env, "LOG_LEVEL", _log_level, "INFO"),
        log_level_libraries=get(env, "LOG_LEVEL_LIBRARIES", _log_level, "WARNING"),
        openai_routes=get(env, "OPENAI_ROUTES", subset(OPENAI_FAMILIES), OPENAI_FAMILIES),
        shutdown_grace=get(env, "SHUTDOWN_GRACE", seconds(zero=True), 30.0),
        workers=get(env, "WORKERS", whole(1, 64), 1),
        playground=get(env, "PLAYGROUND", flag, True),
        gateway_keys=_keyring(env),
        body_timeout=get(env, "BODY_TIMEOUT", seconds(), 30.0),
        header_timeout=get(env, "HEADER_TIMEOUT", seconds(), 15.0),
        send_timeout=get(env, "SEND_TIMEOUT", seconds(), 30.0),
        max_connections_per_ip=get(env, "MAX_CONNECTIONS_PER_IP", whole(0), 0),
        allowed_models=get(env, "ALLOWED_MODELS", names, ()),
        max_completion_tokens_cap=get(env, "MAX_COMPLETION_TOKENS_CAP", whole(0), 0),
        max_n=get(env, "MAX_N", whole(0), 0),
        allow_ips=get(env, "ALLOW_IPS", networks, ()),
        deny_ips=get(env, "DENY_IPS", networks, ()),
        ops_allow=get(env, "OPS_ALLOW", networks, networks(OPS_NETWORKS)),
        ops_token=get(env, "OPS_TOKEN", Secret, None),
        cors_origins=get(env, "CORS_ORIGINS", origins, ()),
        otel_endpoint=_otel_endpoint(env),
        otel_service_name=get(env, "OTEL_SERVICE_NAME", str, "chatgpt-gateway"),
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
