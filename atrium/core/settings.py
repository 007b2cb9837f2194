"""One typed settings tree for the whole platform.

Values come, in order of precedence, from keyword arguments, ``ATRIUM_*``
environment variables (nested with ``__``, e.g. ``ATRIUM_STORE__URL``), the YAML
file named by ``ATRIUM_CONFIG`` (default ``atrium.yaml`` in the working
directory, when it exists), and the defaults documented on each field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from atrium.observability.config import AlertSettings, LoggingSettings, TracingSettings

CONFIG_ENV = "ATRIUM_CONFIG"
_MIB = 1024 * 1024
DEFAULT_CONFIG_FILE = "atrium.yaml"


class ServerSettings(BaseModel):
    """The HTTP server."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    request_log: bool = Field(
        True, description="Write one JSON line per request to standard output (no content)."
    )
    public_metrics: bool = Field(
        False, description="Serve /metrics without a key (otherwise an admin key is needed)."
    )


class StoreSettings(BaseModel):
    """The relational store. SQLite in the data directory unless a URL is given."""

    url: str | None = Field(
        None,
        description=(
            "SQLAlchemy async URL, e.g. postgresql+asyncpg://user@127.0.0.1:5432/atrium. "
            "Default: sqlite+aiosqlite:///<data_dir>/atrium.db"
        ),
    )
    pool_size: int = Field(10, ge=1, description="Connection pool size (PostgreSQL).")
    echo: bool = Field(False, description="Log every SQL statement.")


class RedisSettings(BaseModel):
    """Redis, used by the production backends of the bus (and later limits and cache)."""

    url: str = Field("redis://127.0.0.1:6379/0", description="redis-py URL.")


class BusSettings(BaseModel):
    """The event bus."""

    backend: Literal["inprocess", "redis"] = Field(
        "inprocess", description="inprocess (one process) or redis (Redis Streams)."
    )
    stream_prefix: str = Field("atrium:events:", description="Redis stream key prefix.")
    max_stream_length: int = Field(
        100_000, ge=100, description="Approximate bound on each stream (XADD MAXLEN ~)."
    )
    publish_queue: int = Field(
        10_000, ge=1, description="Events buffered off the hot path before new ones are dropped."
    )
    max_deliveries: int = Field(
        5, ge=1, description="Deliveries of an event before it becomes a dead letter."
    )
    claim_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="An event a consumer has held this long unacknowledged goes to another.",
    )
    retry_backoff_seconds: float = Field(
        0.5, ge=0, description="Wait before the first retry of a failed event; doubles after."
    )
    retry_backoff_max_seconds: float = Field(
        10.0, ge=0, description="Longest wait between retries of a failed event."
    )
    publish_attempts: int = Field(
        6, ge=1, description="Tries of a publish while Redis is unreachable (with backoff)."
    )
    replica_group_idle_seconds: float = Field(
        3600.0,
        gt=0,
        description=(
            "Redis: a replica's own consumer group (route and key changes, canary arms) "
            "none of whose consumers has sent a heartbeat for this long belongs to a "
            "replica that died; any live replica's housekeeping destroys it. A replica "
            "that stops cleanly destroys its groups itself. Above claim_idle_seconds."
        ),
    )

    @model_validator(mode="after")
    def _replica_groups_outlive_heartbeats(self) -> BusSettings:
        # Consumers send a heartbeat every third of claim_idle_seconds: a shorter bound
        # would sweep the groups of replicas that are alive.
        if self.replica_group_idle_seconds <= self.claim_idle_seconds:
            msg = "bus.replica_group_idle_seconds must be above bus.claim_idle_seconds"
            raise ValueError(msg)
        return self


class AuditSettings(BaseModel):
    """The audit trail (hash-chained, in the store)."""

    record_api_calls: bool = Field(
        True, description="Record admin and changing API calls (who, what, target, outcome)."
    )
    record_inference: bool = Field(
        True, description="Record each inference request's model, key, tokens and latency."
    )
    record_text: bool = Field(
        False,
        description=(
            "Also record the prompt and completion text of chat and completion requests "
            "(streams assembled), personal data redacted as the PII guardrail does. "
            "Needs record_inference."
        ),
    )
    max_text_chars: int = Field(
        4000, ge=1, description="Characters of prompt and of completion kept when record_text."
    )
    flush_seconds: float = Field(0.5, gt=0, description="How often queued entries are written.")
    queue: int = Field(10_000, ge=1, description="Entries queued before new ones are dropped.")


