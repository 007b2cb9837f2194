"""ORM tables. The schema itself is owned by the Alembic migrations beside this module."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored as UTC and always read back with UTC tzinfo.

    PostgreSQL keeps the zone (``timestamptz``); SQLite stores a bare string and
    drops it, so values are converted to UTC on the way in and tagged on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            msg = "naive datetime given where a timezone-aware one is required"
            raise ValueError(msg)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every Atrium table."""

    # Named constraints, so migrations can drop or alter them on every backend.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class ApiKeyRow(Base):
    """An API key as stored: only the SHA-256 of the secret, never the secret."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    owner: Mapped[str] = mapped_column(String(200), nullable=False, default="", server_default="")
    display_prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True, index=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    # none_as_null: Python None must be SQL NULL ("all models"), not the JSON value null.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_period: Mapped[str | None] = mapped_column(String(8), nullable=True)
    # Groups whose knowledge-base chunks the key may read; None: none but ungrouped ones.
    access_groups: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    team_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("teams.id"), nullable=True, index=True
    )
    # Response cache: True caches by default, False never, None follows cache.by_default.
    cache: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class TeamRow(Base):
    """A team: owns keys; its limits apply to all of them together."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_parallel: Mapped[int | None] = mapped_column(Integer, nullable=True)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    budget_period: Mapped[str | None] = mapped_column(String(8), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class UsageRow(Base):
    """Requests, tokens and spend per day, key and model (fed by request.completed events)."""

    __tablename__ = "usage_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    team_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    requests: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    errors: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    spend_usd: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)


