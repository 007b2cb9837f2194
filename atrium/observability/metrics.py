"""Prometheus metrics of the gateway, on a registry owned by one platform instance."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from atrium.bus.admin import BusAdmin, StreamInfo
    from atrium.gateway.budgets import Budget

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST

M = TypeVar("M", Counter, Gauge, Histogram)


class _Children(Generic[M]):
    """A metric's children by their label values, each looked up once and kept.

    prometheus_client's ``labels()`` validates, converts and locks on every call,
    which was most of the cost of recording a request. A child is made on first use,
    as ``labels()`` makes it, so exactly the same series exist; they are as many as
    the metric's own.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


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
        # What every request records, through kept children (see _Children).
        self._requests = _Children(self.requests)
        self._latency = _Children(self.latency)
        self._genai_duration = _Children(self.genai_duration)
        self._overhead = _Children(self.overhead)
        self._tokens = _Children(self.tokens)
        self._genai_tokens = _Children(self.genai_tokens)
        self._ttft = _Children(self.ttft)
        self._genai_ttft = _Children(self.genai_ttft)
        self._time_per_output_token = _Children(self.time_per_output_token)
        self._cache = _Children(self.cache)
        self._in_flight = _Children(self.in_flight)

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
        self._requests(model, endpoint, code).inc()
        self._latency(model, endpoint, code).observe(seconds)
        error = "" if status < 400 else code
        self._genai_duration(endpoint, model, error).observe(seconds)
        if overhead_seconds is not None:
            self._overhead(endpoint).observe(overhead_seconds)
        if prompt_tokens:
            self._tokens(model, "prompt").inc(prompt_tokens)
            self._genai_tokens(endpoint, model, "input").observe(prompt_tokens)
        if completion_tokens:
            self._tokens(model, "completion").inc(completion_tokens)
            self._genai_tokens(endpoint, model, "output").observe(completion_tokens)

    def observe_first_token(self, model: str, endpoint: str, seconds: float) -> None:
        """Record a stream's time to first token."""
        self._ttft(model, endpoint).observe(seconds)
        self._genai_ttft(endpoint, model).observe(seconds)

    def observe_per_token(self, endpoint: str, model: str, seconds: float) -> None:
        """Record a stream's time per output token after the first."""
        self._time_per_output_token(endpoint, model).observe(seconds)

    def cache_result(self, result: str) -> None:
        """Count a cacheable request by its result (``hit``, ``miss``, ``semantic_hit``)."""
        self._cache(result).inc()

    def in_flight_of(self, model: str) -> Gauge:
        """The requests-in-flight gauge of ``model``."""
        return self._in_flight(model)

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


_RELEASE_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, 43200, 86400)


class ReleaseMetrics:
    """The release pipeline: time from detection to production, outcomes, canary weight."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.detection_to_production = Histogram(
            "atrium_release_detection_to_production_seconds",
            "Seconds from a release's detection to 100% production traffic, by model.",
            ["model"],
            buckets=_RELEASE_BUCKETS,
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "atrium_release_stage_seconds",
            "Seconds each pipeline stage took, by stage.",
            ["stage"],
            buckets=_RELEASE_BUCKETS,
            registry=registry,
        )
        self.outcomes = Counter(
            "atrium_releases",
            "Finished releases by model and outcome (promoted, rolled_back, failed, aborted).",
            ["model", "outcome"],
            registry=registry,
        )
        self.canary_weight = Gauge(
            "atrium_release_canary_weight_percent",
            "Traffic percent on the version being rolled out, by public model name.",
            ["model"],
            registry=registry,
        )


class BudgetMetrics:
    """Spend against USD budgets: the share of its budget each key or team has spent.

    Set for every stored budget when a process starts, then whenever the gateway reads
    or charges a budget. ``subject`` is ``key:<id>`` or ``team:<id>``
    (ids, never key material); only keys and teams with a budget appear.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.spent_ratio = Gauge(
            "atrium_budget_spent_ratio",
            "Share of its budget a key or team has spent this period (1 = all of it).",
            ["subject", "period"],
            registry=registry,
        )

    def spent(self, budget: Budget, usd: float) -> None:
        """Record ``usd`` spent of ``budget`` (the ledgers' ``on_spend``)."""
        ratio = usd / budget.limit_usd if budget.limit_usd > 0 else 1.0
        self.spent_ratio.labels(budget.subject, budget.period).set(ratio)


