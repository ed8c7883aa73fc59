"""Prometheus instruments in one registry per app, so apps built side by side never share counts."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LIMITER_STATES = ("embedded", "redis", "local", "open", "closed")

# Redis round trips on a LAN take well under a millisecond; the top buckets catch REDIS_TIMEOUT.
_LIMITER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Model answers take seconds to minutes.
_UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by route pattern, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.key_requests = Counter(
            "gateway_key_requests",
            "Requests made with a gateway key, by the key's name (never the key) and status.",
            ("key_name", "status"),
            registry=self.registry,
        )
        self.limiter_decisions = Counter(
            "gateway_limiter_decisions",
            "Rate-limit decisions; window is the window that refused, or 'none' when allowed.",
            ("window", "decision"),
            registry=self.registry,
        )
        self.limiter_seconds = self._histogram(
            "gateway_limiter_seconds", "Time taken by one rate-limit decision.", _LIMITER_BUCKETS
        )
        self.upstream_first_byte = self._histogram(
            "gateway_upstream_first_byte_seconds",
            "Time from sending a request upstream to receiving its response headers.",
            _UPSTREAM_BUCKETS,
        )
        self.upstream_total = self._histogram(
            "gateway_upstream_seconds",
            "Time from sending a request upstream to the end of its response body.",
            _UPSTREAM_BUCKETS,
        )
        self.streams = Gauge(
            "gateway_streams_in_flight",
            "Streamed (text/event-stream) responses being sent right now.",
            registry=self.registry,
        )
        self.limiter_state = Enum(
            "gateway_limiter_state",
            "Where rate limits are counted now: embedded (no REDIS_URL), redis, or the "
            "REDIS_FAILURE_MODE in force while Redis is unreachable (local, open, closed).",
            states=list(LIMITER_STATES),
            registry=self.registry,
        )
        # Each request counts in two labelled series; finding a series is dearer than counting.
        self._series: dict[tuple[str, ...], Any] = {}

    def count_request(self, route: str, method: str, status: int) -> None:
        key = ("requests", route, method, str(status))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self.requests.labels(*key[1:])
        series.inc()

    def count_decision(self, window: str, decision: str) -> None:
        key = ("decisions", window, decision)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self.limiter_decisions.labels(*key[1:])
        series.inc()

    def _histogram(self, name: str, text: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, text, buckets=buckets, registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format, and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
