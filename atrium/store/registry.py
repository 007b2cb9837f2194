"""The model registry's rows: models, immutable versions, movable aliases, lineage."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.store.db import Database
from atrium.store.tables import (
    ModelAliasRow,
    ModelLineageRow,
    ModelVersionRow,
    RegisteredModelRow,
)

# Concurrent registrations of one model race for the next number; the loser retries.
_VERSION_ATTEMPTS: Final = 8


def new_id(prefix: str) -> str:
    """A random id with a readable prefix (``mdl``, ``mv``, ``lin``)."""
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A registered model."""

    id: str
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VersionDraft:
    """What a new version is made of, before it has a number."""

    format: str
    sha256: str | None
    size_bytes: int | None
    metadata: dict[str, Any]
    tags: list[str]
    #: The release it came from: a ``release`` lineage row written with the version.
    release_ref: str | None = None
    release_detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """An immutable version of a model (only its tags and status change)."""

    id: str
    model_id: str
    version: int
    status: str
    artifact_uri: str
    sha256: str | None
    size_bytes: int | None
    format: str
    metadata: dict[str, Any]
    tags: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """An alias and the version it points to."""

    model_id: str
    alias: str
    version_id: str
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LineageRecord:
    """One link of a version's history."""

    id: str
    version_id: str
    kind: str
    ref: str
    detail: dict[str, Any]
    created_at: datetime


