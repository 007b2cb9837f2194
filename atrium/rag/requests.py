"""The knowledge-base API's request bodies and the service's result types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atrium.rag.answer import Citation
from atrium.rag.connectors import SourceSpec
from atrium.rag.retrieval import RetrievalResult
from atrium.rag.specs import KB_NAME, KnowledgeBaseSpec


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the key's id, its access groups (None: an administrator), its header."""

    key_id: str | None
    groups: frozenset[str] | None
    authorization: str | None
    user: str | None = None


class KnowledgeBaseCreate(KnowledgeBaseSpec):
    """Body of ``POST /v1/knowledge-bases``: a name and the spec's fields."""

    name: str = Field(pattern=KB_NAME.pattern, description="Unique; used in rag/<name>.")


class SourceCreate(BaseModel):
    """Body of ``POST /v1/knowledge-bases/{kb}/sources``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    connector: SourceSpec
    access_groups: list[str] | None = Field(
        None, description="Groups that may read this source's documents (default: the KB's)."
    )
    sync_interval_minutes: int | None = Field(
        None, ge=1, le=525_600, description="Re-sync this often; null: only on request."
    )
    metadata: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Values of declared fields given to every document."
    )


class QueryRequest(BaseModel):
    """Body of ``POST /v1/knowledge-bases/{kb}/query`` (and ``/search`` without answer)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: str = Field(min_length=1, max_length=8000)
    top_k: int | None = Field(None, ge=1, le=100)
    mode: Literal["hybrid", "dense", "lexical"] | None = None
    filter: dict[str, Any] | None = None
    model: str | None = Field(None, min_length=1, description="Answer model override.")
    max_tokens: int | None = Field(None, ge=1, le=8192)
    stream: bool = False


class FeedbackRequest(BaseModel):
    """Body of ``POST /v1/knowledge-bases/{kb}/feedback``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_id: str = Field(min_length=1, max_length=40)
    rating: Literal["up", "down"] | None = None
    useful: list[str] = Field(default_factory=list, max_length=100)
    not_useful: list[str] = Field(default_factory=list, max_length=100)
    comment: str | None = Field(None, max_length=4000)


@dataclass(slots=True)
class Answer:
    """A query's result: the answer (unless retrieval only), citations and context."""

    query_id: str
    answer: str | None
    citations: list[Citation]
    retrieval: RetrievalResult
    model: str | None = None
    kb_id: str = ""
    #: The answer model's token usage (None for retrieval only).
    usage: dict[str, Any] | None = None

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view."""
        return {
            "object": "knowledge_base.answer",
            "query_id": self.query_id,
            "answer": self.answer,
            "model": self.model,
            "usage": self.usage,
            "citations": [citation.to_public() for citation in self.citations],
            "context": [
                {
                    "number": c.number,
                    "chunk_id": c.chunk.record.chunk_id,
                    "text": c.chunk.record.context,
                }
                for c in self.citations
            ],
            "timings_ms": self.retrieval.timings_ms,
        }


@dataclass(frozen=True, slots=True)
class PreparedChat:
    """What a ``rag/<knowledge base>`` chat completion needs from retrieval."""

    system_message: dict[str, str]
    model: str
    citations: list[dict[str, Any]]
    query_id: str
    #: The cited passages' whole text ({number, chunk_id, text}), as the query API gives.
    context: list[dict[str, Any]] = field(default_factory=list)