class AuthSettings(BaseModel):
    """API keys."""

    key_prefix: str = Field("atr-", description="Prefix of every generated API key.")
    bootstrap_key: SecretStr | None = Field(
        None,
        description=(
            "Admin key to create on first start. When unset and no key exists, one is "
            "generated and printed once."
        ),
    )
    cache_ttl_seconds: float = Field(
        5.0, ge=0, description="How long a verified key stays cached in each process."
    )


class SubjectLimits(BaseModel):
    """Limits of one subject (a model, for instance); unset means unlimited."""

    model_config = {"extra": "forbid"}

    rpm: int | None = Field(None, ge=1, description="Requests per minute.")
    tpm: int | None = Field(None, ge=1, description="Tokens per minute.")
    max_parallel: int | None = Field(None, ge=1, description="Requests in flight at once.")


class ModelPrice(BaseModel):
    """What a model costs, in US dollars per million tokens."""

    model_config = {"extra": "forbid"}

    input_per_million: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_per_million: float = Field(0.0, ge=0, description="USD per million completion tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """The cost of one request."""
        return (
            prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        ) / 1_000_000


class HotStateSettings(BaseModel):
    """Hot state: copies of chat conversations kept in front of the store for a while."""

    backend: Literal["inprocess", "redis"] = Field(
        "inprocess",
        description=(
            "inprocess (this process only) or redis (shared: any replica serves any user "
            "and sees another replica's writes at once)."
        ),
    )
    ttl_seconds: float = Field(
        300, gt=0, le=86_400, description="How long a copy is kept (the staleness bound)."
    )
    redis_prefix: str = Field("atrium:hot:", min_length=1, description="Redis key prefix.")
    max_entries: int = Field(10_000, ge=1, description="Copies kept in process (an LRU).")


class SemanticCacheSettings(BaseModel):
    """Answers for paraphrases: a cached deterministic answer to the most similar prompt."""

    enabled: bool = Field(
        False,
        description="On an exact-cache miss, embed the prompt and answer from the most similar "
        "cached prompt of the same model, parameters and scope above `threshold`.",
    )
    threshold: float = Field(
        0.93,
        gt=0,
        le=1,
        description="Cosine similarity from which a cached prompt counts as the same question "
        "(bundled MiniLM: paraphrases score about 0.95, 'What is 2+2?' vs '2+3?' 0.90).",
    )
    embedder: str = Field(
        "default-embedding", description="The catalog's embedding model that embeds prompts."
    )
    max_entries: int = Field(
        10_000,
        ge=1,
        description="In-process: prompts indexed in all, oldest dropped first. Redis: per "
        "model, parameters and scope.",
    )
    max_prompt_chars: int = Field(
        1000,
        ge=1,
        description="Longer prompts skip the semantic cache: the embedder reads only its first "
        "256 tokens, so two long prompts differing at the end would look alike.",
    )
    scope: Literal["team", "key"] = Field(
        "team",
        description="Who shares similar answers: keys of one team (keys without a team: only "
        "themselves), or each key alone.",
    )
    redis_prefix: str = Field(
        "atrium:semcache:", description="Redis key prefix of the prompt vectors."
    )


class CacheSettings(BaseModel):
    """The response cache (exact match, deterministic requests only)."""

    backend: Literal["off", "inprocess", "redis"] = Field(
        "off",
        description="off, inprocess (one process, LRU) or redis (shared by every replica).",
    )
    ttl_seconds: float = Field(3600, gt=0, description="How long an answer stays cached.")
    max_entries: int = Field(
        10_000, ge=1, description="In-process: answers kept before the least recently used go."
    )
    max_bytes: int = Field(
        256 * _MIB, ge=1, description="In-process: bytes kept before the least recently used go."
    )
    by_default: bool = Field(
        True,
        description="Cache deterministic requests unless they send `x-atrium-cache: off` "
        "(false: only those that send `x-atrium-cache: on`).",
    )
    redis_prefix: str = Field("atrium:cache:", description="Redis key prefix of cached answers.")
    max_entry_bytes: int = Field(
        4 * _MIB, ge=1, description="Answers bigger than this (serialised) are not cached."
    )
    redis_timeout_seconds: float = Field(
        0.5, gt=0, description="A Redis read or write slower than this counts as a miss."
    )
    redis_cooldown_seconds: float = Field(
        5.0,
        ge=0,
        description="After a Redis failure, how long the cache is skipped before Redis is tried.",
    )
    semantic: SemanticCacheSettings = Field(
        default_factory=SemanticCacheSettings,
        description="The semantic cache, consulted after an exact miss (off by default).",
    )


class GuardrailSettings(BaseModel):
    """Guardrails on prompts and answers; every rule is off by default."""

    pii_redaction: bool = Field(
        False,
        description=(
            "Replace email addresses, phone numbers, credit-card numbers (Luhn-checked), "
            "IBANs (checksum-checked) and US SSNs by [REDACTED:<kind>], in prompts before "
            "the model sees them and in answers."
        ),
    )
    blocked_terms: list[str] = Field(
        default_factory=list,
        description="Refuse prompts containing any of these (case-insensitive, whole words).",
    )
    prompt_injection: bool = Field(
        False,
        description=(
            "Refuse prompts that use well-known phrases for overriding a model's instructions "
            "(e.g. 'ignore all previous instructions'). A heuristic, not a defence on its own."
        ),
    )
    max_output_chars: int | None = Field(
        None,
        ge=1,
        description="Cut each answer choice at this many characters (finish_reason 'length').",
    )


class LimitSettings(BaseModel):
    """Rate limits."""

    backend: Literal["inprocess", "redis"] = Field(
        "inprocess",
        description="inprocess (one process) or redis (exact across every replica sharing it).",
    )
    on_redis_failure: Literal["open", "closed"] = Field(
        "open", description="When Redis is unreachable: admit (open) or refuse with 503 (closed)."
    )
    redis_prefix: str = Field("atrium:limits:", description="Redis key prefix of the buckets.")

    default_rpm: int | None = Field(None, ge=1, description="RPM for keys without their own.")
    default_tpm: int | None = Field(None, ge=1, description="TPM for keys without their own.")
    default_max_parallel: int | None = Field(
        None, ge=1, description="Requests in flight at once for keys without their own limit."
    )
    models: dict[str, SubjectLimits] = Field(
        default_factory=dict,
        description="Limits per model (canonical name), over every key that calls it.",
    )


class RouteTarget(BaseModel):
    """One arm of a route's weighted split."""

    model: str = Field(min_length=1, description="A model (or route) name.")
    weight: float = Field(1.0, gt=0, description="Relative share of the traffic.")


class RouteSpec(BaseModel):
    """A public name served by a weighted split with retries and a fallback chain."""

    model_config = {"extra": "forbid"}

    targets: list[RouteTarget] = Field(min_length=1, description="The split's arms.")
    sticky: Literal["none", "user", "header"] = Field(
        "user",
        description="Keep one caller on one arm by the request's `user` field, by a header, "
        "or not at all.",
    )
    sticky_header: str = Field("x-atrium-session", description="The header for sticky=header.")
    fallbacks: list[str] = Field(
        default_factory=list, description="Models tried in order when the chosen arm fails."
    )
    retries: int = Field(1, ge=0, le=10, description="Retries per target on retryable errors.")
    backoff_ms: float = Field(100.0, ge=0, description="First retry delay (doubles, jittered).")
    max_backoff_ms: float = Field(
        5000.0, ge=0, description="Longest wait before a retry, Retry-After included."
    )
    aliases: list[str] = Field(default_factory=list, description="Other public names.")


class LlamaCppModel(BaseModel):
    """A GGUF model run in process by llama.cpp."""

    backend: Literal["llamacpp"] = "llamacpp"
    path: Path | None = Field(None, description="GGUF file; default: the bundled SmolLM2.")
    n_ctx: int = Field(2048, ge=128, description="Context window in tokens.")
    n_threads: int | None = Field(None, ge=1, description="Threads per worker (default: CPUs).")
    workers: int = Field(1, ge=1, description="Model instances generating in parallel.")
    queue_limit: int = Field(32, ge=0, description="Requests waiting beyond the workers.")
    default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request omits it.")
    stream_interval_ms: int = Field(
        40,
        ge=0,
        description="Streamed tokens are handed to the server at most this often (the first "
        "at once); fewer wake-ups leave the cores to generation. 0: every token.",
    )
    aliases: list[str] = Field(default_factory=list, description="Other public names.")


UpstreamCapability = Literal["chat", "completions", "embeddings", "tools"]


class BreakerSettings(BaseModel):
    """The per-replica circuit breaker."""

    failures: int = Field(3, ge=1, description="Consecutive failures that open the breaker.")
    cooldown_seconds: float = Field(
        30.0, gt=0, description="How long an open breaker keeps the replica out (then one probe)."
    )


class OpenAICompatModel(BaseModel):
    """Any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, OpenAI)."""

    backend: Literal["openai_compat"] = "openai_compat"
    base_url: HttpUrl = Field(description="Upstream base URL, ending in /v1.")
    replicas: list[HttpUrl] = Field(
        default_factory=list,
        description="More base URLs serving the same model; requests are balanced over all.",
    )
    balancing: Literal["least_outstanding", "ewma", "round_robin"] = Field(
        "least_outstanding",
        description="How a replica is picked: fewest requests in flight, lowest latency "
        "(exponentially weighted), or weighted round robin.",
    )
    replica_weights: list[float] | None = Field(
        None, description="Round-robin weights, one per base URL (base_url first)."
    )
    breaker: BreakerSettings = Field(
        default_factory=BreakerSettings, description="When a replica is cooled down."
    )
    health_check_seconds: float = Field(
        10.0, ge=0, description="Probe each replica's /models this often (0: never)."
    )

    @model_validator(mode="after")
    def _one_weight_per_replica(self) -> OpenAICompatModel:
        if self.replica_weights is not None and len(self.replica_weights) != 1 + len(self.replicas):
            msg = "replica_weights needs one weight per base URL (base_url, then replicas)"
            raise ValueError(msg)
        _one_key_source(self.api_key, self.api_key_secret, required=False)
        return self

    @property
    def base_urls(self) -> list[HttpUrl]:
        """``base_url`` and the replicas, in order."""
        return [self.base_url, *self.replicas]

    upstream_model: str | None = Field(None, description="Model name upstream (default: ours).")
    api_key: SecretStr | None = Field(None, description="Bearer token for the upstream.")
    api_key_secret: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Name of a stored secret (PUT /v1/admin/secrets/NAME) holding the API key: "
        "encrypted at rest, read at use, rotated without a restart.",
    )
    timeout_seconds: float = Field(120.0, gt=0, description="Read timeout per request.")
    connect_timeout_seconds: float = Field(5.0, gt=0, description="Connect timeout.")
    max_connections: int = Field(256, ge=1, description="Pooled connections to the upstream.")
    completion_estimate: int = Field(
        512,
        ge=0,
        description="Completion tokens reserved against TPM limits when a request sets no "
        "max_tokens (reconciled with the real count afterwards).",
    )
    capabilities: list[UpstreamCapability] = Field(
        default_factory=lambda: list[UpstreamCapability](["chat", "completions", "tools"]),
        description="What the upstream serves.",
    )
    aliases: list[str] = Field(default_factory=list, description="Other public names.")


