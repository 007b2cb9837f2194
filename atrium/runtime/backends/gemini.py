"""Gemini models on the Gemini API or Vertex AI, translated to and from OpenAI's format.

Requests go through the official SDK (``google.genai.Client``). Function results
need the function's name, which OpenAI's tool messages lack: it is recovered from
the assistant tool call with the same id. Gemini's thought signatures (which it
needs back with a function call's turn) travel in the tool call's
``extra_content.google.thought_signature``, as in Google's own OpenAI-compatible
endpoint. ``n`` > 1 is refused with a 400.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from atrium.core.errors import AtriumError, InvalidRequestError, UpstreamError, UpstreamTimeoutError
from atrium.core.settings import GeminiModel
from atrium.observability.propagation import traceparent_headers
from atrium.runtime.backends._translate import (
    Answer,
    ChunkWriter,
    ToolCall,
    chat_completion,
    check_supported,
    content_text,
    conversation,
    dump_arguments,
    function_tools,
    json_schema_of,
    new_id,
    parse_arguments,
    runs,
    status_error,
    system_text,
    tool_call_id,
    tool_call_names,
    tool_calls_of,
    tool_choice_of,
)
from atrium.runtime.base import BackendBase, Capability, Health, StreamEvent
from atrium.runtime.credentials import StoredCredential
from atrium.runtime.schema import JSON, ChatCompletionRequest, ChatMessage, Usage

PROVIDER = "gemini"
_FinishReason = types.FinishReason
_BLOCKED = "content_filter"
# Gemini's finishReason -> OpenAI's finish_reason; anything else ends as "stop".
_FINISH_REASONS = {
    _FinishReason.STOP: "stop",
    _FinishReason.MAX_TOKENS: "length",
    **dict.fromkeys(
        (
            _FinishReason.SAFETY,
            _FinishReason.RECITATION,
            _FinishReason.LANGUAGE,
            _FinishReason.BLOCKLIST,
            _FinishReason.PROHIBITED_CONTENT,
            _FinishReason.SPII,
            _FinishReason.IMAGE_SAFETY,
            _FinishReason.IMAGE_PROHIBITED_CONTENT,
            _FinishReason.IMAGE_RECITATION,
            _FinishReason.MODEL_ARMOR,
        ),
        _BLOCKED,
    ),
}
# OpenAI's tool_choice mode -> Gemini's function calling mode.
_Mode = types.FunctionCallingConfigMode
_CALLING_MODES = {
    "auto": _Mode.AUTO,
    "none": _Mode.NONE,
    "required": _Mode.ANY,
    "function": _Mode.ANY,
}
# OpenAI's message role -> Gemini's content role (function results travel in user turns).
_TURN_ROLES = {"user": "user", "tool": "user", "assistant": "model"}
# Ids this module makes up for calls Gemini sent without one; they are not sent back.
_LOCAL_CALL_ID = re.compile(r"call_[0-9a-f]{24}")
_JSON_MIME = "application/json"
# What the SDK raises for a failed call: API statuses, bad bodies, transport errors.
_SDK_ERRORS = (genai_errors.APIError, genai_errors.UnknownApiResponseError, httpx.HTTPError)


def build_http_client(spec: GeminiModel) -> httpx.AsyncClient:
    """The HTTP client the SDK sends through (the transport is the seam for tests)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(spec.timeout_seconds))


def build_client(
    spec: GeminiModel, http: httpx.AsyncClient, api_key: str | None = None
) -> genai.Client:
    """The SDK client for one model's settings, sending through ``http``.

    An injected httpx client keeps the SDK off its own aiohttp session (a subclass
    aiohttp deprecates) and makes failures plain httpx errors. One attempt per call:
    the gateway retries.
    """
    options = types.HttpOptions(
        base_url=str(spec.base_url) if spec.base_url else None,
        timeout=math.ceil(spec.timeout_seconds * 1000),
        retry_options=types.HttpRetryOptions(attempts=1),
        httpx_async_client=http,
    )
    return genai.Client(
        vertexai=spec.vertexai,
        api_key=api_key or (spec.api_key.get_secret_value() if spec.api_key else None),
        project=spec.project,
        location=spec.location,
        http_options=options,
    )


