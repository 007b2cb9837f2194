"""Typed events, and the registry the Redis backend decodes them with."""

from __future__ import annotations

from collections.abc import Mapping
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


class RouteChanged(Event):
    """A route was set or removed through the admin API; every replica applies it."""

    type = "route.changed"

    name: str
    spec: dict[str, Any] | None  # None: the route was removed


class WorkflowRunFinished(Event):
    """A workflow run ended (succeeded, failed or cancelled); triggers may chain on it.

    Carries the run's outcome and outputs, never its inputs: a workflow's outputs are what
    it was built to hand on, its inputs may hold what the caller alone should see.
    """

    type = "workflow.run.finished"

    run_id: str
    workflow: str
    workflow_version: int
    status: str
    key_id: str
    outputs: dict[str, Any] = {}
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0


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
    RequestCompleted, RouteChanged, WorkflowRunFinished
)
"""Every event class by its ``type``; add new classes to the call above."""
