"""What an inference request asked and what it was answered, kept for the audit trail.

Off by default (``audit.record_text``). On the hot path a :class:`Transcript` only holds
references: the parsed request, the answer body, or the raw stream chunk payloads (an
append each, up to a byte cap). Turning them into text, and redacting it, happens later
in whoever receives the transcript (the audit writer), never while the caller waits.

The text never travels on the bus: ``request.completed`` fans out to every consumer
group and stays in its stream, so the replica that served the request hands the
transcript straight to its own audit recorder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import orjson

from atrium.bus import RequestCompleted
from atrium.gateway.guardrails import HOLD_BACK_CHARS, choice_text
from atrium.runtime.schema import JSON, ChatCompletionRequest, CompletionRequest

# Stream chunks kept per character of text wanted: a chunk carrying one character is
# about 200 bytes of JSON, so this keeps the first ``max_chars`` characters of any
# ordinary stream while bounding what one request can hold in memory.
_BYTES_PER_CHAR = 256


@dataclass(slots=True)
class Transcript:
    """One request's prompt and answer, held as the gateway had them (not yet text)."""

    request: ChatCompletionRequest | CompletionRequest
    max_chars: int
    body: JSON | None = None
    chunks: list[bytes] = field(default_factory=list)
    _bytes: int = 0

    def feed(self, payload: bytes) -> None:
        """Keep one streamed chunk payload (the JSON after ``data: ``) while under the cap."""
        limit = (self.max_chars + HOLD_BACK_CHARS) * _BYTES_PER_CHAR
        if self._bytes + len(payload) <= limit:
            self._bytes += len(payload)
            self.chunks.append(payload)

    def prompt_text(self) -> str:
        """The prompt: ``role: text`` lines of a chat, the prompts (and suffix) of a completion."""
        request = self.request
        if isinstance(request, ChatCompletionRequest):
            return "\n".join(f"{m.role}: {m.text()}" for m in request.messages)
        parts = request.prompts()
        return "\n".join([*parts, request.suffix] if request.suffix else parts)

    def completion_text(self) -> str:
        """The answer as the caller got it: each choice's text, a streamed answer assembled."""
        if self.body is not None:
            return "\n".join(choice_text(c) for c in self.body.get("choices") or ())
        texts: dict[int, list[str]] = {}
        for payload in self.chunks:
            for choice in _choices(payload):
                texts.setdefault(int(choice.get("index", 0)), []).append(choice_text(choice))
        return "\n".join("".join(parts) for _, parts in sorted(texts.items()))


def _choices(payload: bytes) -> list[JSON]:
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


class TranscriptSink(Protocol):
    """Takes a finished request's transcript (the audit recorder); must not block."""

    @property
    def max_text_chars(self) -> int:
        """Characters of prompt and of completion worth keeping."""
        ...

    def record_transcript(self, event: RequestCompleted, transcript: Transcript) -> None:
        """Keep ``transcript`` with the request ``event`` describes (queued, not written)."""
        ...
