"""How the registry's records look in the API."""

from __future__ import annotations

from typing import Any

from atrium.registry.service import ModelView, VersionView
from atrium.store.registry import AliasRecord, LineageRecord, ModelRecord, VersionRecord

__all__ = [
    "alias_public",
    "lineage_public",
    "model_public",
    "model_view_public",
    "version_public",
    "version_view_public",
]


def model_public(record: ModelRecord) -> dict[str, Any]:
    """A model as the API shows it."""
    return {
        "id": record.id,
        "object": "registry.model",
        "name": record.name,
        "description": record.description,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def model_view_public(view: ModelView) -> dict[str, Any]:
    """A model with its versions and aliases."""
    return {
        **model_public(view.model),
        "versions": [version_public(v) for v in view.versions],
        "aliases": {a.alias: a.version for a in view.aliases},
    }


def version_public(record: VersionRecord) -> dict[str, Any]:
    """A version as the API shows it."""
    return {
        "id": record.id,
        "object": "registry.model_version",
        "model_id": record.model_id,
        "version": record.version,
        "status": record.status,
        "format": record.format,
        "artifact_uri": record.artifact_uri,
        "sha256": record.sha256,
        "size_bytes": record.size_bytes,
        "metadata": record.metadata,
        "tags": record.tags,
        "created_at": record.created_at.isoformat(),
    }


def version_view_public(view: VersionView) -> dict[str, Any]:
    """A version with the aliases pointing to it and its lineage."""
    return {
        **version_public(view.version),
        "aliases": [a.alias for a in view.aliases],
        "lineage": [lineage_public(item) for item in view.lineage],
    }


def alias_public(record: AliasRecord) -> dict[str, Any]:
    """An alias and where it points."""
    return {
        "object": "registry.alias",
        "model_id": record.model_id,
        "alias": record.alias,
        "version": record.version,
        "version_id": record.version_id,
        "updated_at": record.updated_at.isoformat(),
    }


def lineage_public(record: LineageRecord) -> dict[str, Any]:
    """One link of a version's history."""
    return {
        "id": record.id,
        "object": "registry.lineage",
        "version_id": record.version_id,
        "kind": record.kind,
        "ref": record.ref,
        "detail": record.detail,
        "created_at": record.created_at.isoformat(),
    }
