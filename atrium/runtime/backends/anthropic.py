"""Claude models on Anthropic's Messages API, translated to and from OpenAI's format.

Requests go through the official SDK (``anthropic.AsyncAnthropic``). What would
change the shape of the answer is refused with a 400: ``n`` > 1 and
``response_format: json_object`` (Anthropic has no "any JSON" mode;
``json_schema`` maps to its structured outputs, ``output_config.format``).
Sampling knobs are ignored instead: the Messages API version this SDK speaks
takes none (no temperature, top_p, penalties or seed), and refusing them would
break every client that always sends a temperature.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    RawMessageStreamEvent,
    TextBlock,
    ToolUseBlock,
)

from atrium.core.errors import (
    AtriumError,
    InvalidRequestError,
    UnsupportedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from atrium.core.settings import AnthropicModel
from atrium.observability.propagation import traceparent_headers
from atrium.runtime.backends._translate import (
    Answer,
    ChunkWriter,
    FunctionTool,
    ToolCall,
    ToolChoice,
    chat_completion,
    check_supported,
    content_text,
    conversation,
    function_tools,
    json_schema_of,
    new_id,
    parallel_tool_calls,
    runs,
    status_error,
    system_text,
    tool_call_id,
    tool_calls_of,
    tool_choice_of,
)
from atrium.runtime.base import BackendBase, Capability, Health, StreamEvent
from atrium.runtime.credentials import StoredCredential
from atrium.runtime.schema import JSON, ChatCompletionRequest, ChatMessage, Usage

PROVIDER = "anthropic"
# Anthropic's stop_reason -> OpenAI's finish_reason.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI's tool_choice mode -> Anthropic's tool_choice type.
_TOOL_CHOICE_TYPES = {"auto": "auto", "none": "none", "required": "any", "function": "tool"}
# OpenAI's message role -> Anthropic's turn role (tool results travel in user turns).
_TURN_ROLES = {"user": "user", "tool": "user", "assistant": "assistant"}


def build_client(spec: AnthropicModel) -> anthropic.AsyncAnthropic:
    """The SDK client for one model's settings (retries are the gateway's job)."""
    return anthropic.AsyncAnthropic(
        # None with an api_key_secret: the key is read at use and set per client copy.
        api_key=spec.api_key.get_secret_value() if spec.api_key else None,
        base_url=str(spec.base_url) if spec.base_url else None,
        timeout=spec.timeout_seconds,
        max_retries=spec.max_retries,
    )


class AnthropicBackend(BackendBase):
    """Chat and tool calls on a Claude model, in OpenAI's request and response shapes."""

    capabilities = frozenset({Capability.CHAT, Capability.TOOLS})

    def __init__(
        self,
        name: str,
        spec: AnthropicModel,
        client: anthropic.AsyncAnthropic | None = None,
        *,
        credential: StoredCredential | None = None,
    ) -> None:
        self.name = name
        self._spec = spec
        self.completion_estimate = spec.completion_estimate
        self._client = client or build_client(spec)
        self._credential = credential
        self._credential_value: str | None = None
        self._closed = False

    async def _current_client(self) -> anthropic.AsyncAnthropic:
        """The client, carrying the stored secret's current value when the key is one."""
        if self._credential is not None:
            value = await self._credential.value()
            if value != self._credential_value:
                # A copy that shares the connection pool; calls in flight keep the old one.
                self._client = self._client.with_options(api_key=value)
                self._credential_value = value
        return self._client

    async def close(self) -> None:
        """Close the SDK's connection pool."""
        self._closed = True
        await self._client.close()

    async def health(self) -> Health:
        """Ready while the client is open; no call is made (the API has no free probe)."""
        return Health(ready=not self._closed, detail="closed" if self._closed else "")

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """One ``messages.create`` call, answered as a ``chat.completion``."""
        params = request_params(request, self._spec)
        try:
            client = await self._current_client()
            message = await client.messages.create(**params, extra_headers=traceparent_headers())
        except anthropic.AnthropicError as exc:
            raise _error(exc) from exc
        return chat_completion(self.name, _answer(message))

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """``messages.create(stream=True)``, each SSE event translated to OpenAI chunks."""
        params = request_params(request, self._spec)
        translator = _StreamTranslator(self.name)
        try:
            client = await self._current_client()
            stream = await client.messages.create(
                **params, stream=True, extra_headers=traceparent_headers()
            )
            async with stream:
                async for event in stream:
                    for chunk in translator.see(event):
                        yield chunk
        except anthropic.AnthropicError as exc:
            raise _error(exc) from exc
        if not translator.done:
            raise UpstreamError(f"{PROVIDER} ended the stream before message_stop")