class OnnxEmbeddingModel(BaseModel):
    """A sentence-embedding model run in process by onnxruntime."""

    backend: Literal["onnx_embedding"] = "onnx_embedding"
    model_path: Path | None = Field(None, description="ONNX file; default: bundled MiniLM.")
    tokenizer_path: Path | None = Field(None, description="tokenizer.json; default: bundled.")
    max_tokens: int = Field(256, ge=8, le=512, description="Truncation length per input.")
    batch_size: int = Field(32, ge=1, description="Inputs per forward pass.")
    max_inputs: int = Field(2048, ge=1, description="Most inputs in one request.")
    workers: int = Field(
        3,
        ge=1,
        description=(
            "Requests embedded at once, each on its own thread. A knowledge-base sync "
            "keeps all but one busy (two cores' worth by default), so a short query "
            "never waits behind a long batch; with 1 thread per worker tiny inputs skip "
            "the cost of splitting one forward pass across threads."
        ),
    )
    threads_per_worker: int = Field(1, ge=1, description="onnxruntime threads per request.")
    aliases: list[str] = Field(default_factory=list, description="Other public names.")


class AnthropicModel(BaseModel):
    """A Claude model on Anthropic's Messages API, reached through the official SDK."""

    backend: Literal["anthropic"] = "anthropic"
    model: str = Field(min_length=1, description="Anthropic's model id, e.g. claude-sonnet-4-6.")
    api_key: SecretStr | None = Field(None, description="Anthropic API key.")
    api_key_secret: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Name of a stored secret (PUT /v1/admin/secrets/NAME) holding the API key: "
        "encrypted at rest, read at use, rotated without a restart.",
    )
    base_url: HttpUrl | None = Field(None, description="API base URL (default: the SDK's).")
    timeout_seconds: float = Field(120.0, gt=0, description="Timeout per request.")
    max_retries: int = Field(
        0, ge=0, description="SDK retries per request (the gateway retries on its own)."
    )
    default_max_tokens: int = Field(
        4096, ge=1, description="max_tokens when a request omits it (Anthropic requires one)."
    )
    completion_estimate: int = Field(
        512,
        ge=0,
        description="Completion tokens reserved against TPM limits when a request sets no "
        "max_tokens (reconciled with the real count afterwards).",
    )
    aliases: list[str] = Field(default_factory=list, description="Other public names.")

    @model_validator(mode="after")
    def _has_a_key(self) -> AnthropicModel:
        _one_key_source(self.api_key, self.api_key_secret, required=True)
        return self


