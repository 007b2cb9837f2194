"""The ``ModelBackend`` protocol every model runtime implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from atrium.core.errors import UnsupportedError
from atrium.runtime.schema import (
    JSON,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    Usage,
)


class Capability(StrEnum):
    """What a backend can serve."""

    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    TOOLS = "tools"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event of a streamed answer.

    ``data`` is the JSON payload exactly as it goes on the wire. ``usage`` is set on
    the event that carries token counts; ``usage_only`` marks a final usage chunk
    (``choices: []``) that is sent only when the client asked for it. ``more`` says
    that the stream goes on at once (the upstream sent the next event, or its end, in
    the same read), so a writer may hold this event and send it with what follows.
    """

    data: bytes
    usage: Usage | None = None
    usage_only: bool = False
    more: bool = False


@dataclass(frozen=True, slots=True)
class Health:
    """A backend's readiness."""

    ready: bool
    detail: str = ""


@runtime_checkable
class ModelBackend(Protocol):
    """A model that serves OpenAI-shaped chat, completions and/or embeddings."""

    name: str
    capabilities: frozenset[Capability]
    # Completion tokens to assume, for rate limits, when a request sets no max_tokens.
    completion_estimate: int

    async def start(self) -> None:
        """Load weights or open connections."""

    async def close(self) -> None:
        """Release everything ``start`` acquired."""

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """A ``chat.completion`` object."""

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """``chat.completion.chunk`` events, ending with a usage event."""

    async def complete(self, request: CompletionRequest) -> JSON:
        """A ``text_completion`` object."""

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """``text_completion`` chunk events, ending with a usage event."""

    async def embed(self, request: EmbeddingRequest) -> JSON:
        """A ``list`` of ``embedding`` objects with usage."""

    async def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's tokenizer."""

    async def health(self) -> Health:
        """Whether the backend can serve now."""


class BackendBase:
    """Defaults for backends that serve only some capabilities."""

    name: str
    capabilities: frozenset[Capability] = frozenset()
    completion_estimate: int = 0

    def _unsupported(self, what: Capability) -> UnsupportedError:
        return UnsupportedError(f"model {self.name!r} does not support {what.value}", param="model")

    async def start(self) -> None:
        """Nothing to load by default."""

    async def close(self) -> None:
        """Nothing to release by default."""

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """Refuses: no chat here."""
        raise self._unsupported(Capability.CHAT)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """Refuses: no chat here."""
        raise self._unsupported(Capability.CHAT)
        yield  # pragma: no cover - makes this an async generator

    async def complete(self, request: CompletionRequest) -> JSON:
        """Refuses: no completions here."""
        raise self._unsupported(Capability.COMPLETIONS)

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """Refuses: no completions here."""
        raise self._unsupported(Capability.COMPLETIONS)
        yield  # pragma: no cover - makes this an async generator

    async def embed(self, request: EmbeddingRequest) -> JSON:
        """Refuses: no embeddings here."""
        raise self._unsupported(Capability.EMBEDDINGS)

    async def count_tokens(self, text: str) -> int:
        """A rough count (4 characters a token) for backends without a tokenizer."""
        return max(1, len(text) // 4)

    async def health(self) -> Health:
        """Ready unless a backend says otherwise."""
        return Health(ready=True)
