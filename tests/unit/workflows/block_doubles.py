"""Services for block tests: our own protocols' test doubles, and the real adapters that run here.

``ScriptedModels`` is a test double of our ``ModelCaller`` protocol: it answers OpenAI
``chat.completion`` objects from a script, so invalid JSON, repair rounds and classifier
answers are deterministic (end-to-end tests with the bundled model are the engine's).
Documents are read by the real ``ParsedDocuments`` adapter and artifacts stored by the
real ``FsspecArtifacts`` in a test folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atrium.core.netguard import NetworkPolicy
from atrium.store.secrets import SecretNotFoundError
from atrium.workflows.adapters import FsspecArtifacts, ParsedDocuments
from atrium.workflows.blocks.base import (
    ArtifactStore,
    Block,
    BlockContext,
    BlockResult,
    BlockServices,
    KnowledgeSearch,
    ModelCaller,
    SecretReader,
)

#: Loopback allowed: the test servers listen on 127.0.0.1.
LOOPBACK_POLICY = NetworkPolicy(allowed_hosts=("127.0.0.1",))


def completion(text: str | None, total_tokens: int = 10) -> dict[str, Any]:
    """A ``chat.completion`` object as the gateway returns it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": total_tokens - 2,
            "completion_tokens": 2,
            "total_tokens": total_tokens,
        },
    }


class ScriptedModels:
    """A ModelCaller answering the scripted texts in order and recording each request."""

    def __init__(self, *answers: str | None, tokens: int = 10) -> None:
        self.answers = list(answers)
        self.tokens = tokens
        self.bodies: list[dict[str, Any]] = []
        self.key_ids: list[str] = []

    async def chat(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The next scripted answer; an unexpected extra call fails the test."""
        self.key_ids.append(key_id)
        self.bodies.append(body)
        assert self.answers, f"unexpected model call #{len(self.bodies)}"
        return completion(self.answers.pop(0), self.tokens)

    def user_message(self, call: int) -> str:
        """The last user message of the ``call``-th request."""
        messages = self.bodies[call]["messages"]
        return str(next(m for m in reversed(messages) if m["role"] == "user")["content"])


@dataclass
class StaticKnowledge:
    """A KnowledgeSearch answering fixed citations and recording each search."""

    citations: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def search(
        self, key_id: str, knowledge_base: str, query: str, *, top_k: int, filters: Any
    ) -> list[dict[str, Any]]:
        """The fixed citations, at most ``top_k``."""
        self.calls.append(
            {
                "key_id": key_id,
                "kb": knowledge_base,
                "query": query,
                "top_k": top_k,
                "filters": filters,
            }
        )
        return self.citations[:top_k]


class MemorySecrets:
    """A SecretReader over a dict (not found: the store's own error)."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = dict(values or {})

    async def reveal(self, name: str) -> str:
        """The value, or SecretNotFoundError."""
        if name not in self.values:
            raise SecretNotFoundError(name)
        return self.values[name]


def make_services(
    tmp_path: Path,
    *,
    models: ModelCaller | None = None,
    knowledge: KnowledgeSearch | None = None,
    secrets: SecretReader | None = None,
    artifacts: ArtifactStore | None = None,
    policy: NetworkPolicy | None = None,
    smtp: Mapping[str, Any] | None = None,
) -> BlockServices:
    """Services for one test; anything not given is a harmless default."""
    return BlockServices(
        models=models or ScriptedModels(),
        knowledge=knowledge or StaticKnowledge(),
        secrets=secrets or MemorySecrets(),
        artifacts=artifacts or FsspecArtifacts(str(tmp_path / "artifacts")),
        documents=ParsedDocuments(max_bytes=10 * 1024 * 1024),
        network_policy=policy or NetworkPolicy(),
        smtp=dict(smtp or {}),
    )


def make_context(
    services: BlockServices,
    *,
    variables: Mapping[str, Any] | None = None,
    workflow_inputs: Mapping[str, Any] | None = None,
    upstream: Mapping[str, Mapping[str, Any]] | None = None,
) -> BlockContext:
    """One execution's context, in run ``run-1``, node ``node-1``, as key ``key-1``."""
    return BlockContext(
        run_id="run-1",
        node_id="node-1",
        key_id="key-1",
        attempt=1,
        services=services,
        variables=variables or {},
        workflow_inputs=workflow_inputs or {},
        upstream=upstream or {},
    )


async def run_block(
    block: Block, config: Mapping[str, Any], ctx: BlockContext, inputs: dict[str, Any] | None = None
) -> BlockResult:
    """Parse ``config`` as the engine does and run the block once."""
    return await block.run(ctx, block.parse_config(config), inputs or {})