class RouteRow(Base):
    """A route set through the admin API (it overrides the settings' route of that name)."""

    __tablename__ = "routes"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    spec: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class KnowledgeBaseRow(Base):
    """A knowledge base: its spec (embedder, chunking, fields, access, rules) as JSON."""

    __tablename__ = "knowledge_bases"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    spec: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class KbSourceRow(Base):
    """A source of a knowledge base (upload folder, folder, SQL, HTTP, object store)."""

    __tablename__ = "kb_sources"
    __table_args__ = (UniqueConstraint("kb_id", "name", name="uq_kb_sources_kb_id_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(40), ForeignKey("knowledge_bases.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    spec: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Set when a replica claims the source's sync; a claim older than the stale limit
    # (its replica died mid-sync) may be taken over.
    sync_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class KbDocumentRow(Base):
    """A document of a source as last synced: its content hash, status and chunk count."""

    __tablename__ = "kb_documents"
    __table_args__ = (UniqueConstraint("source_id", "key", name="uq_kb_documents_source_id_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    source_id: Mapped[str] = mapped_column(String(40), ForeignKey("kb_sources.id"), nullable=False)
    key: Mapped[str] = mapped_column(String(1000), nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    title: Mapped[str | None] = mapped_column(String(500), nullable=True)
    uri: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    doc_type: Mapped[str | None] = mapped_column(String(20), nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class KbQueryRow(Base):
    """A question answered from a knowledge base, kept so feedback can refer to it."""

    __tablename__ = "kb_queries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    query: Mapped[str] = mapped_column(Text, nullable=False)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    retrieved: Mapped[list[dict[str, object]]] = mapped_column(JSON, nullable=False)
    query_vector: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class KbFeedbackRow(Base):
    """Feedback on an answer: a rating and the chunks the reader found (not) useful."""

    __tablename__ = "kb_feedback"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(40), nullable=False, index=True)
    query_id: Mapped[str] = mapped_column(String(40), ForeignKey("kb_queries.id"), nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    useful: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    not_useful: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class SecretRow(Base):
    """A named secret, encrypted with the store's Fernet key (never stored in clear)."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class WorkflowRow(Base):
    """A workflow: its editable draft and the number of its latest published version."""

    __tablename__ = "workflows"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    draft: Mapped[dict[str, object] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    draft_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    published_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class WorkflowVersionRow(Base):
    """A published, immutable copy of a workflow's definition."""

    __tablename__ = "workflow_versions"
    __table_args__ = (
        UniqueConstraint("workflow_id", "version", name="uq_workflow_versions_workflow_id_version"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(40), ForeignKey("workflows.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    definition: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class WorkflowRunRow(Base):
    """A run of a workflow version (a child run's id extends its parent's)."""

    __tablename__ = "workflow_runs"
    # (workflow_id, created_at) also serves lookups by workflow_id alone.
    __table_args__ = (
        Index("ix_workflow_runs_workflow_id_created_at", "workflow_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(40), nullable=False)
    version_id: Mapped[str] = mapped_column(String(40), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    inputs: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    outputs: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_id: Mapped[str] = mapped_column(String(40), nullable=False)
    trigger: Mapped[str] = mapped_column(String(40), nullable=False)
    parent_run_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    parent_node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WorkflowNodeRunRow(Base):
    """One block's execution in a run, as the run history shows it."""

    __tablename__ = "workflow_node_runs"

    run_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    block_type: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    inputs: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    outputs: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    handles: Mapped[list[str]] = mapped_column(JSON, nullable=False)


class WorkflowWorkerRow(Base):
    """A process that executes runs; a stale heartbeat lets another one take its runs over."""

    __tablename__ = "workflow_workers"

    executor_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    taken_over_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    taken_over_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WorkflowTriggerRow(Base):
    """What starts a workflow besides the API: a schedule, a webhook or an event."""

    __tablename__ = "workflow_triggers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(40), ForeignKey("workflows.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    config: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RegisteredModelRow(Base):
    """A model in the registry: a name its immutable versions are grouped under."""

    __tablename__ = "registered_models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ModelVersionRow(Base):
    """An immutable version of a model: its stored artifact and metadata (tags may change)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("registered_models.id"), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    artifact_uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    format: Mapped[str] = mapped_column(String(20), nullable=False)
    # "metadata" is reserved on declarative classes; the column keeps the plain name.
    meta: Mapped[dict[str, object]] = mapped_column("metadata", JSON, nullable=False)
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ModelAliasRow(Base):
    """A movable name (``production``, ``canary``...) for one version of a model."""

    __tablename__ = "model_aliases"

    model_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("registered_models.id"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("model_versions.id"), nullable=False, index=True
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ModelLineageRow(Base):
    """One link of a version's history: its release, gate results, deployments, rollouts."""

    __tablename__ = "model_lineage"
    __table_args__ = (Index("ix_model_lineage_version_id_created_at", "version_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("model_versions.id"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    ref: Mapped[str] = mapped_column(String(500), nullable=False)
    detail: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ReleaseDetectionRow(Base):
    """A release a watcher reported: each (watcher, key) once, so restarts never repeat one."""

    __tablename__ = "release_detections"
    __table_args__ = (UniqueConstraint("watcher", "key", name="uq_release_detections_watcher_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    watcher: Mapped[str] = mapped_column(String(100), nullable=False)
    key: Mapped[str] = mapped_column(String(1000), nullable=False)
    payload: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ReleaseRow(Base):
    """A release going through the pipeline: its stage, canary weight and stage timeline."""

    __tablename__ = "releases"
    __table_args__ = (Index("ix_releases_model_created_at", "model", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(100), nullable=False)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[str] = mapped_column(String(100), nullable=False)
    release_ref: Mapped[str] = mapped_column(String(500), nullable=False)
    uri: Mapped[str] = mapped_column(String(2000), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    stage: Mapped[str] = mapped_column(String(30), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    weight: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    policy: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    timeline: Mapped[list[dict[str, object]]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DeploymentRow(Base):
    """A deployment's spec and desired replicas, so a restarted control plane brings it back."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    desired: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ExperimentRow(Base):
    """An A/B experiment: a fixed sticky split between two models and its verdict."""

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    spec: Mapped[dict[str, object]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    verdict: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