class GeminiBackend(BackendBase):
    """Chat and tool calls on a Gemini model, in OpenAI's request and response shapes."""

    capabilities = frozenset({Capability.CHAT, Capability.TOOLS})

    def __init__(
        self,
        name: str,
        spec: GeminiModel,
        http: httpx.AsyncClient | None = None,
        *,
        credential: StoredCredential | None = None,
    ) -> None:
        self.name = name
        self._spec = spec
        self.completion_estimate = spec.completion_estimate
        self._http = http or build_http_client(spec)
        # With a stored key the client is made at the first call: the SDK wants a key.
        self._client = None if credential is not None else build_client(spec, self._http)
        self._credential = credential
        self._credential_value: str | None = None
        self._closed = False

    async def _current_client(self) -> genai.Client:
        """The client, rebuilt when the stored secret holding its key has changed."""
        if self._credential is not None:
            value = await self._credential.value()
            if value != self._credential_value or self._client is None:
                # Over the same httpx client (the connection pool); the old SDK client
                # holds nothing else worth closing while calls may still use it.
                self._client = build_client(self._spec, self._http, api_key=value)
                self._credential_value = value
        assert self._client is not None
        return self._client

    async def close(self) -> None:
        """Close the HTTP client and the SDK's own (unused) ones."""
        self._closed = True
        await self._http.aclose()
        if self._client is not None:
            await self._client.aio.aclose()
            self._client.close()

    async def health(self) -> Health:
        """Ready while the client is open; no call is made."""
        return Health(ready=not self._closed, detail="closed" if self._closed else "")

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """One ``generate_content`` call, answered as a ``chat.completion``."""
        contents, config = request_params(request)
        _pass_trace(config)
        try:
            client = await self._current_client()
            response = await client.aio.models.generate_content(
                model=self._spec.model, contents=contents, config=config
            )
        except _SDK_ERRORS as exc:
            raise _error(exc) from exc
        return chat_completion(self.name, _answer(response))

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """``generate_content_stream``, each response translated to OpenAI chunks.

        The SDK sends the request on the first read, so nothing is yielded before
        Gemini has answered: errors up to then stay plain HTTP errors.
        """
        contents, config = request_params(request)
        _pass_trace(config)
        translator = _StreamTranslator(self.name)
        try:
            client = await self._current_client()
            stream = await client.aio.models.generate_content_stream(
                model=self._spec.model, contents=contents, config=config
            )
            try:
                async for response in stream:
                    for chunk in translator.see(response):
                        yield chunk
            finally:
                if isinstance(stream, AsyncGenerator):
                    await stream.aclose()
        except _SDK_ERRORS as exc:
            raise _error(exc) from exc
        for chunk in translator.end():
            yield chunk


# -- requests -------------------------------------------------------------------------


def _pass_trace(config: types.GenerateContentConfig) -> None:
    """Send the current span's ``traceparent`` with this request (none outside a span)."""
    headers = traceparent_headers()
    if headers is not None:
        config.http_options = types.HttpOptions(headers=headers)


def request_params(
    request: ChatCompletionRequest,
) -> tuple[list[types.Content], types.GenerateContentConfig]:
    """``contents`` and ``config`` of ``generate_content`` for an OpenAI chat request."""
    check_supported(request)
    system = system_text(request.messages)
    tools = _tools(request)
    config = types.GenerateContentConfig(
        system_instruction=types.Content(parts=[types.Part(text=system)]) if system else None,
        max_output_tokens=request.token_limit,
        temperature=request.temperature,
        top_p=request.top_p,
        stop_sequences=request.stop_list() or None,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        tools=tools,
        tool_config=_tool_config(request) if tools else None,
        # Tools are declarations for the caller to run; the SDK must never call any.
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        **_response_format(request),
    )
    return contents_param(request.messages), config


def contents_param(messages: list[ChatMessage]) -> list[types.Content]:
    """OpenAI turns as Gemini contents; consecutive same-role turns are merged."""
    names = tool_call_names(messages)
    return [
        types.Content(
            role=_TURN_ROLES[run[0].role],
            parts=[part for turn in run for part in _PARTS[turn.role](turn, names)],
        )
        for run in runs(conversation(messages), lambda turn: _TURN_ROLES[turn.role])
    ]


def _user_parts(message: ChatMessage, names: dict[str, str]) -> list[types.Part]:
    return [types.Part(text=content_text(message))]


