"""OpenAI <-> provider translation shared by the Anthropic and Gemini backends.

The provider modules turn these neutral pieces into their SDK's request types and
read their SDK's responses back through ``chat_completion`` and ``ChunkWriter``,
so both answer in exactly the same OpenAI shapes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import orjson

from atrium.core.errors import (
    AtriumError,
    InvalidRequestError,
    UnsupportedError,
    UpstreamError,
    UpstreamStatusError,
)
from atrium.runtime.base import StreamEvent
from atrium.runtime.schema import JSON, ChatCompletionRequest, ChatMessage, Usage

# Provider statuses passed on to the caller (the caller's request is at fault, or a
# limit it can wait out); any other status is the gateway's failure: 502.
_PASS_THROUGH = frozenset({400, 404, 409, 413, 422, 429})
_ERROR_TYPES = {429: "rate_limit_error"}
_EMPTY_PARAMETERS: JSON = {"type": "object", "properties": {}}
_SYSTEM_ROLES = frozenset({"system", "developer"})
ToolChoiceMode = Literal["auto", "none", "required", "function"]
_CHOICE_MODES: dict[str, ToolChoiceMode] = {"auto": "auto", "none": "none", "required": "required"}


def new_id(prefix: str) -> str:
    """A fresh opaque id, e.g. ``chatcmpl-…`` or ``call_…``."""
    return f"{prefix}{secrets.token_hex(12)}"


def check_supported(request: ChatCompletionRequest) -> None:
    """Refuse what neither provider can translate faithfully."""
    if request.n > 1:
        msg = f"n={request.n} is not supported by this model; send n=1 (or omit n)"
        raise UnsupportedError(msg, param="n")


# -- messages -------------------------------------------------------------------------


def system_text(messages: Iterable[ChatMessage]) -> str | None:
    """The system and developer messages, joined; providers take them out of band."""
    texts = [content_text(m) for m in messages if m.role in _SYSTEM_ROLES]
    return "\n\n".join(texts) if texts else None


def conversation(messages: Iterable[ChatMessage]) -> list[ChatMessage]:
    """The turns that are not system or developer messages, checked for roles we map.

    An assistant turn with neither text nor tool calls says nothing, and both
    providers refuse empty turns: it is left out.
    """
    turns = [m for m in messages if m.role not in _SYSTEM_ROLES and not _is_empty(m)]
    for message in turns:
        if message.role == "function":
            msg = "role 'function' is deprecated and not supported here; use 'tool' messages"
            raise UnsupportedError(msg, param="messages")
    return turns


def _is_empty(message: ChatMessage) -> bool:
    return message.role == "assistant" and not message.tool_calls and not content_text(message)


def content_text(message: ChatMessage) -> str:
    """A message's text; multi-part content may hold only text parts here."""
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    for part in message.content:
        if part.get("type") != "text":
            msg = f"content parts of type {part.get('type')!r} are not supported by this model"
            raise UnsupportedError(msg, param="messages")
    return "".join(str(p.get("text", "")) for p in message.content)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call, by the model or replayed from an assistant message."""

    id: str
    name: str
    arguments: JSON
    # Provider data OpenAI has no field for (Gemini's thought signature).
    extra: JSON | None = None

    def to_openai(self) -> JSON:
        """OpenAI's ``tool_calls`` item: arguments as a JSON string."""
        call: JSON = {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": dump_arguments(self.arguments)},
        }
        if self.extra:
            call["extra_content"] = self.extra
        return call


def tool_calls_of(message: ChatMessage) -> list[ToolCall]:
    """The function calls of an assistant message, validated."""
    return [_tool_call(raw) for raw in message.tool_calls or []]


def _tool_call(raw: JSON) -> ToolCall:
    function = raw.get("function")
    if raw.get("type", "function") != "function" or not isinstance(function, dict):
        raise InvalidRequestError("tool_calls must be function calls", param="messages")
    name, call_id = function.get("name"), raw.get("id")
    if not isinstance(name, str) or not name or not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError("each tool call needs an id and a name", param="messages")
    extra = raw.get("extra_content")
    return ToolCall(
        call_id, name, parse_arguments(function.get("arguments")), extra if extra else None
    )


def parse_arguments(arguments: object) -> JSON:
    """A tool call's ``arguments`` JSON string as an object (providers take objects)."""
    if arguments is None or arguments == "":
        return {}
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else arguments
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        msg = "tool call arguments must be a JSON object"
        raise InvalidRequestError(msg, param="messages")
    return value


def dump_arguments(arguments: JSON) -> str:
    """Arguments as OpenAI sends them: a JSON string."""
    return orjson.dumps(arguments).decode()


def tool_call_names(messages: Iterable[ChatMessage]) -> dict[str, str]:
    """Tool call id -> function name, from the assistant messages."""
    return {call.id: call.name for m in messages for call in tool_calls_of(m)}


def tool_call_id(message: ChatMessage) -> str:
    """The ``tool_call_id`` a tool message answers."""
    if not message.tool_call_id:
        raise InvalidRequestError("a tool message needs a tool_call_id", param="messages")
    return message.tool_call_id


def runs(
    turns: list[ChatMessage], key: Callable[[ChatMessage], str]
) -> Iterator[list[ChatMessage]]:
    """Consecutive turns with the same ``key(turn)``, grouped (providers merge them)."""
    group: list[ChatMessage] = []
    for turn in turns:
        if group and key(group[-1]) != key(turn):
            yield group
            group = []
        group.append(turn)
    if group:
        yield group