def _one_key_source(key: SecretStr | None, secret: str | None, *, required: bool) -> None:
    if key is not None and secret is not None:
        msg = "set api_key or api_key_secret, not both"
        raise ValueError(msg)
    if required and key is None and secret is None:
        msg = "an api_key or api_key_secret is required"
        raise ValueError(msg)


class GeminiModel(BaseModel):
    """A Gemini model on the Gemini Developer API or Vertex AI, through google-genai."""

    backend: Literal["gemini"] = "gemini"
    model: str = Field(min_length=1, description="Gemini's model id, e.g. gemini-2.5-flash.")
    api_key: SecretStr | None = Field(
        None, description="Gemini API key (Vertex AI: express mode; else ADC credentials)."
    )
    api_key_secret: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Name of a stored secret (PUT /v1/admin/secrets/NAME) holding the API key: "
        "encrypted at rest, read at use, rotated without a restart.",
    )
    vertexai: bool = Field(False, description="Use Vertex AI instead of the Gemini API.")
    project: str | None = Field(None, description="Google Cloud project (Vertex AI).")
    location: str | None = Field(None, description="Google Cloud location (Vertex AI).")
    base_url: HttpUrl | None = Field(None, description="API base URL (default: the SDK's).")
    timeout_seconds: float = Field(120.0, gt=0, description="Timeout per request.")
    completion_estimate: int = Field(
        512,
        ge=0,
        description="Completion tokens reserved against TPM limits when a request sets no "
        "max_tokens (reconciled with the real count afterwards).",
    )
    aliases: list[str] = Field(default_factory=list, description="Other public names.")

    @model_validator(mode="after")
    def _auth_fits_the_api(self) -> GeminiModel:
        if not self.vertexai and (self.project or self.location):
            msg = "project and location apply to Vertex AI only (set vertexai: true)"
            raise ValueError(msg)
        _one_key_source(self.api_key, self.api_key_secret, required=not self.vertexai)
        return self


