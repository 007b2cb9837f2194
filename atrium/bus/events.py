"""Typed events, and the registry the Redis backend decodes them with."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from atrium.bus.base import Event, event_type_name


class RequestCompleted(Event):
    """A gateway request finished, successfully or not.

    Carries accounting and timing only. It never carries prompt or completion
    text: events fan out to every consumer group and sit in the stream for a
    while, so content would leak far beyond the request's own access rules.
    """

    type = "request.completed"
    publisher = "atrium.gateway.service (every inference request)"

    model: str
    key_id: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    status: int
    stream: bool
    endpoint: str  # e.g. "chat.completions"
    team_id: str | None = None
    cost_usd: float = 0.0  # from the price table in settings; 0 for unpriced models
    # Which model of a route answered, the targets that failed before it (retries and
    # fallbacks), and the time to the first streamed token: canary analysis reads them.
    routed_to: str | None = None
    failed_targets: list[str] = []
    ttft_ms: float | None = None
    # True when the replica that served the request wrote its audit entry itself, with
    # the prompt and completion text (``audit.record_text``): the audit consumer skips it.
    audited: bool = False


class KeyChanged(Event):
    """An API key or web session was revoked or ended; every replica drops its cached copy.

    Carries the key's id only, never key material.
    """

    type = "key.changed"
    publisher = (
        "atrium.gateway.auth (revoked keys, ended web sessions), atrium.cli "
        "(`atrium keys revoke` and `keys cache`; `atrium users set-password` ends sessions)"
    )

    key_id: str


class KeyCreated(Event):
    """An API key was created (admin API or CLI): who owns it and what it may do.

    Carries the key's id, name and permissions, never key material (the secret is shown
    once, to the admin who created it, and nowhere else).
    """

    type = "key.created"
    publisher = "atrium.api.keys (POST /v1/admin/keys), atrium.cli (`atrium keys create`)"

    key_id: str
    name: str
    owner: str
    scopes: list[str]
    team_id: str | None = None
    expires_at: datetime | None = None


class UserChanged(Event):
    """A web UI user was created or changed by an admin (role, disabled, password reset),
    through the admin API or the CLI.

    ``change`` is ``created`` or ``updated``; ``fields`` names what an update changed
    (``role``, ``disabled``, ``display_name``, ``password``). Never a password or hash.
    """

    type = "user.changed"
    publisher = (
        "atrium.users.service (users created and changed through the admin API and by "
        "`atrium users create-admin` and `set-password`)"
    )

    user_id: str
    username: str
    change: str  # "created" or "updated"
    fields: list[str] = []
    role: str
    disabled: bool = False
    by: str | None = None  # the admin's user id; None for the first admin or a federated user


class TeamChanged(Event):
    """A team's limits or budget changed through the admin API; every replica drops its
    cached keys of that team, so the new values apply at once.

    Carries the team's id only.
    """

    type = "team.changed"
    publisher = "atrium.gateway.auth (team edits through the admin API)"

    team_id: str


class RouteChanged(Event):
    """A route was set or removed through the admin API; every replica applies it."""

    type = "route.changed"
    publisher = "atrium.gateway.route_admin (the routes admin API)"

    name: str
    spec: dict[str, Any] | None  # None: the route was removed


class WorkflowRunStarted(Event):
    """A workflow run's walk began in an engine (a child run too; again after a recovery).

    Names and ids only, never the run's inputs.
    """

    type = "workflow.run.started"
    publisher = "atrium.workflows.engine"

    run_id: str
    workflow: str
    workflow_version: int
    key_id: str


class WorkflowBlockFinished(Event):
    """One block of a workflow run ended: succeeded, failed or skipped.

    Status, timing and tokens only; a block's inputs and outputs stay in the run's
    history (they may be large, and may hold what only the caller should see).
    """

    type = "workflow.block.finished"
    publisher = "atrium.workflows.engine (every block that ends)"

    run_id: str
    node_id: str
    block_type: str
    status: str  # "succeeded", "failed" or "skipped"
    attempts: int = 0
    duration_ms: float | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


class WorkflowRunFinished(Event):
    """A workflow run ended (succeeded, failed or cancelled); triggers may chain on it.

    Carries the run's outcome and outputs, never its inputs: a workflow's outputs are what
    it was built to hand on, its inputs may hold what the caller alone should see.
    """

    type = "workflow.run.finished"
    publisher = "atrium.workflows.engine"

    run_id: str
    workflow: str
    workflow_version: int
    status: str
    key_id: str
    outputs: dict[str, Any] = {}
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0


class ReleaseDetected(Event):
    """A watcher saw a new model release (a Hub repository file, a provider model id, a file).

    ``watcher`` and ``key`` identify the detection: a watcher reports each key once.
    """

    type = "release.detected"
    publisher = "atrium.releases.watchers"

    watcher: str
    key: str
    source: str  # "huggingface", "openai", "folder", "webhook"
    model: str  # the registry model the release becomes a version of
    uri: str  # where its artifact is: a local path, an object-store URL, a provider model id
    release_id: str
    metadata: dict[str, Any] = {}


class ReleaseStageChanged(Event):
    """A release moved to a stage of the pipeline (or ended: promoted, rolled back, failed)."""

    type = "release.stage"
    publisher = "atrium.releases.pipeline"

    release_id: str
    model: str
    model_version: int | None = None
    stage: str
    status: str
    reason: str | None = None


class GateFinished(Event):
    """A quality gate ran on a model version."""

    type = "release.gate"
    publisher = "atrium.releases.pipeline"

    release_id: str
    model: str
    model_version: int
    gate: str
    passed: bool
    summary: str


class RolloutStepped(Event):
    """A canary step was analysed: the weight on the new version and the verdict."""

    type = "release.rollout"
    publisher = "atrium.releases.pipeline"

    release_id: str
    model: str
    model_version: int
    weight: float
    verdict: str  # "advance", "promote", "rollback", "hold"
    reason: str | None = None


class DeploymentScaled(Event):
    """A deployment's replica count changed (by the autoscaler or an operator)."""

    type = "deployment.scaled"
    publisher = "atrium.releases.deployments (autoscaler and operators)"

    deployment: str
    replicas_before: int
    replicas_after: int
    reason: str