def _model_parts(message: ChatMessage, names: dict[str, str]) -> list[types.Part]:
    text = content_text(message)
    parts = [types.Part(text=text)] if text else []
    parts.extend(_function_call_part(call) for call in tool_calls_of(message))
    return parts


def _function_call_part(call: ToolCall) -> types.Part:
    call_id = None if _LOCAL_CALL_ID.fullmatch(call.id) else call.id
    return types.Part(
        function_call=types.FunctionCall(id=call_id, name=call.name, args=call.arguments),
        thought_signature=_thought_signature(call.extra),
    )


def _function_response_parts(message: ChatMessage, names: dict[str, str]) -> list[types.Part]:
    call_id = tool_call_id(message)
    name = names.get(call_id)
    if name is None:
        msg = f"tool message answers {call_id!r}, which no assistant tool call has"
        raise InvalidRequestError(msg, param="messages")
    response = types.FunctionResponse(
        id=None if _LOCAL_CALL_ID.fullmatch(call_id) else call_id,
        name=name,
        response=_function_output(content_text(message)),
    )
    return [types.Part(function_response=response)]


_PARTS: dict[str, Callable[[ChatMessage, dict[str, str]], list[types.Part]]] = {
    "user": _user_parts,
    "assistant": _model_parts,
    "tool": _function_response_parts,
}


def _function_output(text: str) -> JSON:
    """A tool's output as Gemini's response object: JSON objects as they are,
    anything else under ``output`` (the key Gemini's documentation names)."""
    try:
        value = parse_arguments(text)
    except InvalidRequestError:
        return {"output": text}
    return value


def _thought_signature(extra: JSON | None) -> bytes | None:
    google = (extra or {}).get("google")
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if not isinstance(signature, str):
        return None
    try:
        return base64.b64decode(signature, validate=True)
    except binascii.Error as exc:
        msg = "extra_content.google.thought_signature must be base64"
        raise InvalidRequestError(msg, param="messages") from exc


def _tools(request: ChatCompletionRequest) -> list[types.Tool] | None:
    declarations = [
        types.FunctionDeclaration(
            name=tool.name, description=tool.description, parameters_json_schema=tool.parameters
        )
        for tool in function_tools(request)
    ]
    return [types.Tool(function_declarations=declarations)] if declarations else None


def _tool_config(request: ChatCompletionRequest) -> types.ToolConfig | None:
    choice = tool_choice_of(request)
    if choice is None:
        return None
    calling = types.FunctionCallingConfig(
        mode=_CALLING_MODES[choice.mode],
        allowed_function_names=[choice.name] if choice.name else None,
    )
    return types.ToolConfig(function_calling_config=calling)


def _response_format(request: ChatCompletionRequest) -> dict[str, Any]:
    response_format = request.response_format
    if response_format is None or response_format.type == "text":
        return {}
    schema = json_schema_of(request)
    if schema is None:  # json_object
        return {"response_mime_type": _JSON_MIME}
    return {"response_mime_type": _JSON_MIME, "response_json_schema": schema}


# -- responses ------------------------------------------------------------------------


def _parts(response: types.GenerateContentResponse) -> list[types.Part]:
    candidate = response.candidates[0] if response.candidates else None
    content = candidate.content if candidate else None
    return list(content.parts or []) if content else []


def _text(parts: list[types.Part]) -> str:
    """The answer's text; thought summaries are not part of it."""
    return "".join(part.text for part in parts if part.text and not part.thought)


def _tool_calls(parts: list[types.Part]) -> list[ToolCall]:
    return [_tool_call(part) for part in parts if part.function_call]


def _tool_call(part: types.Part) -> ToolCall:
    call = part.function_call
    assert call is not None
    extra = None
    if part.thought_signature:
        signature = base64.b64encode(part.thought_signature).decode()
        extra = {"google": {"thought_signature": signature}}
    return ToolCall(call.id or new_id("call_"), call.name or "", dict(call.args or {}), extra)


def _finish_reason(response: types.GenerateContentResponse, has_calls: bool) -> str:
    candidate = response.candidates[0] if response.candidates else None
    if candidate is None:
        feedback = response.prompt_feedback
        return _BLOCKED if feedback and feedback.block_reason else "stop"
    reason = _FINISH_REASONS.get(candidate.finish_reason or _FinishReason.STOP, "stop")
    return "tool_calls" if has_calls and reason == "stop" else reason


