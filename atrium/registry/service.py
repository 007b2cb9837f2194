"""The registry service: models, immutable versions, aliases, tags and lineage.

Registering a version is all-or-nothing: the source is checked (allowed place, size,
known format, readable header) before anything is copied; the copy goes to a staging
name; the row and the file's final name are written together while the version
number is held; any failure removes the file and writes no row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from atrium.core.errors import InvalidRequestError
from atrium.core.http import parse_data
from atrium.registry.store import ModelStore, OpenSource, StagedArtifact
from atrium.registry.types import (
    AliasSet,
    LineageCreate,
    ModelCreate,
    ModelMetadata,
    TagsUpdate,
    VersionCreate,
)
from atrium.store.registry import (
    AliasRecord,
    LineageRecord,
    ModelRecord,
    RegistryRepository,
    VersionDraft,
    VersionRecord,
)

__all__ = ["OBJECT_STORE_SCHEMES", "ModelView", "RegistryService", "SourcePolicy", "VersionView"]

#: URL schemes a version's source may use besides local paths.
OBJECT_STORE_SCHEMES: Final = frozenset({"gs", "gcs", "s3", "s3a", "az", "abfs", "abfss"})


@dataclass(frozen=True, slots=True)
class SourcePolicy:
    """Where model files may be registered from.

    Local paths (relative ones are taken from ``data_dir``) must lie inside one of
    ``allowed_roots`` and outside ``protected_paths``, so the API cannot be used to
    read arbitrary server files; URLs must use one of ``schemes``.
    """

    data_dir: Path
    allowed_roots: tuple[Path, ...] = ()
    protected_paths: tuple[Path, ...] = ()
    schemes: frozenset[str] = OBJECT_STORE_SCHEMES

    def check(self, source: str) -> str:
        """The path or URL to read ``source`` from; 400 when it is not allowed."""
        if "::" in source:
            # fsspec chains file systems with '::'; a chain could reach any of them.
            raise InvalidRequestError("a source cannot be a chained URL", param="source")
        scheme = urlsplit(source).scheme.lower()
        if scheme == "file":
            return self._local(unquote(urlsplit(source).path), source)
        if not scheme or len(scheme) == 1:  # a plain (or Windows drive) path
            return self._local(source, source)
        if scheme not in self.schemes:
            allowed = ", ".join(sorted(self.schemes)) or "none"
            msg = f"a source cannot be a {scheme}:// URL (allowed: local paths, {allowed})"
            raise InvalidRequestError(msg, param="source")
        return source

    def _local(self, path: str, shown: str) -> str:
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.data_dir / candidate
        resolved = candidate.resolve()
        roots = (self.data_dir, *self.allowed_roots)
        if not any(_within(resolved, root.resolve()) for root in roots):
            msg = f"{shown} is outside the folders models may be registered from"
            raise InvalidRequestError(msg, param="source", code="source_not_allowed")
        if any(_within(resolved, item.resolve()) for item in self.protected_paths):
            msg = f"{shown} holds Atrium's own data and cannot be registered"
            raise InvalidRequestError(msg, param="source", code="source_not_allowed")
        return str(resolved)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass(frozen=True, slots=True)
class ModelView:
    """A model with its versions and aliases."""

    model: ModelRecord
    versions: list[VersionRecord]
    aliases: list[AliasRecord]


@dataclass(frozen=True, slots=True)
class VersionView:
    """A version with the aliases pointing to it and its lineage."""

    version: VersionRecord
    aliases: list[AliasRecord] = field(default_factory=list)
    lineage: list[LineageRecord] = field(default_factory=list)


class RegistryService:
    """Models, versions, aliases, tags and lineage over a repository and a model store."""

    def __init__(
        self, repo: RegistryRepository, store: ModelStore, *, sources: SourcePolicy
    ) -> None:
        self._repo = repo
        self._store = store
        self._sources = sources

    @property
    def store(self) -> ModelStore:
        """The model store artifacts are copied into."""
        return self._store

    # Models ----------------------------------------------------------------------------

    async def create_model(self, body: ModelCreate) -> ModelRecord:
        """Create a model (409 if the name is taken)."""
        return await self._repo.create_model(body.name, body.description)

    async def list_models(self) -> list[ModelRecord]:
        """Every model, by name."""
        return await self._repo.list_models()

    async def describe_model(self, model: str) -> ModelView:
        """A model with its versions and aliases (404 if there is none)."""
        record = await self._repo.get_model(model)
        versions = await self._repo.versions(record.id)
        return ModelView(record, versions, await self._repo.aliases(record.id))

    # Versions --------------------------------------------------------------------------

    async def register_version(
        self,
        model: str,
        body: VersionCreate,
        *,
        admit: Callable[[VersionDraft], Awaitable[object]] | None = None,
    ) -> VersionRecord:
        """Register a new version from a file (or a remote endpoint); all or nothing.

        ``admit`` sees the version as read from the file's header (format, size,
        metadata) before anything is copied, and refuses it by raising (a release checks
        that a deployment pool can hold it).
        """
        record = await self._repo.get_model(model)
        if body.format == "remote":
            draft = self._draft("remote", {}, body)
            return await self._repo.add_version(record.id, draft, _constant(body.source))
        url = self._sources.check(body.source)
        source = await asyncio.to_thread(self._store.locate, url)
        inspection = await asyncio.to_thread(self._store.inspect, source)
        # Metadata is checked before the (possibly long) copy.
        draft = self._draft(inspection.format, inspection.metadata, body)
        if admit is not None:
            await admit(replace(draft, size_bytes=source.size))
        staged = await self._stage(source)
        draft = replace(draft, sha256=staged.sha256, size_bytes=staged.size_bytes)
        return await self._record(record, draft, staged)

    async def _stage(self, source: OpenSource) -> StagedArtifact:
        """Copy into staging; if the caller gives up meanwhile, the copy is removed."""
        copying = asyncio.ensure_future(asyncio.to_thread(self._store.stage, source))
        try:
            return await asyncio.shield(copying)
        except asyncio.CancelledError:
            # The thread cannot be stopped: discard its file when it is done.
            copying.add_done_callback(self._discard_late)
            raise

    def _discard_late(self, copying: asyncio.Future[StagedArtifact]) -> None:
        if not copying.cancelled() and copying.exception() is None:
            self._store.discard(copying.result())

    async def _record(
        self, model: ModelRecord, draft: VersionDraft, staged: StagedArtifact
    ) -> VersionRecord:
        targets: list[str] = []

        async def place(version: int) -> str:
            targets.append(self._store.target_uri(staged, model.name, version))
            return await asyncio.to_thread(self._store.place, staged, model.name, version)

        try:
            return await self._repo.add_version(model.id, draft, place)
        except BaseException:
            await asyncio.shield(self._clean_up(staged, targets))
            raise

    async def _clean_up(self, staged: StagedArtifact, targets: list[str]) -> None:
        await asyncio.to_thread(self._store.discard, staged)
        for uri in targets:
            await asyncio.to_thread(self._store.remove, uri)

    def _draft(self, fmt: str, found: dict[str, Any], body: VersionCreate) -> VersionDraft:
        given = {key: value for key, value in body.metadata.items() if value is not None}
        ids = {"source": body.source_name, "release_id": body.release_id}
        merged = {**found, **given, **{k: v for k, v in ids.items() if v is not None}}
        metadata = parse_data(ModelMetadata, merged).model_dump(mode="json", exclude_none=True)
        detail = {"source": body.source_name} if body.source_name else {}
        return VersionDraft(
            format=fmt,
            sha256=None,
            size_bytes=None,
            metadata=metadata,
            tags=body.tag_list(),
            release_ref=body.release_id,
            release_detail=detail,
        )

    async def versions(self, model: str) -> list[VersionRecord]:
        """A model's versions, oldest first."""
        record = await self._repo.get_model(model)
        return await self._repo.versions(record.id)

    async def describe_version(self, model: str, version: int) -> VersionView:
        """A version with the aliases pointing to it and its lineage."""
        record = await self._repo.get_model(model)
        found = await self._repo.get_version(record.id, version)
        return VersionView(
            found,
            await self._repo.aliases(record.id, version_id=found.id),
            await self._repo.lineage(found.id),
        )

    async def update_tags(self, model: str, version: int, body: TagsUpdate) -> VersionRecord:
        """Add and remove tags of a version."""
        record = await self._repo.get_model(model)
        return await self._repo.set_tags(record.id, version, body.add, body.remove)

    async def archive(self, model: str, version: int) -> VersionRecord:
        """Archive a version; 409 naming any alias still pointing to it."""
        record = await self._repo.get_model(model)
        return await self._repo.archive(record.id, version)

    # Aliases ---------------------------------------------------------------------------

    async def set_alias(self, model: str, alias: str, body: AliasSet) -> AliasRecord:
        """Point an alias at a version (compare-and-set with ``expected_version``)."""
        record = await self._repo.get_model(model)
        return await self._repo.set_alias(
            record.id, alias, body.version, expected=body.expected_version
        )

    async def delete_alias(self, model: str, alias: str) -> None:
        """Remove an alias (404 if there is none)."""
        record = await self._repo.get_model(model)
        await self._repo.delete_alias(record.id, alias)

    async def resolve(self, model: str, alias: str) -> VersionRecord:
        """The version an alias points to."""
        record = await self._repo.get_model(model)
        return await self._repo.resolve_alias(record.id, alias)

    # Lineage ---------------------------------------------------------------------------

    async def add_lineage(self, model: str, version: int, body: LineageCreate) -> LineageRecord:
        """Record a gate result, deployment or rollout of a version."""
        record = await self._repo.get_model(model)
        found = await self._repo.get_version(record.id, version)
        return await self._repo.add_lineage(found.id, body.kind, body.ref, body.detail)

    async def lineage(self, model: str, version: int) -> list[LineageRecord]:
        """A version's history, oldest first."""
        record = await self._repo.get_model(model)
        found = await self._repo.get_version(record.id, version)
        return await self._repo.lineage(found.id)


def _constant(uri: str) -> Callable[[int], Awaitable[str]]:
    async def place(_: int) -> str:
        return uri

    return place