class AlertFired(Event):
    """Something an operator must hear about: an alert rule fired, or a service raised
    an alert itself (a rolled-back release).

    ``rule`` is set when an alert rule fired it; such events never count for alert
    rules of kind ``event`` (an alert cannot re-trigger alerts in a loop).
    """

    type = "alert.fired"
    publisher = (
        "atrium.observability.alerts (every rule that fires), "
        "atrium.releases.pipeline (a rolled-back release)"
    )

    name: str
    severity: str  # "info", "warning", "critical"
    summary: str
    labels: dict[str, str] = {}
    rule: str | None = None
    value: float | None = None


class AlertResolved(Event):
    """A firing alert rule's condition no longer holds.

    Like the rule's ``alert.fired``, it never counts for alert rules of kind ``event``.
    """

    type = "alert.resolved"
    publisher = "atrium.observability.alerts (every rule that resolves)"

    name: str
    severity: str
    summary: str
    labels: dict[str, str] = {}
    rule: str
    value: float | None = None
    fired_at: datetime | None = None


class FeedbackGiven(Event):
    """A user rated an answer (thumbs up or down); A/B experiments count it per arm."""

    type = "feedback.given"
    publisher = "atrium.releases.experiments (POST /v1/feedback)"

    target: str  # the model (route arm) that answered
    positive: bool
    experiment: str | None = None
    user: str | None = None


class KnowledgeSynced(Event):
    """A knowledge source sync ended: what it saw, added, and how many documents failed.

    ``status`` is ``failed`` when the sync itself broke off (``error`` says why);
    documents that could not be read or parsed are counted in ``failed_documents``
    of a sync that otherwise went on. Names and counts only, never document text.
    """

    type = "knowledge.sync.finished"
    publisher = "atrium.rag.service (every source sync)"

    kb_id: str
    knowledge_base: str
    source_id: str
    source: str
    status: str  # "ok" or "failed"
    documents_seen: int
    added: int
    updated: int
    deleted: int
    failed_documents: int
    error: str | None = None
    seconds: float = 0.0


def _registry(*event_types: type[Event]) -> Mapping[str, type[Event]]:
    registry: dict[str, type[Event]] = {}
    for event_type in event_types:
        name = event_type_name(event_type)
        if name in registry:
            raise ValueError(f"event type {name!r} is defined twice")
        registry[name] = event_type
    # Read-only: the registry is a module-level constant, not shared mutable state.
    return MappingProxyType(registry)


EVENT_TYPES: Mapping[str, type[Event]] = _registry(
    RequestCompleted,
    RouteChanged,
    KeyChanged,
    KeyCreated,
    UserChanged,
    TeamChanged,
    WorkflowRunStarted,
    WorkflowBlockFinished,
    WorkflowRunFinished,
    ReleaseDetected,
    ReleaseStageChanged,
    GateFinished,
    RolloutStepped,
    DeploymentScaled,
    AlertFired,
    AlertResolved,
    FeedbackGiven,
    KnowledgeSynced,
)
"""Every event class by its ``type``; add new classes to the call above."""
