"""The model registry: models, immutable versions, aliases, tags, lineage, model store."""

from atrium.registry.formats import (
    ArtifactError,
    ArtifactTooLargeError,
    Inspection,
    UnknownFormatError,
    inspect_artifact,
)
from atrium.registry.gguf import GGUFError, GGUFInfo, read_gguf
from atrium.registry.service import (
    OBJECT_STORE_SCHEMES,
    ModelView,
    RegistryService,
    SourcePolicy,
    VersionView,
)
from atrium.registry.store import ModelStore, StagedArtifact
from atrium.registry.types import (
    AliasSet,
    LineageCreate,
    ModelCreate,
    ModelMetadata,
    TagsUpdate,
    VersionCreate,
)

__all__ = [
    "OBJECT_STORE_SCHEMES",
    "AliasSet",
    "ArtifactError",
    "ArtifactTooLargeError",
    "GGUFError",
    "GGUFInfo",
    "Inspection",
    "LineageCreate",
    "ModelCreate",
    "ModelMetadata",
    "ModelStore",
    "ModelView",
    "RegistryService",
    "SourcePolicy",
    "StagedArtifact",
    "TagsUpdate",
    "UnknownFormatError",
    "VersionCreate",
    "VersionView",
    "inspect_artifact",
    "read_gguf",
]
