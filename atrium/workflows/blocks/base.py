"""The block contract: typed config, typed ports, one ``run`` per execution.

A block is a class with a pydantic ``Config``; ``inputs`` and ``outputs`` may depend on
the config (an LLM block with a JSON schema outputs ``data``; a Condition declares its
``true`` / ``false`` handles). ``kind`` tells the engine how to execute it:

- ``pure``: deterministic and side-effect free (Transform, Condition). Recomputed on
  replay instead of checkpointed, so it costs no database write.
- ``step``: anything that touches the world (a model, the network, a store). Runs as a
  durable step: its result is checkpointed before any successor starts, and a replay
  returns the recorded result instead of running it again.
- ``engine``: executed by the engine itself (Start, End, Human Approval, Sub-workflow,
  Map): they need durable waits or child runs rather than a step.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from atrium.core.http import parse_data
from atrium.core.netguard import NetworkPolicy
from atrium.workflows.dsl import PortSpec

BlockKind = Literal["pure", "step", "engine"]


class BlockConfig(BaseModel):
    """Base of every block's config: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class BlockError(Exception):
    """A block failed for a reason the user can act on (shown in the run history)."""


class ModelCaller(Protocol):
    """The gateway's chat and embeddings paths, as the run's key (its limits and usage)."""

    async def chat(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed chat completion; raises an AtriumError on failure."""
        ...


class KnowledgeSearch(Protocol):
    """Retrieval from a knowledge base the run's key may read."""

    async def search(
        self, key_id: str, knowledge_base: str, query: str, *, top_k: int, filters: Any
    ) -> list[dict[str, Any]]:
        """Citations (document, chunk, score, text, metadata) for ``query``."""
        ...


class SecretReader(Protocol):
    """Stored secrets by name (never logged, never in a run's recorded inputs)."""

    async def reveal(self, name: str) -> str:
        """The secret's value; NotFoundError when absent."""
        ...


class ArtifactStore(Protocol):
    """Files a run produces (reports), stored under the run."""

    async def put(self, run_id: str, name: str, data: bytes, media_type: str) -> dict[str, Any]:
        """Store one artifact; returns ``{"name", "media_type", "bytes", "url"}``."""
        ...

    async def get(self, run_id: str, name: str) -> tuple[bytes, str]:
        """An artifact's bytes and media type; NotFoundError when absent."""
        ...


class DocumentReader(Protocol):
    """Text out of an uploaded document (the RAG engine's parsers)."""

    async def read(self, name: str, data: bytes) -> list[dict[str, Any]]:
        """Sections: ``{"text", "title", "page"}`` each; BlockError when unreadable."""
        ...


@dataclass(frozen=True, slots=True)
class BlockServices:
    """What blocks may reach: the platform's services, never its internals."""

    models: ModelCaller
    knowledge: KnowledgeSearch
    secrets: SecretReader
    artifacts: ArtifactStore
    documents: DocumentReader
    network_policy: NetworkPolicy
    smtp: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BlockContext:
    """One execution of one block."""

    run_id: str
    node_id: str
    key_id: str
    attempt: int
    services: BlockServices
    variables: Mapping[str, Any]
    workflow_inputs: Mapping[str, Any]
    upstream: Mapping[str, Mapping[str, Any]]  # node id -> outputs, of nodes succeeded so far

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt and every replay of this block in this run: sent with
        side effects (``Idempotency-Key``) so a receiver can drop a repeat after a crash."""
        return f"{self.run_id}:{self.node_id}"

    def template_scope(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Names a template or expression may use: ports, ``inputs``, ``vars``, ``nodes``."""
        return {
            **inputs,
            "inputs": dict(self.workflow_inputs),
            "vars": dict(self.variables),
            "nodes": {k: dict(v) for k, v in self.upstream.items()},
        }


@dataclass(slots=True)
class BlockResult:
    """What one execution produced.

    ``handles`` names the control handles that fire (``None``: the default ``done``);
    ``tokens`` and ``cost_usd`` are summed into the run's totals.
    """

    outputs: dict[str, Any]
    handles: tuple[str, ...] | None = None
    tokens: int = 0
    cost_usd: float = 0.0


class Block(ABC):
    """One block type. Subclasses set the class attributes and implement ``run``."""

    type: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    category: ClassVar[str] = "general"
    kind: ClassVar[BlockKind] = "step"
    Config: ClassVar[builtins.type[BlockConfig]] = BlockConfig

    def parse_config(self, raw: Mapping[str, Any]) -> BlockConfig:
        """The typed config (pydantic ValidationError when invalid)."""
        return self.Config.model_validate(dict(raw))

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        """Input ports for this config."""
        return {}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        """Output ports for this config."""
        return {}

    def control_handles(self, config: BlockConfig) -> tuple[str, ...]:
        """Control handles besides ``done`` and ``error`` (a Condition's ``true``/``false``)."""
        return ()

    @abstractmethod
    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        """Execute once. Raise BlockError (or any exception) to fail this attempt."""

    def ports(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The typed ports and control handles a config gives this block (400 if invalid)."""
        config = parse_data(self.Config, dict(raw))
        return {
            "type": self.type,
            "inputs": {n: p.model_dump(mode="json") for n, p in self.inputs(config).items()},
            "outputs": {n: p.model_dump(mode="json") for n, p in self.outputs(config).items()},
            "controls": ["done", "error", *self.control_handles(config)],
        }

    def describe(self) -> dict[str, Any]:
        """The block in the catalogue: type, title, kind and config JSON Schema."""
        return {
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "kind": self.kind,
            "config_schema": self.Config.model_json_schema(),
        }


class BlockRegistry:
    """Block types by name; the engine and the validator look blocks up here."""

    def __init__(self, blocks: list[Block] | None = None) -> None:
        self._blocks: dict[str, Block] = {}
        for block in blocks or []:
            self.add(block)

    def add(self, block: Block) -> None:
        """Register one block type (a duplicate type is a programming error)."""
        if block.type in self._blocks:
            msg = f"block type {block.type!r} registered twice"
            raise ValueError(msg)
        self._blocks[block.type] = block

    def get(self, block_type: str) -> Block | None:
        """The block of that type, or None."""
        return self._blocks.get(block_type)

    def types(self) -> list[str]:
        """Every registered type, sorted."""
        return sorted(self._blocks)

    def describe(self) -> list[dict[str, Any]]:
        """The catalogue for the API and the builder palette."""
        return [self._blocks[t].describe() for t in self.types()]