# -- tools and formats ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """An OpenAI function tool: a name, a description and a JSON schema."""

    name: str
    description: str | None
    parameters: JSON


def function_tools(request: ChatCompletionRequest) -> list[FunctionTool]:
    """The request's tools; only function tools translate."""
    return [_function_tool(tool) for tool in request.tools or []]


def _function_tool(tool: JSON) -> FunctionTool:
    function = tool.get("function")
    if tool.get("type") != "function" or not isinstance(function, dict):
        raise UnsupportedError("only tools of type 'function' are supported", param="tools")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("every function tool needs a name", param="tools")
    parameters = function.get("parameters") or _EMPTY_PARAMETERS
    if not isinstance(parameters, dict):
        raise InvalidRequestError("function parameters must be a JSON schema", param="tools")
    description = function.get("description")
    return FunctionTool(name, description if isinstance(description, str) else None, parameters)


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """``tool_choice``: auto, none, required, or one named function."""

    mode: ToolChoiceMode
    name: str | None = None


def tool_choice_of(request: ChatCompletionRequest) -> ToolChoice | None:
    """The request's ``tool_choice``, or None when it sets none."""
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _CHOICE_MODES:
            raise InvalidRequestError(f"unknown tool_choice {choice!r}", param="tool_choice")
        return ToolChoice(_CHOICE_MODES[choice])
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str) or not name:
        msg = 'tool_choice must be a mode or {"type": "function", "function": {"name": ...}}'
        raise InvalidRequestError(msg, param="tool_choice")
    return ToolChoice("function", name)


def parallel_tool_calls(request: ChatCompletionRequest) -> bool:
    """OpenAI's ``parallel_tool_calls`` (default true), an extra field on the request."""
    return (request.model_extra or {}).get("parallel_tool_calls") is not False


def json_schema_of(request: ChatCompletionRequest) -> JSON | None:
    """The schema of a ``json_schema`` response format, or None for other formats."""
    response_format = request.response_format
    if response_format is None or response_format.type != "json_schema":
        return None
    schema = (response_format.json_schema or {}).get("schema")
    if not isinstance(schema, dict):
        msg = "response_format json_schema needs json_schema.schema (a JSON schema object)"
        raise InvalidRequestError(msg, param="response_format")
    return schema


# -- responses ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One complete provider answer, ready to become a ``chat.completion``."""

    id: str
    text: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage


def chat_completion(model: str, answer: Answer) -> JSON:
    """OpenAI's ``chat.completion`` object for an answer."""
    message: JSON = {"role": "assistant", "content": answer.text}
    if answer.tool_calls:
        message["content"] = answer.text or None
        message["tool_calls"] = [call.to_openai() for call in answer.tool_calls]
    return {
        "id": answer.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": answer.usage.to_openai(),
    }


class ChunkWriter:
    """Writes ``chat.completion.chunk`` events for one streamed answer."""

    def __init__(self, model: str, completion_id: str) -> None:
        self._head: JSON = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def _delta(self, delta: JSON, finish_reason: str | None = None) -> StreamEvent:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return StreamEvent(orjson.dumps({**self._head, "choices": [choice]}))

    def role(self) -> StreamEvent:
        """The first chunk: the assistant role."""
        return self._delta({"role": "assistant", "content": ""})

    def content(self, text: str) -> StreamEvent:
        """A piece of text."""
        return self._delta({"content": text})

    def tool_call_start(
        self, index: int, call_id: str, name: str, extra: JSON | None
    ) -> StreamEvent:
        """A tool call's first chunk: its index, id, type and function name."""
        call: JSON = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        if extra:
            call["extra_content"] = extra
        return self._delta({"tool_calls": [call]})

    def tool_call_arguments(self, index: int, fragment: str) -> StreamEvent:
        """A fragment of a tool call's JSON arguments."""
        return self._delta({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def finish(self, finish_reason: str) -> StreamEvent:
        """The last choice chunk: an empty delta with the finish reason."""
        return self._delta({}, finish_reason)

    def usage(self, usage: Usage) -> StreamEvent:
        """The usage-only chunk (``choices: []``) that ends every stream."""
        chunk = {**self._head, "choices": [], "usage": usage.to_openai()}
        return StreamEvent(orjson.dumps(chunk), usage, usage_only=True)


# -- errors ---------------------------------------------------------------------------


def status_error(
    provider: str,
    status: int,
    message: str | None,
    *,
    code: str | None = None,
    retry_after: str | None = None,
) -> AtriumError:
    """A provider's error status as an Atrium error.

    Statuses the caller can act on keep their status and the provider's message in
    OpenAI's error shape; auth failures (our key) and server errors become 502.
    """
    if status not in _PASS_THROUGH:
        detail = f" ({code})" if code else ""
        return UpstreamError(f"{provider} answered {status}{detail}")
    body = {
        "error": {
            "message": message or f"{provider} answered {status}",
            "type": _ERROR_TYPES.get(status, "invalid_request_error"),
            "param": None,
            "code": code,
        }
    }
    headers = {"retry-after": retry_after} if retry_after else {}
    return UpstreamStatusError(status, body, headers)
