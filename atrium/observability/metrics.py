"""Prometheus metrics of the gateway, on a registry owned by one platform instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """Requests, latency, time to first token and tokens, by model and status.

    Labels carry model names, endpoints and statuses only: never key material.
    Unknown model names are reported as ``unknown`` so callers cannot grow the
    label set without bound.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "atrium_requests",
            "Inference requests by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "atrium_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["model", "endpoint", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "atrium_time_to_first_token_seconds",
            "Time from request to the first streamed chunk.",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "atrium_tokens",
            "Tokens processed, by model and direction (prompt or completion).",
            ["model", "direction"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "atrium_requests_in_flight",
            "Inference requests being served now.",
            ["model"],
            registry=self.registry,
        )
        self.retries = Counter(
            "atrium_route_retries",
            "Requests tried again on the same target, by route and target.",
            ["route", "target"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "atrium_route_fallbacks",
            "Requests passed to the next target of a fallback chain.",
            ["route", "failed", "to"],
            registry=self.registry,
        )
        self.cooldowns = Counter(
            "atrium_replica_cooldowns",
            "Times a replica's circuit breaker opened.",
            ["model", "replica"],
            registry=self.registry,
        )
        self.events_dropped = Gauge(
            "atrium_events_dropped",
            "Events dropped because the publish queue was full.",
            registry=self.registry,
        )

    def observe(
        self,
        *,
        model: str,
        endpoint: str,
        status: int,
        seconds: float,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        """Record one finished request."""
        code = str(status)
        self.requests.labels(model, endpoint, code).inc()
        self.latency.labels(model, endpoint, code).observe(seconds)
        if prompt_tokens:
            self.tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(model, "completion").inc(completion_tokens)

    def retried(self, route: str, target: str) -> None:
        """Count a retry (RoutingObserver)."""
        self.retries.labels(route, target).inc()

    def fell_back(self, route: str, failed: str, to: str) -> None:
        """Count a fallback (RoutingObserver)."""
        self.fallbacks.labels(route, failed, to).inc()

    def cooled_down(self, model: str, replica: str) -> None:
        """Count a breaker opening (RoutingObserver)."""
        self.cooldowns.labels(model, replica).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