class RegistryRepository:
    """Persistence of the model registry."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._clock = clock or (lambda: datetime.now(UTC))

    # Models ----------------------------------------------------------------------------

    async def create_model(self, name: str, description: str = "") -> ModelRecord:
        """Create a model; a taken name is a 409."""
        now = self._clock()
        row = RegisteredModelRow(
            id=new_id("mdl"), name=name, description=description, created_at=now, updated_at=now
        )
        await self._db.insert(row, ConflictError(f"a model named {name!r} exists", param="name"))
        return _model(row)

    async def find_model(self, id_or_name: str) -> ModelRecord | None:
        """The model with this id or name, or None."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(RegisteredModelRow).where(
                    (RegisteredModelRow.id == id_or_name) | (RegisteredModelRow.name == id_or_name)
                )
            )
            return None if row is None else _model(row)

    async def get_model(self, id_or_name: str) -> ModelRecord:
        """The model with this id or name; 404 if there is none."""
        record = await self.find_model(id_or_name)
        if record is None:
            raise NotFoundError(f"no model {id_or_name!r} in the registry", code="model_not_found")
        return record

    async def list_models(self) -> builtins.list[ModelRecord]:
        """Every model, by name."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(RegisteredModelRow).order_by(RegisteredModelRow.name)
            )
            return [_model(row) for row in rows]

    # Versions --------------------------------------------------------------------------

    async def add_version(
        self, model_id: str, draft: VersionDraft, place: Callable[[int], Awaitable[str]]
    ) -> VersionRecord:
        """Record a version under the next free number.

        ``place(number)`` stores the artifact and returns its URI; it runs while the
        number is held by this transaction (not yet committed), so two registrations
        never place files under the same number. If ``place`` fails, no row is written.
        """
        for _ in range(_VERSION_ATTEMPTS):
            async with self._db.session() as session:
                row = await self._reserve(session, model_id, draft)
                if row is None:
                    continue
                row.artifact_uri = await place(row.version)
                await session.commit()
                return _version(row)
        msg = "too many versions of this model are being registered at once; retry"
        raise ConflictError(msg)

    async def _reserve(
        self, session: AsyncSession, model_id: str, draft: VersionDraft
    ) -> ModelVersionRow | None:
        latest = await session.scalar(
            select(func.max(ModelVersionRow.version)).where(ModelVersionRow.model_id == model_id)
        )
        row = ModelVersionRow(
            id=new_id("mv"),
            model_id=model_id,
            version=(latest or 0) + 1,
            status="registered",
            artifact_uri="",
            sha256=draft.sha256,
            size_bytes=draft.size_bytes,
            format=draft.format,
            meta=draft.metadata,
            tags=draft.tags,
            created_at=self._clock(),
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            await session.rollback()
            return None
        if draft.release_ref is not None:
            session.add(
                self._lineage_row(row.id, "release", draft.release_ref, draft.release_detail)
            )
        return row

    async def versions(self, model_id: str) -> builtins.list[VersionRecord]:
        """A model's versions, oldest first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(ModelVersionRow)
                .where(ModelVersionRow.model_id == model_id)
                .order_by(ModelVersionRow.version)
            )
            return [_version(row) for row in rows]

    async def get_version(self, model_id: str, version: int) -> VersionRecord:
        """Version ``version`` of a model; 404 if there is none."""
        async with self._db.session() as session:
            row = await self._version_row(session, model_id, version)
            return _version(row)

    async def set_tags(
        self, model_id: str, version: int, add: Sequence[str], remove: Sequence[str]
    ) -> VersionRecord:
        """Add and remove tags of a version (tags keep their first-added order)."""
        async with self._db.session() as session:
            row = await self._version_row(session, model_id, version, lock=True)
            kept = [tag for tag in row.tags if tag not in set(remove)]
            row.tags = kept + [tag for tag in dict.fromkeys(add) if tag not in kept]
            await session.commit()
            return _version(row)

    async def archive(self, model_id: str, version: int) -> VersionRecord:
        """Archive a version; 409 naming the aliases that still point to it."""
        async with self._db.session() as session:
            row = await self._version_row(session, model_id, version, lock=True)
            aliases = list(
                await session.scalars(
                    select(ModelAliasRow.alias)
                    .where(ModelAliasRow.version_id == row.id)
                    .order_by(ModelAliasRow.alias)
                )
            )
            if aliases:
                names = ", ".join(repr(a) for a in aliases)
                msg = f"version {version} cannot be archived: alias {names} points to it"
                raise ConflictError(msg, code="version_aliased")
            row.status = "archived"
            await session.commit()
            return _version(row)

    async def _version_row(
        self, session: AsyncSession, model_id: str, version: int, *, lock: bool = False
    ) -> ModelVersionRow:
        query = select(ModelVersionRow).where(
            ModelVersionRow.model_id == model_id, ModelVersionRow.version == version
        )
        # FOR UPDATE serialises archive and alias moves on PostgreSQL; SQLite has one writer.
        row = await session.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise NotFoundError(f"the model has no version {version}", code="version_not_found")
        return row

    # Aliases ---------------------------------------------------------------------------

    async def set_alias(
        self, model_id: str, alias: str, version: int, *, expected: int | None = None
    ) -> AliasRecord:
        """Point ``alias`` at a version, in one transaction.

        With ``expected``, the alias must currently point at that version number
        (compare-and-set); a different current target is a 409.
        """
        async with self._db.session() as session:
            target = await self._version_row(session, model_id, version, lock=True)
            if target.status != "registered":
                msg = f"version {version} is {target.status}; an alias cannot point to it"
                raise ConflictError(msg, code="version_archived")
            row = await session.get(ModelAliasRow, (model_id, alias), with_for_update=True)
            if expected is not None:
                await self._check_expected(session, row, alias, expected)
            if row is None:
                row = ModelAliasRow(model_id=model_id, alias=alias)
                session.add(row)
            row.version_id, row.updated_at = target.id, self._clock()
            try:
                await session.commit()
            except IntegrityError:
                raise ConflictError(f"alias {alias!r} changed meanwhile; retry") from None
            return AliasRecord(model_id, alias, target.id, target.version, row.updated_at)

    async def _check_expected(
        self, session: AsyncSession, row: ModelAliasRow | None, alias: str, expected: int
    ) -> None:
        current = None
        if row is not None:
            current = await session.scalar(
                select(ModelVersionRow.version).where(ModelVersionRow.id == row.version_id)
            )
        if current != expected:
            msg = f"alias {alias!r} points to version {current}, not {expected}"
            raise ConflictError(msg, code="alias_moved")

    async def delete_alias(self, model_id: str, alias: str) -> None:
        """Remove an alias; 404 if the model has no such alias."""
        async with self._db.session() as session:
            result = await session.execute(
                delete(ModelAliasRow).where(
                    ModelAliasRow.model_id == model_id, ModelAliasRow.alias == alias
                )
            )
            await session.commit()
        if not getattr(result, "rowcount", 0):
            raise NotFoundError(f"the model has no alias {alias!r}", code="alias_not_found")

    async def aliases(
        self, model_id: str, *, version_id: str | None = None
    ) -> builtins.list[AliasRecord]:
        """A model's aliases by name (only those pointing at ``version_id`` if given)."""
        query = (
            select(ModelAliasRow, ModelVersionRow.version)
            .join(ModelVersionRow, ModelVersionRow.id == ModelAliasRow.version_id)
            .where(ModelAliasRow.model_id == model_id)
            .order_by(ModelAliasRow.alias)
        )
        if version_id is not None:
            query = query.where(ModelAliasRow.version_id == version_id)
        async with self._db.session() as session:
            rows = (await session.execute(query)).all()
        return [
            AliasRecord(row.model_id, row.alias, row.version_id, number, row.updated_at)
            for row, number in rows
        ]

    async def resolve_alias(self, model_id: str, alias: str) -> VersionRecord:
        """The version an alias points to; 404 if there is no such alias."""
        async with self._db.session() as session:
            row = await session.scalar(
                select(ModelVersionRow)
                .join(ModelAliasRow, ModelAliasRow.version_id == ModelVersionRow.id)
                .where(ModelAliasRow.model_id == model_id, ModelAliasRow.alias == alias)
            )
        if row is None:
            raise NotFoundError(f"the model has no alias {alias!r}", code="alias_not_found")
        return _version(row)

    # Lineage ---------------------------------------------------------------------------

    async def add_lineage(
        self, version_id: str, kind: str, ref: str, detail: dict[str, Any]
    ) -> LineageRecord:
        """Record a link of a version's history."""
        row = self._lineage_row(version_id, kind, ref, detail)
        async with self._db.session() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                raise InvalidRequestError(f"no version {version_id!r}") from None
        return _lineage(row)

    def _lineage_row(
        self, version_id: str, kind: str, ref: str, detail: dict[str, Any]
    ) -> ModelLineageRow:
        return ModelLineageRow(
            id=new_id("lin"),
            version_id=version_id,
            kind=kind,
            ref=ref,
            detail=detail,
            created_at=self._clock(),
        )

    async def lineage(self, version_id: str) -> builtins.list[LineageRecord]:
        """A version's history, oldest first."""
        async with self._db.session() as session:
            rows = await session.scalars(
                select(ModelLineageRow)
                .where(ModelLineageRow.version_id == version_id)
                .order_by(ModelLineageRow.created_at, ModelLineageRow.id)
            )
            return [_lineage(row) for row in rows]


def _model(row: RegisteredModelRow) -> ModelRecord:
    return ModelRecord(row.id, row.name, row.description, row.created_at, row.updated_at)


def _version(row: ModelVersionRow) -> VersionRecord:
    return VersionRecord(
        id=row.id,
        model_id=row.model_id,
        version=row.version,
        status=row.status,
        artifact_uri=row.artifact_uri,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        format=row.format,
        metadata=dict(row.meta),
        tags=list(row.tags),
        created_at=row.created_at,
    )


def _lineage(row: ModelLineageRow) -> LineageRecord:
    return LineageRecord(
        row.id, row.version_id, row.kind, row.ref, dict(row.detail), row.created_at
    )
