"""Knowledge bases as chat models: ``rag/<knowledge base>`` on ``/v1/chat/completions``.

The last user message is the query. The retrieved context goes in a system message in
front of the conversation, and the request (sampling settings, streaming, everything but
the model and the messages) goes to the knowledge base's answer model through the
gateway's own chat path, so limits, usage and guardrails apply as to any chat. The
response is the answer model's, with ``model`` set to ``rag/<knowledge base>`` and two
extra fields: ``citations`` and ``context`` (the cited passages' text), as the query API
returns them, and ``query_id`` (for feedback). Streams carry them on their first chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from atrium.core.errors import InvalidRequestError
from atrium.core.http import parse_body
from atrium.rag.answer import ChatCaller
from atrium.rag.requests import Caller, QueryRequest
from atrium.rag.service import KnowledgeService
from atrium.runtime.schema import ChatCompletionRequest

PREFIX = "rag/"

Authenticate = Callable[[str | None], Awaitable[Caller]]


class RagChatCompletions:
    """The chat delegate the gateway calls for ``rag/...`` models."""

    def __init__(
        self, service: KnowledgeService, chat: ChatCaller, authenticate: Authenticate
    ) -> None:
        self._service = service
        self._chat = chat
        self._authenticate = authenticate

    async def __call__(
        self, authorization: str | None, body: bytes
    ) -> dict[str, Any] | AsyncIterator[bytes]:
        """Answer a chat completion request for ``rag/<knowledge base>``."""
        caller = await self._authenticate(authorization)
        request = parse_body(ChatCompletionRequest, body)
        kb = request.model.removeprefix(PREFIX)
        question = _last_user_text(request)
        prepared = await self._service.prepare_chat(
            kb, caller, QueryRequest(query=question), request.stream
        )
        messages = [prepared.system_message, *_conversation(request)]
        inner = request.model_dump(mode="json", exclude_none=True)
        inner.update(model=prepared.model, messages=messages)
        response = await self._chat.chat(authorization, orjson.dumps(inner))
        extra = {
            "citations": prepared.citations,
            "context": prepared.context,
            "query_id": prepared.query_id,
        }
        if isinstance(response, dict):
            return {**response, "model": request.model, **extra}
        return _annotated(response, request.model, extra)


def _last_user_text(request: ChatCompletionRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            text = _text(message.content)
            if text.strip():
                return text
    raise InvalidRequestError("a rag/ model needs a user message to answer", param="messages")


def _text(content: str | list[Any] | None) -> str:
    if isinstance(content, str):
        return content
    parts = content or []
    return " ".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _conversation(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The client's messages, its own system messages kept after the context."""
    return [m.model_dump(mode="json", exclude_none=True) for m in request.messages]


async def _annotated(
    events: AsyncIterator[bytes], model: str, extra: dict[str, Any]
) -> AsyncIterator[bytes]:
    first = True
    async for event in events:
        if not event.startswith(b"data: {"):
            yield event
            continue
        payload = orjson.loads(event[6:].strip())
        if "error" not in payload:
            payload["model"] = model
            if first:
                payload.update(extra)
        first = False
        yield b"data: " + orjson.dumps(payload) + b"\n\n"