def _usage(metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
    """Prompt and completion tokens; thinking is billed as output, so it counts."""
    if metadata is None:
        return Usage()
    return Usage(
        prompt_tokens=(metadata.prompt_token_count or 0)
        + (metadata.tool_use_prompt_token_count or 0),
        completion_tokens=(metadata.candidates_token_count or 0)
        + (metadata.thoughts_token_count or 0),
    )


def _answer(response: types.GenerateContentResponse) -> Answer:
    parts = _parts(response)
    calls = _tool_calls(parts)
    return Answer(
        response.response_id or new_id("chatcmpl-"),
        _text(parts),
        calls,
        _finish_reason(response, bool(calls)),
        _usage(response.usage_metadata),
    )


class _StreamTranslator:
    """Gemini's streamed responses -> OpenAI chunks, for one streamed answer."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._writer: ChunkWriter | None = None
        self._calls = 0
        self._last: types.GenerateContentResponse | None = None

    def see(self, response: types.GenerateContentResponse) -> list[StreamEvent]:
        """The chunks one streamed response becomes."""
        chunks: list[StreamEvent] = []
        if self._writer is None:
            self._writer = ChunkWriter(self._model, response.response_id or new_id("chatcmpl-"))
            chunks.append(self._writer.role())
        parts = _parts(response)
        if text := _text(parts):
            chunks.append(self._writer.content(text))
        for call in _tool_calls(parts):
            chunks.extend(self._tool_call(self._writer, call))
        self._last = _merge_final(self._last, response)
        return chunks

    def _tool_call(self, writer: ChunkWriter, call: ToolCall) -> list[StreamEvent]:
        """Gemini sends each call whole: a start chunk, then all arguments at once."""
        index, self._calls = self._calls, self._calls + 1
        start = writer.tool_call_start(index, call.id, call.name, call.extra)
        return [start, writer.tool_call_arguments(index, dump_arguments(call.arguments))]

    def end(self) -> list[StreamEvent]:
        """The finish chunk and the usage chunk, from the stream's last responses."""
        if self._writer is None or self._last is None:
            raise UpstreamError(f"{PROVIDER} ended the stream without a response")
        finish = _finish_reason(self._last, self._calls > 0)
        return [self._writer.finish(finish), self._writer.usage(_usage(self._last.usage_metadata))]


def _merge_final(
    last: types.GenerateContentResponse | None, response: types.GenerateContentResponse
) -> types.GenerateContentResponse:
    """Keep usage from the latest response that has it (counts are cumulative)."""
    if last is None or response.usage_metadata is not None:
        return response
    return response.model_copy(update={"usage_metadata": last.usage_metadata})


# -- errors ---------------------------------------------------------------------------


def _error(exc: Exception) -> AtriumError:
    """An SDK exception as an Atrium error; the API key is never part of one."""
    if isinstance(exc, genai_errors.APIError):
        if any(d.get("reason") == "API_KEY_INVALID" for d in _details(exc)):
            # Gemini answers 400 for a bad key; it is our configuration, not the caller's.
            return UpstreamError(f"{PROVIDER} refused the configured API key")
        return status_error(
            PROVIDER, exc.code, exc.message, code=exc.status, retry_after=_retry_after(exc)
        )
    if isinstance(exc, genai_errors.UnknownApiResponseError):
        return UpstreamError(f"{PROVIDER} answered with invalid JSON")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"{PROVIDER} did not answer in time")
    return UpstreamError(f"cannot connect to {PROVIDER}: {type(exc).__name__}")


def _details(exc: genai_errors.APIError) -> list[JSON]:
    """The ``error.details`` of Google's error body (typed google.rpc messages)."""
    error = exc.details.get("error") if isinstance(exc.details, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _retry_after(exc: genai_errors.APIError) -> str | None:
    """Retry-After from the response header, else from Gemini's ``RetryInfo`` detail."""
    headers = getattr(exc.response, "headers", None)
    if headers is not None and headers.get("retry-after"):
        return str(headers.get("retry-after"))
    for detail in _details(exc):
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and (match := re.fullmatch(r"(\d+(?:\.\d+)?)s", delay)):
            return str(math.ceil(float(match.group(1))))
    return None