# -- requests -------------------------------------------------------------------------


def request_params(request: ChatCompletionRequest, spec: AnthropicModel) -> dict[str, Any]:
    """Keyword arguments of ``messages.create`` for an OpenAI chat request."""
    check_supported(request)
    params: dict[str, Any] = {
        "model": spec.model,
        "max_tokens": request.token_limit or spec.default_max_tokens,
        "messages": messages_param(conversation(request.messages)),
    }
    optional = {
        "system": system_text(request.messages),
        "stop_sequences": request.stop_list() or None,
        "metadata": {"user_id": request.user} if request.user else None,
        "output_config": _output_config(request),
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    params.update(_tool_params(request))
    return params


def messages_param(turns: list[ChatMessage]) -> list[JSON]:
    """OpenAI turns as Anthropic messages; consecutive same-role turns are merged."""
    return [
        {
            "role": _TURN_ROLES[run[0].role],
            "content": [block for turn in run for block in _BLOCKS[turn.role](turn)],
        }
        for run in runs(turns, lambda turn: _TURN_ROLES[turn.role])
    ]


def _user_blocks(message: ChatMessage) -> list[JSON]:
    return [{"type": "text", "text": content_text(message)}]


def _assistant_blocks(message: ChatMessage) -> list[JSON]:
    text = content_text(message)
    blocks: list[JSON] = [{"type": "text", "text": text}] if text else []
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        for call in tool_calls_of(message)
    )
    return blocks


def _tool_blocks(message: ChatMessage) -> list[JSON]:
    return [
        {
            "type": "tool_result",
            "tool_use_id": tool_call_id(message),
            "content": content_text(message),
        }
    ]


_BLOCKS = {"user": _user_blocks, "assistant": _assistant_blocks, "tool": _tool_blocks}


def _tool_params(request: ChatCompletionRequest) -> JSON:
    tools = function_tools(request)
    if not tools:
        return {}
    params: JSON = {"tools": [_tool(tool) for tool in tools]}
    choice = _tool_choice(tool_choice_of(request), parallel=parallel_tool_calls(request))
    if choice is not None:
        params["tool_choice"] = choice
    return params


def _tool(tool: FunctionTool) -> JSON:
    param: JSON = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        param["description"] = tool.description
    return param


def _tool_choice(choice: ToolChoice | None, *, parallel: bool) -> JSON | None:
    if choice is None and parallel:
        return None
    mode = choice.mode if choice else "auto"
    param: JSON = {"type": _TOOL_CHOICE_TYPES[mode]}
    if choice is not None and choice.name:
        param["name"] = choice.name
    if not parallel and mode != "none":
        param["disable_parallel_tool_use"] = True
    return param


def _output_config(request: ChatCompletionRequest) -> JSON | None:
    """``json_schema`` as structured outputs; ``json_object`` has no Anthropic equivalent."""
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        msg = "Anthropic models do not support json_object; use response_format json_schema"
        raise UnsupportedError(msg, param="response_format")
    schema = json_schema_of(request)
    assert schema is not None  # json_schema_of raises when the schema is missing
    try:
        # The SDK's own adapter: strict objects, unsupported keywords moved to descriptions.
        strict = anthropic.transform_schema(schema)
    except (ValueError, TypeError) as exc:
        msg = f"response_format schema cannot be used with Anthropic: {exc}"
        raise InvalidRequestError(msg, param="response_format") from exc
    return {"format": {"type": "json_schema", "schema": strict}}


# -- responses ------------------------------------------------------------------------


