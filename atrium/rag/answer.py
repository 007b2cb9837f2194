"""Answers with citations: the retrieved context, numbered, given to a chat model.

The model is called through the gateway's own inference path (``ChatCaller``), with the
caller's key: the answer counts against the caller's limits and budget, is logged and
metered like any chat completion, and passes the same guardrails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from atrium.core.errors import AtriumError, UpstreamError
from atrium.rag.retrieval import ScoredChunk

SYSTEM_PROMPT = (
    "You answer questions using only the numbered context passages below. "
    "Cite the passages you use by their numbers in square brackets, like [1] or [2][3]. "
    "If the passages do not contain the answer, say that you do not know; "
    "never answer from memory or guess."
)

#: Characters of a chunk shown as its citation snippet.
SNIPPET_CHARS = 300


class ChatCaller(Protocol):
    """The gateway's chat path: an OpenAI request body in, JSON or an SSE byte stream out."""

    async def chat(
        self, authorization: str | None, body: bytes
    ) -> dict[str, Any] | AsyncIterator[bytes]:
        """Run one chat completion as the key in ``authorization``."""
        ...


@dataclass(frozen=True, slots=True)
class Citation:
    """One passage given to the model, as the client sees it."""

    number: int
    chunk: ScoredChunk
    link: str

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view."""
        record = self.chunk.record
        return {
            "number": self.number,
            "document_id": record.document_id,
            "chunk_id": record.chunk_id,
            "title": record.title,
            "section": record.section,
            "page": record.page,
            "score": round(self.chunk.score, 6),
            "snippet": snippet(record.text, record.title),
            "link": self.link,
            "uri": record.uri,
        }


def snippet(text: str, title: str) -> str:
    """The start of a chunk's text without the title line the indexer put in front."""
    body = text[len(title) + 1 :] if title and text.startswith(title + "\n") else text
    return body if len(body) <= SNIPPET_CHARS else body[: SNIPPET_CHARS - 1].rstrip() + "…"


def select_context(
    chunks: Sequence[ScoredChunk], count_tokens: Callable[[str], int], budget: int
) -> list[ScoredChunk]:
    """The best chunks whose contexts fit in ``budget`` tokens together (at least one)."""
    chosen: list[ScoredChunk] = []
    used = 0
    for chunk in chunks:
        cost = count_tokens(chunk.record.context)
        if chosen and used + cost > budget:
            continue
        chosen.append(chunk)
        used += cost
    return chosen


def build_messages(question: str, citations: Sequence[Citation]) -> list[dict[str, str]]:
    """System prompt with the numbered context, then the question."""
    passages = "\n\n".join(
        f"[{c.number}] {c.chunk.record.title}\n{_context_body(c.chunk)}" for c in citations
    )
    context = passages if citations else "(no passages were found)"
    return [
        {"role": "system", "content": f"{SYSTEM_PROMPT}\n\nContext:\n{context}"},
        {"role": "user", "content": question},
    ]


def _context_body(chunk: ScoredChunk) -> str:
    """The passage given to the model, without the title line (shown above it already)."""
    context, title = chunk.record.context, chunk.record.title
    return context[len(title) + 1 :] if title and context.startswith(title + "\n") else context


def request_body(
    model: str, messages: list[dict[str, str]], *, max_tokens: int, stream: bool, user: str | None
) -> bytes:
    """The chat completion request for an answer (temperature 0: answers are reproducible)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }
    if user is not None:
        body["user"] = user
    return orjson.dumps(body)


def answer_text(response: dict[str, Any]) -> str:
    """The assistant's text from a chat completion."""
    try:
        content = response["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamError("the answer model returned no message") from None
    return content if isinstance(content, str) else ""


async def stream_deltas(events: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Text deltas from the gateway's SSE byte stream; an in-band error is raised."""
    async for event in events:
        for line in event.split(b"\n"):
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            payload = orjson.loads(line[6:])
            if "error" in payload:
                raise _StreamError(payload["error"])
            for choice in payload.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text


class _StreamError(AtriumError):
    """The answer model's stream ended with an error event."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message") or "the answer model failed"))
        self.error = error
