"""Knowledge-base configuration: what the admin API accepts and the store keeps as JSON.

Every field has a description: the API documents itself from these models, and the web
UI builds its forms from their JSON Schema.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atrium.rag.chunking import ChunkingSpec
from atrium.rag.types import BUILTIN_FIELDS, FieldType

#: A knowledge base's name: usable in URLs and in the model alias ``rag/<name>``.
KB_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: An access group or a declared field's name.
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoostRule(_Spec):
    """Multiply the score of chunks matching ``when`` by ``factor`` (< 1 buries them)."""

    when: dict[str, Any] = Field(
        description='A metadata filter, e.g. {"doc_type": "pdf"} or {"desk": {"$in": ["rates"]}}.'
    )
    factor: float = Field(gt=0, le=100, description="Score multiplier; 2 boosts, 0.5 buries.")


class RecencyRule(_Spec):
    """Decay scores with age: ``score * ((1 - weight) + weight * 0.5 ** (age / half_life))``."""

    field: str = Field("updated_at", description="A datetime field: builtin or declared.")
    half_life_days: float = Field(gt=0, le=36_500, description="Age at which the decay halves.")
    weight: float = Field(0.5, ge=0, le=1, description="Share of the score subject to decay.")


class RulesSpec(_Spec):
    """Business rules applied to every query of a knowledge base."""

    boosts: list[BoostRule] = Field(default_factory=list, max_length=50)
    recency: RecencyRule | None = Field(None, description="Favour recent documents.")
    pinned: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Document ids always ranked first when they match the query's scope.",
    )
    excluded: list[str] = Field(
        default_factory=list, max_length=1000, description="Document ids never returned."
    )


class RerankerSpec(_Spec):
    """A Cohere-style ``/rerank`` endpoint (Cohere, Jina, TEI, vLLM) that re-orders hits."""

    url: str = Field(description="Full URL of the rerank endpoint.")
    model: str = Field(description="Model name sent in the request.")
    api_key_secret: str | None = Field(None, description="Name of a stored secret: the API key.")
    candidates: int = Field(30, ge=2, le=200, description="How many fused hits to rerank.")
    timeout_seconds: float = Field(10.0, gt=0, le=120)


class RetrievalSpec(_Spec):
    """How a knowledge base searches by default (each query may override the mode, k, filters)."""

    mode: Literal["hybrid", "dense", "lexical"] = Field("hybrid", description="Which searches run.")
    fusion: Literal["weighted", "rrf"] = Field(
        "weighted",
        description=(
            "weighted: a convex combination of z-normalised scores; rrf: reciprocal rank fusion."
        ),
    )
    dense_weight: float = Field(0.5, ge=0, le=1, description="Weight of the dense score.")
    rrf_k: int = Field(60, ge=1, le=1000, description="RRF's rank constant.")
    candidates: int = Field(
        100,
        ge=10,
        le=2000,
        description=(
            "Hits each search contributes before fusion. More can rank a little better "
            "(SciFact nDCG@10 0.731 at 100, 0.735 at 200) at the cost of latency (p95 "
            "41 ms against 53 ms at 200,000 chunks): see bench/results/rag_beir.md."
        ),
    )
    top_k: int = Field(6, ge=1, le=100, description="Chunks returned by default.")
    mmr_lambda: float | None = Field(
        None, ge=0, le=1, description="MMR trade-off (1: relevance only); null turns MMR off."
    )
    feedback_weight: float = Field(
        0.3, ge=0, le=5, description="Strength of boosts learned from feedback (0 turns it off)."
    )
    reranker: RerankerSpec | None = None


class KnowledgeBaseSpec(_Spec):
    """Everything configurable about a knowledge base."""

    description: str = Field("", max_length=2000)
    embedder: str = Field(
        "default-embedding",
        description="An embedding model served by the gateway (the bundled MiniLM by default).",
    )
    answer_model: str = Field("default", description="The chat model that writes answers.")
    chunking: ChunkingSpec = Field(default_factory=ChunkingSpec)
    fields: dict[str, FieldType] = Field(
        default_factory=dict,
        description="Custom metadata fields that filters and rules may use, with their types.",
    )
    access_groups: list[Annotated[str, Field(pattern=_IDENT.pattern)]] = Field(
        default_factory=list,
        description=(
            "Groups whose keys may query this knowledge base; empty: any key with the "
            "inference scope. Documents inherit them unless their source sets its own."
        ),
    )
    retrieval: RetrievalSpec = Field(default_factory=RetrievalSpec)
    rules: RulesSpec = Field(default_factory=RulesSpec)

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, fields: dict[str, FieldType]) -> dict[str, FieldType]:
        for name in fields:
            if not _IDENT.match(name):
                raise ValueError(f"field name {name!r} must match {_IDENT.pattern}")
            if name in BUILTIN_FIELDS:
                raise ValueError(f"field {name!r} is builtin and cannot be redeclared")
        return fields

    @model_validator(mode="after")
    def _check_recency(self) -> KnowledgeBaseSpec:
        recency = self.rules.recency
        if recency is not None:
            kind = {**BUILTIN_FIELDS, **self.fields}.get(recency.field)
            if kind != "datetime":
                raise ValueError(f"rules.recency.field {recency.field!r} is not a datetime field")
        return self
