"""Releases: started from a watcher's detection or by hand, listed, shown and steered."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atrium.bus.base import EventBus, Subscription
from atrium.bus.dedup import once_per_event
from atrium.bus.events import ReleaseDetected
from atrium.core.errors import ConflictError, InvalidRequestError
from atrium.releases.pipeline import CONTROLS, ReleasePipeline
from atrium.releases.policy import ReleasePolicy
from atrium.store.releases import ReleaseRecord, ReleaseRepository

log = logging.getLogger("atrium.releases")

#: The consumer group detections are taken in: one worker starts each release.
DETECTIONS_GROUP = "releases"
_ENDED = frozenset({"succeeded", "failed", "rolled_back", "aborted"})


class ReleaseCreate(BaseModel):
    """Body of ``POST /v1/releases``: release a model file as a new version, by hand."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=100, description="Registry model.")
    uri: str = Field(min_length=1, max_length=2000, description="The model file (path or URL).")
    release_id: str | None = Field(None, max_length=500, description="The source's release id.")
    source: str = Field("manual", max_length=100)


class ReleaseService:
    """Creates releases and runs each through the pipeline."""

    def __init__(
        self,
        *,
        repo: ReleaseRepository,
        pipeline: ReleasePipeline,
        policies: Mapping[str, ReleasePolicy],
        bus: EventBus,
    ) -> None:
        self._repo = repo
        self._pipeline = pipeline
        self._policies = policies
        self._bus = bus
        self._subscription: Subscription | None = None

    @property
    def pipeline(self) -> ReleasePipeline:
        """The durable pipeline releases run through."""
        return self._pipeline

    async def start(self) -> None:
        """Start a release for every detection (one worker takes each, once: a detection
        delivered again, after its consumer died or stalled, would start a second release
        of the same model, so the handler is idempotent by event id on Redis)."""
        handler = once_per_event(self._bus, self.on_detected, scope=DETECTIONS_GROUP)
        self._subscription = await self._bus.subscribe(
            ReleaseDetected, DETECTIONS_GROUP, "c", handler
        )

    async def close(self) -> None:
        """Stop taking detections."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    async def on_detected(self, event: ReleaseDetected) -> None:
        """A watcher saw a release: run it when a policy covers its model."""
        if event.model not in self._policies:
            log.info("release %s of %s ignored: no release policy", event.release_id, event.model)
            return
        body = ReleaseCreate(
            model=event.model, uri=event.uri, release_id=event.release_id, source=event.source
        )
        await self.create(body)

    async def create(self, body: ReleaseCreate) -> ReleaseRecord:
        """Record a release and start its pipeline."""
        policy = self._policies.get(body.model)
        if policy is None:
            known = ", ".join(sorted(self._policies)) or "none"
            msg = f"no release policy for model {body.model!r} (releases.policies has: {known})"
            raise InvalidRequestError(msg, param="model")
        release = await self._repo.create(
            model=body.model,
            source=body.source,
            release_ref=body.release_id or body.uri,
            uri=body.uri,
            policy=policy.model_dump(mode="json"),
        )
        await self._pipeline.start(release.id)
        return release

    async def get(self, release_id: str) -> ReleaseRecord:
        """A release (404 if unknown)."""
        return await self._repo.get(release_id)

    async def list(self, model: str | None = None, limit: int = 100) -> list[ReleaseRecord]:
        """Releases, newest first."""
        return await self._repo.list(model, limit)

    async def control(self, release_id: str, action: str) -> ReleaseRecord:
        """Pause, resume, abort, promote, roll back, approve or reject a running release."""
        if action not in CONTROLS:
            allowed = ", ".join(sorted(CONTROLS))
            msg = f"unknown action {action!r} (one of {allowed})"
            raise InvalidRequestError(msg, param="action")
        release = await self._repo.get(release_id)
        if release.status in _ENDED:
            msg = f"release {release_id} has ended ({release.status}); nothing to {action}"
            raise ConflictError(msg, param="action")
        await self._pipeline.control(release_id, action)
        return release

    async def wait(self, release_id: str) -> ReleaseRecord:
        """Wait for a release to end, then return it."""
        await self._pipeline.wait(release_id)
        return await self._repo.get(release_id)


def release_public(release: ReleaseRecord) -> dict[str, Any]:
    """A release as the API shows it."""
    return {
        "object": "release",
        "id": release.id,
        "model": release.model,
        "version": release.version,
        "source": release.source,
        "release_id": release.release_ref,
        "uri": release.uri,
        "status": release.status,
        "stage": release.stage,
        "reason": release.reason,
        "weight": release.weight,
        "timeline": release.timeline,
        "created_at": int(release.created_at.timestamp()),
        "updated_at": int(release.updated_at.timestamp()),
        "finished_at": int(release.finished_at.timestamp()) if release.finished_at else None,
        "seconds_to_production": (release.updated_at - release.created_at).total_seconds()
        if release.stage == "promoted"
        else None,
    }