ModelSpec = Annotated[
    LlamaCppModel | OpenAICompatModel | OnnxEmbeddingModel | AnthropicModel | GeminiModel,
    Field(discriminator="backend"),
]


def _default_models() -> dict[str, ModelSpec]:
    return {
        "smollm2-135m": LlamaCppModel(aliases=["default"]),
        "all-minilm-l6-v2": OnnxEmbeddingModel(aliases=["default-embedding"]),
    }


class RagSettings(BaseModel):
    """The RAG engine: where chunks are indexed, what may be ingested."""

    index: Literal["lance", "pgvector"] = Field(
        "lance",
        description=(
            "lance: an embedded on-disk index in <data_dir>/index (LanceDB: ANN + BM25); "
            "pgvector: PostgreSQL with pgvector (HNSW) and full-text search at pgvector_url."
        ),
    )
    pgvector_url: str | None = Field(
        None, description="SQLAlchemy URL of the PostgreSQL with pgvector (index=pgvector)."
    )
    ann_threshold: int = Field(
        20_000, ge=0, description="Rows in a knowledge base before its ANN index is built."
    )
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Largest document accepted, uploaded or synced."
    )
    folder_roots: list[Path] = Field(
        default_factory=list,
        description="Server folders that folder and file:// sources may read (plus data_dir).",
    )
    allow_private_networks: bool = Field(
        False,
        description=(
            "Let HTTP sources and rerankers reach private, loopback and link-local "
            "addresses (off: guarded against SSRF)."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (or IPs / CIDRs) HTTP sources may reach even when private.",
    )
    feedback_threshold: float = Field(
        0.7,
        gt=0,
        le=1,
        description="Similarity from which a past query's feedback applies to a new one.",
    )


class SmtpSettings(BaseModel):
    """The mail server Notify blocks send email through."""

    host: str | None = Field(None, description="SMTP host; unset: email notifications are refused.")
    port: int = Field(587, ge=1, le=65535)
    username: str | None = None
    password_secret: str | None = Field(
        None, description="Name of the stored secret holding the SMTP password."
    )
    starttls: bool = True
    from_address: str | None = Field(None, description="Default sender address.")


class WorkflowSettings(BaseModel):
    """The workflow engine (durable runs on DBOS)."""

    enabled: bool = Field(True, description="Run the workflow engine in this process.")
    system_database_url: str | None = Field(
        None,
        description=(
            "DBOS system database (SQLAlchemy URL, e.g. postgresql://user@host:5432/atrium). "
            "Default: SQLite at <data_dir>/workflows.sqlite, or the store's PostgreSQL "
            "database when store.url is PostgreSQL."
        ),
    )
    executor_id: str | None = Field(
        None,
        description=(
            "This process's DBOS executor id. Default: 'local' on SQLite (a restart "
            "recovers its runs); host-pid-random on PostgreSQL (a worker that dies is "
            "taken over by the others)."
        ),
    )
    worker: bool = Field(
        True, description="Take runs from the shared queue (off: this replica only serves the API)."
    )
    queue_concurrency: int = Field(16, ge=1, le=1024, description="Queued runs per worker at once.")
    heartbeat_seconds: float = Field(2.0, gt=0, le=60, description="Worker heartbeat period.")
    takeover_after_seconds: float = Field(
        10.0, gt=0, le=3600, description="A worker silent this long has its runs taken over."
    )
    sync_timeout_seconds: float = Field(
        60.0, gt=0, le=3600, description="Longest a synchronous run request waits."
    )
    max_inputs_bytes: int = Field(1 * _MIB, ge=1024, description="Largest run input accepted.")
    allow_private_networks: bool = Field(
        False,
        description="Let HTTP and Notify blocks reach private, loopback and link-local addresses.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (or IPs / CIDRs) blocks may reach even when private.",
    )
    artifacts_url: str | None = Field(
        None,
        description=(
            "Where run artifacts (reports) are stored: any fsspec URL (gs://bucket/path, "
            "s3://...). Default: <data_dir>/artifacts."
        ),
    )
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)


