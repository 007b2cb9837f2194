"""Request bodies of the registry API and the metadata every version carries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ALIAS_PATTERN",
    "NAME_PATTERN",
    "AliasSet",
    "Capability",
    "LineageCreate",
    "LineageKind",
    "ModelCreate",
    "ModelMetadata",
    "Tag",
    "TagsUpdate",
    "VersionCreate",
]

#: Model names appear in store paths: no slashes, no dots first.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
#: Aliases start with a letter, so an alias is never mistaken for a version number.
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
Tag = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\s,]+$")]

Capability = Literal["chat", "completions", "embeddings", "tools", "vision", "rerank"]
LineageKind = Literal["release", "gate", "deployment", "rollout"]


class ModelMetadata(BaseModel):
    """What is known about a version. Read from the file's header, then overridden.

    Unknown keys are kept: a watcher may record what its source says.
    """

    model_config = ConfigDict(extra="allow")

    architecture: str | None = Field(None, max_length=100)
    name: str | None = Field(None, max_length=500)
    parameter_count: int | None = Field(None, ge=0)
    quantization: str | None = Field(None, max_length=50)
    context_length: int | None = Field(None, ge=1)
    capabilities: list[Capability] | None = None
    licence: str | None = Field(None, max_length=200)
    source: str | None = Field(None, max_length=200, description="Where it came from (hf, ...).")
    release_id: str | None = Field(None, max_length=500)


class ModelCreate(BaseModel):
    """Body of ``POST /v1/registry/models``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field("", max_length=4000)


class VersionCreate(BaseModel):
    """Body of ``POST /v1/registry/models/{model}/versions``."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1,
        max_length=2000,
        description=(
            "The model file: a server path inside the allowed folders, or an object-store "
            "URL (gs://, s3://). With format 'remote', the endpoint serving the model."
        ),
    )
    format: Literal["remote"] | None = Field(
        None, description="'remote': nothing is copied; the model is served elsewhere."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    source_name: str | None = Field(None, max_length=200)
    release_id: str | None = Field(None, max_length=500)

    def tag_list(self) -> list[str]:
        """The tags, first occurrence kept."""
        return list(dict.fromkeys(self.tags))


class TagsUpdate(BaseModel):
    """Body of ``POST .../versions/{n}/tags``."""

    model_config = ConfigDict(extra="forbid")

    add: list[Tag] = Field(default_factory=list, max_length=50)
    remove: list[Tag] = Field(default_factory=list, max_length=50)


class AliasSet(BaseModel):
    """Body of ``PUT .../aliases/{alias}``."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    expected_version: int | None = Field(
        None, ge=1, description="Move only if the alias points here now (else 409)."
    )


class LineageCreate(BaseModel):
    """Body of ``POST .../versions/{n}/lineage``."""

    model_config = ConfigDict(extra="forbid")

    kind: LineageKind
    ref: str = Field(min_length=1, max_length=500)
    detail: dict[str, Any] = Field(default_factory=dict)