class BusMetrics:
    """The event bus: stream lengths, consumer lag and pending entries, dead letters.

    Refreshed from the bus's admin operations (``streams()``, ``dead_letters()``) by
    each scrape of ``/metrics`` and by the alert service's loop, not on the publish path.
    """

    #: Dead letters counted at most (a larger backlog reads as this many).
    DEAD_LETTER_CAP = 10_000

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stream_length = Gauge(
            "atrium_bus_stream_length", "Entries retained in each event stream.", ["topic"],
            registry=registry,
        )  # fmt: skip
        self.lag = Gauge(
            "atrium_bus_consumer_lag",
            "Entries not yet delivered to a consumer group, by topic and group.",
            ["topic", "group"],
            registry=registry,
        )
        self.pending = Gauge(
            "atrium_bus_pending",
            "Entries delivered to a group but not yet acknowledged, by topic and group.",
            ["topic", "group"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "atrium_bus_dead_letters", "Events in the dead-letter stream.", registry=registry
        )
        self.consumers_live = Gauge(
            "atrium_bus_consumers_live",
            "Consumers of a group seen polling lately (0: nobody handles its events).",
            ["topic", "group"],
            registry=registry,
        )
        self._groups: set[tuple[str, str]] = set()

    def update(self, streams: Iterable[StreamInfo], dead_letters: int) -> None:
        """Set every gauge from one reading of the bus; a group gone since the last
        reading (a replica's own, destroyed when it stopped) loses its series."""
        seen: set[tuple[str, str]] = set()
        for stream in streams:
            self.stream_length.labels(stream.topic).set(stream.length)
            for group in stream.groups:
                seen.add((stream.topic, group.name))
                self.pending.labels(stream.topic, group.name).set(group.pending)
                self.consumers_live.labels(stream.topic, group.name).set(group.live_consumers)
                if group.lag is not None:
                    self.lag.labels(stream.topic, group.name).set(group.lag)
        for gone in self._groups - seen:
            for gauge in (self.pending, self.consumers_live, self.lag):
                with contextlib.suppress(KeyError):  # lag is not set for every group
                    gauge.remove(*gone)
        self._groups = seen
        self.dead_letters.set(dead_letters)

    async def refresh(self, bus: BusAdmin) -> None:
        """Read the bus's streams and dead letters and set every gauge from them."""
        dead = await bus.dead_letters(limit=self.DEAD_LETTER_CAP)
        self.update(await bus.streams(), len(dead))


class WorkerMetrics:
    """Workflow workers heartbeating now, by role (refreshed by the alert service)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.live = Gauge(
            "atrium_workflow_workers_live",
            "Workflow worker processes whose heartbeat is fresh, by role.",
            ["role"],
            registry=registry,
        )

    def update(self, live_by_role: Mapping[str, int]) -> None:
        """Set each role's count (a role seen before and absent now reads 0)."""
        for role in {*self._roles(), *live_by_role}:
            self.live.labels(role).set(live_by_role.get(role, 0))

    def _roles(self) -> set[str]:
        return {s.labels["role"] for metric in self.live.collect() for s in metric.samples}


_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class WorkflowMetrics:
    """Workflow runs and their blocks: outcomes by workflow, run and block durations.

    Labels carry workflow names and block types (both bounded by what admins define),
    never run ids or inputs. A run recovered after a crash replays its walk: its blocks
    are observed again, its end once.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "atrium_workflow_runs",
            "Workflow runs ended, by workflow and status (succeeded, failed, cancelled).",
            ["workflow", "status"],
            registry=registry,
        )
        self.run_duration = Histogram(
            "atrium_workflow_run_duration_seconds",
            "Wall time of a workflow run's walk, by workflow (runs not cancelled).",
            ["workflow"],
            buckets=_RUN_BUCKETS,
            registry=registry,
        )
        self.block_duration = Histogram(
            "atrium_workflow_block_duration_seconds",
            "Wall time of a block (all its attempts), by block type and status.",
            ["block_type", "status"],
            buckets=_RUN_BUCKETS,
            registry=registry,
        )

    def run_finished(self, workflow: str, status: str, seconds: float | None) -> None:
        """Record a run that ended; ``seconds`` is None for one cancelled from outside
        (its walk's time is not known where it is cancelled)."""
        self.runs.labels(workflow, status).inc()
        if seconds is not None:
            self.run_duration.labels(workflow).observe(seconds)

    def block_finished(self, block_type: str, status: str, seconds: float) -> None:
        """Record a block that ended."""
        self.block_duration.labels(block_type, status).observe(seconds)


class RagMetrics:
    """Knowledge bases: queries and retrieval latency by knowledge base and search mode,
    documents indexed and failed by knowledge base.

    Labels carry knowledge-base names and modes only, never query text.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "atrium_rag_queries",
            "Retrievals (searches, queries and RAG chat turns) by knowledge base and mode.",
            ["knowledge_base", "mode"],
            registry=registry,
        )
        self.retrieval_duration = Histogram(
            "atrium_rag_retrieval_duration_seconds",
            "Time to retrieve (embed, search, rerank), by knowledge base and mode.",
            ["knowledge_base", "mode"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.documents_indexed = Counter(
            "atrium_rag_documents_indexed",
            "Documents added or updated in a knowledge base's index, by knowledge base.",
            ["knowledge_base"],
            registry=registry,
        )
        self.documents_failed = Counter(
            "atrium_rag_documents_failed",
            "Documents that could not be read, parsed or indexed, by knowledge base.",
            ["knowledge_base"],
            registry=registry,
        )

    def retrieved(self, knowledge_base: str, mode: str, seconds: float) -> None:
        """Record one retrieval."""
        self.queries.labels(knowledge_base, mode).inc()
        self.retrieval_duration.labels(knowledge_base, mode).observe(seconds)

    def synced(self, knowledge_base: str, indexed: int, failed: int) -> None:
        """Record a sync's (or an upload's) indexed and failed documents."""
        if indexed:
            self.documents_indexed.labels(knowledge_base).inc(indexed)
        if failed:
            self.documents_failed.labels(knowledge_base).inc(failed)
