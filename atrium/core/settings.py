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

from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "ATRIUM_CONFIG"
DEFAULT_CONFIG_FILE = "atrium.yaml"


class ServerSettings(BaseModel):
    """The HTTP server."""

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
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


class OpenAICompatModel(BaseModel):
    """Any OpenAI-compatible upstream (vLLM, Ollama, llama.cpp server, OpenAI)."""

    backend: Literal["openai_compat"] = "openai_compat"
    base_url: HttpUrl = Field(description="Upstream base URL, ending in /v1.")
    upstream_model: str | None = Field(None, description="Model name upstream (default: ours).")
    api_key: SecretStr | None = Field(None, description="Bearer token for the upstream.")
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
    aliases: list[str] = Field(default_factory=list, description="Other public names.")


ModelSpec = Annotated[
    LlamaCppModel | OpenAICompatModel | OnnxEmbeddingModel, Field(discriminator="backend")
]


def _default_models() -> dict[str, ModelSpec]:
    return {
        "smollm2-135m": LlamaCppModel(aliases=["default"]),
        "all-minilm-l6-v2": OnnxEmbeddingModel(aliases=["default-embedding"]),
    }


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
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    models: dict[str, ModelSpec] = Field(
        default_factory=_default_models,
        description="Public model name -> backend and its parameters.",
    )

    @model_validator(mode="after")
    def _names_are_unique(self) -> Settings:
        seen: dict[str, str] = {}
        for name, spec in self.models.items():
            for public in (name, *spec.aliases):
                if public in seen:
                    msg = f"model name {public!r} is used by both {seen[public]!r} and {name!r}"
                    raise ValueError(msg)
                seen[public] = name
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