class RegistrySettings(BaseModel):
    """The model registry: where model files are stored and may be registered from."""

    store_url: str | None = Field(
        None,
        description="Model store: a folder, an s3://, gs:// or az:// bucket (obstore), or "
        "another fsspec URL; default <data_dir>/registry.",
    )
    store_options: dict[str, Any] = Field(
        default_factory=dict,
        repr=False,
        description="A bucket's options (credentials, region, endpoint; the keys of "
        "atrium.core.objectstore.OPTION_KEYS); none: the server's own credentials.",
    )
    max_artifact_bytes: int = Field(64 * 1024**3, ge=1, description="Largest model file accepted.")
    source_roots: list[Path] = Field(
        default_factory=list,
        description="Server folders model files may be registered from (plus data_dir).",
    )


class DeployerSettings(BaseModel):
    """Where deployments' model replicas run."""

    kind: Literal["local", "kubernetes"] = Field(
        "local", description="Local processes, or a Kubernetes cluster."
    )
    kubernetes: dict[str, Any] = Field(
        default_factory=dict,
        description="The cluster, images and pools "
        "(atrium.runtime.deployers.kubernetes.KubernetesOptions).",
    )


class ReleaseSettings(BaseModel):
    """The release pipeline. Its parts are validated by ``atrium.releases`` when the
    platform is built (their schemas live beside the code that runs them)."""

    enabled: bool = Field(True, description="Run releases (needs workflows.enabled).")
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Registry model -> its release policy (atrium.releases.policy.ReleasePolicy).",
    )
    watchers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Release watchers (atrium.releases.watchers: Hub, /v1/models, folders).",
    )
    hub_webhook: dict[str, Any] | None = Field(
        None,
        description="Hugging Face Hub webhook receiver (atrium.releases.hub.HubWebhookConfig: "
        "secret, path); a public route checked by its secret.",
    )
    gate_suites: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Name -> quality gate suite (atrium.releases.gates.GateSuiteConfig).",
    )
    autoscale_interval_seconds: float = Field(
        2.0, gt=0, description="How often the autoscaler looks at local deployments."
    )


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _https_unless_loopback(url: str, field: str) -> str:
    """``url`` when it is https, or http on a loopback host (a local test provider)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in ("http", "https"):
        raise ValueError(f"web.oidc.{field} must be an absolute http(s) URL, not {url!r}")
    if parts.scheme != "https" and host not in _LOOPBACK_HOSTS:
        raise ValueError(f"web.oidc.{field} must use https (http only on a loopback host)")
    return url.rstrip("/") if field == "issuer" else url


class OidcSettings(BaseModel):
    """Optional OpenID Connect sign-in (authorization code + PKCE) next to passwords."""

    # A misspelt key (a literal ``client_secret``) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Offer 'Sign in with ...' on the login page.")
    issuer: str = Field(
        "https://accounts.google.com",
        description="The provider's issuer URL (its discovery document lives beneath it).",
    )
    display_name: str = Field(
        "", max_length=60, description="The button's name (default: Google, or the issuer's host)."
    )
    client_id: str = Field("", max_length=500, description="This app's client id there.")
    client_secret_secret: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Name of the stored secret holding the client secret (unset: public client).",
    )
    redirect_url: str | None = Field(
        None,
        description="The callback URL registered there (default: /v1/auth/oidc/callback here).",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "email", "profile"], description="Scopes to ask for."
    )
    allowed_domains: list[str] = Field(
        default_factory=list,
        description="E-mail domains that may sign in (empty: any verified e-mail).",
    )
    auto_create: bool = Field(
        True, description="Create a 'user' account on someone's first sign-in."
    )
    admin_emails: list[str] = Field(
        default_factory=list, description="E-mail addresses that get the admin role."
    )
    http_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Time limit of each call to the provider."
    )

    @model_validator(mode="after")
    def _check(self) -> OidcSettings:
        self.issuer = _https_unless_loopback(self.issuer, "issuer")
        if self.redirect_url is not None:
            _https_unless_loopback(self.redirect_url, "redirect_url")
        if self.enabled and not self.client_id:
            raise ValueError("web.oidc.client_id is required when web.oidc.enabled is true")
        if "openid" not in self.scopes:
            raise ValueError("web.oidc.scopes must include 'openid'")
        self.allowed_domains = [d.strip().lower().lstrip("@") for d in self.allowed_domains]
        self.admin_emails = [e.strip().lower() for e in self.admin_emails]
        if any("@" not in e for e in self.admin_emails):
            raise ValueError("web.oidc.admin_emails must hold e-mail addresses")
        return self

    @property
    def name(self) -> str:
        """What the login button calls the provider."""
        if self.display_name:
            return self.display_name
        host = urlsplit(self.issuer).hostname or self.issuer
        return "Google" if host == "accounts.google.com" else host


class WebSettings(BaseModel):
    """The web UI: its users' sessions and passwords, the first admin, the built files."""

    session_hours: float = Field(
        12.0, gt=0, le=24 * 30, description="How long a sign-in lasts before it must be renewed."
    )
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure cookies: 'auto' sets them when the request came over https."
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed sign-ins per username and address before a lockout."
    )
    login_window_seconds: float = Field(
        300.0, gt=0, description="The window (and lockout) of login_max_failures."
    )
    password_min_length: int = Field(10, ge=8, le=128, description="Shortest password accepted.")
    password_time_cost: int = Field(3, ge=1, description="argon2id passes.")
    password_memory_kib: int = Field(64 * 1024, ge=8 * 1024, description="argon2id memory (KiB).")
    admin_username: str = Field(
        "admin", min_length=1, description="The first admin, created when no user exists."
    )
    admin_password: SecretStr | None = Field(
        None,
        description=(
            "The first admin's password. Unset: one is generated and printed once on the "
            "first start."
        ),
    )
    ui_dir: Path | None = Field(
        None, description="The built web UI (default: the package's ui_dist folder)."
    )
    oidc: OidcSettings = Field(
        default_factory=OidcSettings, description="Optional OpenID Connect sign-in."
    )


