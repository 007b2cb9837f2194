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
        # OpenTelemetry GenAI semantic conventions (gen_ai.* metrics, as Prometheus names).
        self.genai_duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "GenAI server request duration (gen_ai.server.request.duration).",
            ["gen_ai_operation_name", "gen_ai_request_model", "error_type"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.genai_tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request (gen_ai.client.token.usage), by type input or output.",
            ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
            buckets=(1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144),
            registry=self.registry,
        )
        self.genai_ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed token (gen_ai.server.time_to_first_token).",
            ["gen_ai_operation_name", "gen_ai_request_model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first (gen_ai.server.time_per_output_token).",
            ["gen_ai_operation_name", "gen_ai_request_model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.overhead = Histogram(
            "atrium_overhead_seconds",
            "Time Atrium itself spends on a request (all but the model's time).",
            ["endpoint"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
            registry=self.registry,
        )
        self.cache = Counter(
            "atrium_cache_requests",
            "Cacheable requests by result (hit or miss).",
            ["result"],
            registry=self.registry,
        )
        self.limit_rejections = Counter(
            "atrium_limit_rejections",
            "Requests refused by rate limits, by reason.",
            ["reason"],
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
        overhead_seconds: float | None = None,
    ) -> None:
        """Record one finished request."""
        code = str(status)
        self.requests.labels(model, endpoint, code).inc()
        self.latency.labels(model, endpoint, code).observe(seconds)
        error = "" if status < 400 else code
        self.genai_duration.labels(endpoint, model, error).observe(seconds)
        if overhead_seconds is not None:
            self.overhead.labels(endpoint).observe(overhead_seconds)
        if prompt_tokens:
            self.tokens.labels(model, "prompt").inc(prompt_tokens)
            self.genai_tokens.labels(endpoint, model, "input").observe(prompt_tokens)
        if completion_tokens:
            self.tokens.labels(model, "completion").inc(completion_tokens)
            self.genai_tokens.labels(endpoint, model, "output").observe(completion_tokens)

    def observe_first_token(self, model: str, endpoint: str, seconds: float) -> None:
        """Record a stream's time to first token."""
        self.ttft.labels(model, endpoint).observe(seconds)
        self.genai_ttft.labels(endpoint, model).observe(seconds)

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