def _answer(message: Message) -> Answer:
    text = "".join(block.text for block in message.content if isinstance(block, TextBlock))
    calls = [
        ToolCall(block.id, block.name, dict(block.input))
        for block in message.content
        if isinstance(block, ToolUseBlock)
    ]
    usage = Usage(
        prompt_tokens=_input_tokens(message.usage),
        completion_tokens=message.usage.output_tokens,
    )
    return Answer(message.id, text, calls, _finish_reason(message.stop_reason), usage)


def _finish_reason(stop_reason: str | None) -> str:
    return _FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def _input_tokens(usage: anthropic.types.Usage | anthropic.types.MessageDeltaUsage) -> int:
    """All prompt tokens: Anthropic counts cache writes and reads apart from the rest."""
    return (
        (usage.input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
        + (usage.cache_read_input_tokens or 0)
    )


class _StreamTranslator:
    """Anthropic's stream events -> OpenAI chunks, for one streamed answer."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._writer = ChunkWriter(model, new_id("chatcmpl-"))  # message_start brings the id
        self._tool_index: dict[int, int] = {}  # content block index -> tool call index
        self._stop_reason: str | None = None
        self._usage = Usage()
        self.done = False

    def see(self, event: RawMessageStreamEvent) -> list[StreamEvent]:
        """The chunks one event becomes (often none)."""
        if isinstance(event, RawMessageStartEvent):
            return self._start(event.message)
        if isinstance(event, RawContentBlockStartEvent):
            return self._block_start(event)
        if isinstance(event, RawContentBlockDeltaEvent):
            return self._block_delta(event)
        if isinstance(event, RawMessageDeltaEvent):
            self._delta(event)
        elif isinstance(event, RawMessageStopEvent):
            return self._stop()
        return []

    def _start(self, message: Message) -> list[StreamEvent]:
        self._writer = ChunkWriter(self._model, message.id)
        self._usage = Usage(prompt_tokens=_input_tokens(message.usage))
        return [self._writer.role()]

    def _block_start(self, event: RawContentBlockStartEvent) -> list[StreamEvent]:
        block = event.content_block
        if isinstance(block, TextBlock):
            return [self._writer.content(block.text)] if block.text else []
        if not isinstance(block, ToolUseBlock):
            return []  # thinking and server-tool blocks have no OpenAI counterpart
        index = self._tool_index[event.index] = len(self._tool_index)
        return [self._writer.tool_call_start(index, block.id, block.name, None)]

    def _block_delta(self, event: RawContentBlockDeltaEvent) -> list[StreamEvent]:
        delta = event.delta
        if delta.type == "text_delta":
            return [self._writer.content(delta.text)]
        if delta.type == "input_json_delta" and delta.partial_json:
            index = self._tool_index[event.index]
            return [self._writer.tool_call_arguments(index, delta.partial_json)]
        return []

    def _delta(self, event: RawMessageDeltaEvent) -> None:
        self._stop_reason = event.delta.stop_reason or self._stop_reason
        # message_delta's counts are cumulative; input counts appear only sometimes.
        prompt = _input_tokens(event.usage) or self._usage.prompt_tokens
        self._usage = Usage(prompt_tokens=prompt, completion_tokens=event.usage.output_tokens)

    def _stop(self) -> list[StreamEvent]:
        self.done = True
        finish = self._writer.finish(_finish_reason(self._stop_reason))
        return [finish, self._writer.usage(self._usage)]


# -- errors ---------------------------------------------------------------------------


def _error(exc: anthropic.AnthropicError) -> AtriumError:
    """An SDK exception as an Atrium error; the API key is never part of one."""
    if isinstance(exc, anthropic.APITimeoutError):
        return UpstreamTimeoutError(f"{PROVIDER} did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return UpstreamError(f"cannot connect to {PROVIDER}")
    if not isinstance(exc, anthropic.APIStatusError):
        return UpstreamError(f"{PROVIDER} failed: {type(exc).__name__}")
    if exc.status_code < 400:
        # An `error` event inside a stream that had started with 200.
        return UpstreamError(f"{PROVIDER} failed mid-stream ({exc.type or 'error'})")
    return status_error(
        PROVIDER,
        exc.status_code,
        exc.api_message,
        code=exc.type,
        retry_after=exc.response.headers.get("retry-after"),
    )