class Settings(BaseSettings):
    """The root of Atrium's settings."""

    model_config = SettingsConfigDict(
        env_prefix="ATRIUM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        Path(".atrium"), description="Where everything embedded lives (SQLite, indexes)."
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    models: dict[str, ModelSpec] = Field(
        default_factory=_default_models,
        description="Public model name -> backend and its parameters.",
    )
    routes: dict[str, RouteSpec] = Field(
        default_factory=dict,
        description="Public name -> weighted split over models, with retries and fallbacks.",
    )
    cache: CacheSettings = Field(default_factory=CacheSettings)
    hot: HotStateSettings = Field(default_factory=HotStateSettings)
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="Model (canonical name) -> USD per million tokens, for spend reporting.",
    )
    rag: RagSettings = Field(default_factory=RagSettings)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    web: WebSettings = Field(default_factory=WebSettings)
    releases: ReleaseSettings = Field(default_factory=ReleaseSettings)
    deployer: DeployerSettings = Field(default_factory=DeployerSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    secret_key: SecretStr | None = Field(
        None,
        description=(
            "Fernet key (urlsafe base64, 32 bytes) encrypting stored secrets. Unset: a key "
            "file is created in data_dir on first start (mode 0600)."
        ),
    )
    credential_refresh_seconds: float = Field(
        60.0,
        ge=0,
        description="How long a model's api_key_secret is used before it is read again from "
        "the secret store (0: on every call).",
    )

    @model_validator(mode="after")
    def _names_are_unique(self) -> Settings:
        seen: dict[str, str] = {}
        named: list[tuple[str, list[str]]] = [(n, s.aliases) for n, s in self.models.items()]
        named += [(n, r.aliases) for n, r in self.routes.items()]
        for name, aliases in named:
            for public in (name, *aliases):
                if public in seen:
                    msg = f"model name {public!r} is used by both {seen[public]!r} and {name!r}"
                    raise ValueError(msg)
                seen[public] = name
        return self

    @model_validator(mode="after")
    def _routes_name_models(self) -> Settings:
        models = {p for n, s in self.models.items() for p in (n, *s.aliases)}
        for name, route in self.routes.items():
            named = [t.model for t in route.targets] + route.fallbacks
            unknown = [m for m in named if m not in models]
            if unknown:
                msg = f"route {name!r} names models that are not configured: {unknown}"
                raise ValueError(msg)
        return self

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to SQLite in the data directory."""
        if self.store.url:
            return self.store.url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'atrium.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        chosen = settings_cls.model_config.get("yaml_file")
        yaml_file = (
            Path(str(chosen)) if chosen else Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE))
        )
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file.is_file():
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Read settings, optionally from an explicit YAML file."""
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        msg = f"config file not found: {config_file}"
        raise FileNotFoundError(msg)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

    return _FromFile(**overrides)
