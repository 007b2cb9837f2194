"""The Retrieve block: passages from a knowledge base, as numbered context and citations."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from atrium.workflows.blocks._shared import checked_template, port_scope
from atrium.workflows.blocks.base import Block, BlockConfig, BlockContext, BlockError, BlockResult
from atrium.workflows.dsl import PortSpec
from atrium.workflows.expressions import render


class RetrieveConfig(BlockConfig):
    """Which knowledge base to search, for what, and how many passages to return."""

    knowledge_base: str = Field(
        min_length=1, max_length=200, description="The knowledge base's name."
    )
    top_k: int = Field(5, ge=1, le=50, description="How many passages to return.")
    filters: dict[str, Any] | None = Field(
        None, description="Metadata filters, passed to the knowledge base as they are."
    )
    query: str | None = Field(
        None, description="The query (a template); unset, the query input port is searched."
    )

    @field_validator("query")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return checked_template(value)


def numbered_context(citations: list[dict[str, Any]]) -> str:
    """Passages as ``[1] text`` blocks, numbered like the citations, for a prompt."""
    parts = []
    for index, citation in enumerate(citations, start=1):
        number = citation.get("number", index)
        text = str(citation.get("text") or citation.get("snippet") or "").strip()
        parts.append(f"[{number}] {text}")
    return "\n\n".join(parts)


class RetrieveBlock(Block):
    """Hybrid retrieval from a knowledge base the run's key may read."""

    type = "retrieve"
    title = "Retrieve"
    description = "Search a knowledge base; numbered context for a prompt, and citations."
    category = "ai"
    Config = RetrieveConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        assert isinstance(config, RetrieveConfig)
        return {
            "query": PortSpec(
                type="string",
                required=config.query is None,
                description="What to search for (unless the config has a query template).",
            )
        }

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "context": PortSpec(type="string", description="Numbered passages: [1] text ..."),
            "citations": PortSpec(type="array[object]", description="One per passage."),
        }

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, RetrieveConfig)
        if config.query is not None:
            query = render(config.query, port_scope(ctx, self.inputs(config), inputs))
        else:
            query = str(inputs.get("query") or "")
        if not query.strip():
            msg = "the query is empty: there is nothing to search for"
            raise BlockError(msg)
        citations = await ctx.services.knowledge.search(
            ctx.key_id,
            config.knowledge_base,
            query.strip(),
            top_k=config.top_k,
            filters=config.filters,
        )
        return BlockResult({"context": numbered_context(citations), "citations": citations})


__all__ = ["RetrieveBlock", "RetrieveConfig", "numbered_context"]
