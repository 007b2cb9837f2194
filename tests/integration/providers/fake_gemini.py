"""A fake Gemini API that speaks its documented wire format.

``POST /{version}/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse`` check each request the way the real API does
(the ``x-goog-api-key`` header, camelCase body fields, part shapes, function
responses that answer the function calls of the turn before) and answer 400 in
Google's error shape when a rule is broken. Valid requests are recorded; the
answer is the next one the test scripted: a ``Reply`` (one JSON response, or SSE
``data:`` events when streaming), a ``Failure`` or a ``Stall``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

JSON = dict[str, Any]
_METHOD = re.compile(r"(?P<model>[\w.-]+):(?P<method>generateContent|streamGenerateContent)")
_TOP_LEVEL = frozenset(
    {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings"}
)
_GENERATION_CONFIG = frozenset(
    {
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "stopSequences",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "thinkingConfig",
    }
)
_PART_DATA = frozenset({"text", "functionCall", "functionResponse", "inlineData", "fileData"})
_PART_META = frozenset({"thought", "thoughtSignature"})
_MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED"})
# Values that are google.protobuf.Struct/Value or Schema maps: their keys are data,
# never field names, so they are not renamed.
_OPAQUE = frozenset(
    {
        "args",
        "response",
        "parameters",
        "parametersJsonSchema",
        "responseSchema",
        "responseJsonSchema",
    }
)


@dataclass(frozen=True)
class FunctionCall:
    """A functionCall part the model answers with."""

    name: str
    args: JSON
    id: str | None = None
    thought_signature: str | None = None  # base64, as on the wire


@dataclass(frozen=True)
class Reply:
    """One answer of the model."""

    text: str = ""
    function_calls: list[FunctionCall] = field(default_factory=list)
    finish_reason: str = "STOP"
    prompt_tokens: int = 11
    candidates_tokens: int = 6
    thoughts_tokens: int = 0
    block_reason: str | None = None  # the prompt was blocked: no candidates at all


@dataclass(frozen=True)
class Failure:
    """An error status in Google's error shape."""

    code: int
    status: str
    message: str
    details: list[JSON] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stall:
    """Wait this long before answering (to trip the client's timeout)."""

    seconds: float


@dataclass(frozen=True)
class MidStreamError:
    """A stream that sends one text chunk, then an ``error`` object as its next event."""

    code: int
    status: str
    message: str


Answer = Reply | Failure | Stall | MidStreamError


@dataclass(frozen=True)
class Recorded:
    """A request that passed the checks; ``body`` with field names in camelCase."""

    path: str
    query: str
    headers: dict[str, str]
    body: JSON
    raw: JSON


class RequestError(Exception):
    """A request the real API would refuse with 400 INVALID_ARGUMENT."""


class FakeGemini:
    """The fake API's state: the expected key, the script, the requests seen."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self._script: deque[Answer] = deque()
        # The Gemini API, and Vertex AI in express mode (an API key, no project).
        self.app = Starlette(
            routes=[
                Route("/{version:str}/models/{method:str}", self._generate, methods=["POST"]),
                Route(
                    "/{version:str}/publishers/google/models/{method:str}",
                    self._generate,
                    methods=["POST"],
                ),
            ]
        )

    def will(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order (then a plain "ok")."""
        self._script.extend(answers)

    def reset(self) -> None:
        """Forget the script and the requests."""
        self._script.clear()
        self.requests.clear()

    @property
    def last(self) -> JSON:
        """The body of the last valid request."""
        return self.requests[-1].body

    async def _generate(self, request: Request) -> Response:
        match = _METHOD.fullmatch(request.path_params["method"])
        if match is None or request.path_params["version"] not in ("v1", "v1beta", "v1beta1"):
            return _error(Failure(404, "NOT_FOUND", "Requested entity was not found."))
        if request.headers.get("x-goog-api-key") != self.api_key:
            return _error(_invalid_key())
        streaming = match["method"] == "streamGenerateContent"
        try:
            raw = orjson.loads(await request.body())
            _require(not streaming or request.query_params.get("alt") == "sse", "alt=sse")
            body = canonical(raw)
            check_request(body)
        except (RequestError, orjson.JSONDecodeError) as exc:
            return _error(Failure(400, "INVALID_ARGUMENT", str(exc)))
        self.requests.append(
            Recorded(request.url.path, request.url.query, dict(request.headers), body, raw)
        )
        return await self._answer(match["model"], streaming)

    async def _answer(self, model: str, streaming: bool) -> Response:
        answer = self._script.popleft() if self._script else Reply(text="ok")
        while isinstance(answer, Stall):
            await asyncio.sleep(answer.seconds)
            answer = self._script.popleft() if self._script else Reply(text="ok")
        if isinstance(answer, Failure):
            return _error(answer)
        if isinstance(answer, MidStreamError):
            return StreamingResponse(_broken_sse(answer, model), media_type="text/event-stream")
        if streaming:
            return StreamingResponse(_sse(answer, model), media_type="text/event-stream")
        return Response(orjson.dumps(response(answer, model)), media_type="application/json")


def _invalid_key() -> Failure:
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "API_KEY_INVALID",
        "domain": "googleapis.com",
    }
    return Failure(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info]
    )


# -- request checks -------------------------------------------------------------------


def canonical(value: Any) -> Any:
    """Field names in lowerCamelCase.

    The API parses requests by proto3's JSON mapping, which takes a field by its
    lowerCamelCase JSON name or by its original snake_case name (the SDK sends
    some of each); the checks below then need to look for one spelling only.
    """
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if not isinstance(value, dict):
        return value
    renamed = {_camel(key): item for key, item in value.items()}
    return {k: v if k in _OPAQUE else canonical(v) for k, v in renamed.items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RequestError(message)


def check_request(body: object) -> None:
    """Raise ``RequestError`` where the real API would answer 400."""
    _require(isinstance(body, dict), "request body must be an object")
    assert isinstance(body, dict)
    unknown = set(body) - _TOP_LEVEL
    _require(not unknown, f'Invalid JSON payload received. Unknown name "{sorted(unknown)}"')
    _check_contents(body.get("contents"))
    _check_system(body.get("systemInstruction"))
    config = body.get("generationConfig", {})
    unknown = set(config) - _GENERATION_CONFIG
    _require(not unknown, f"generationConfig: unknown fields {sorted(unknown)}")
    _require(0 <= config.get("temperature", 1) <= 2, "temperature must be in [0, 2]")
    _require(len(config.get("stopSequences", [])) <= 5, "at most 5 stop sequences")
    names = _check_tools(body.get("tools", []))
    _check_tool_config(body.get("toolConfig"), names)


def _check_contents(contents: object) -> None:
    _require(isinstance(contents, list) and bool(contents), "contents is not specified")
    assert isinstance(contents, list)
    calls: list[str] = []
    for i, content in enumerate(contents):
        _require(content.get("role") in ("user", "model"), f"contents[{i}].role: user or model")
        parts = content.get("parts")
        _require(isinstance(parts, list) and bool(parts), f"contents[{i}].parts must not be empty")
        for part in parts:
            _check_part(part, i)
        responses = [p["functionResponse"]["name"] for p in parts if "functionResponse" in p]
        if responses:
            _require(
                sorted(responses) == sorted(calls),
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn.",
            )
        calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]


def _check_part(part: JSON, i: int) -> None:
    data = set(part) & _PART_DATA
    _require(len(data) == 1, f"contents[{i}].parts: exactly one data field per part")
    _require(set(part) <= _PART_DATA | _PART_META, f"contents[{i}].parts: unknown fields")
    if "text" in part:
        _require(isinstance(part["text"], str), f"contents[{i}]: text must be a string")
    if "functionCall" in part:
        call = part["functionCall"]
        _require(isinstance(call.get("name"), str), "functionCall.name is required")
        _require(isinstance(call.get("args", {}), dict), "functionCall.args must be an object")
    if "functionResponse" in part:
        response = part["functionResponse"]
        _require(isinstance(response.get("name"), str), "functionResponse.name is required")
        _require(isinstance(response.get("response"), dict), "functionResponse.response: object")


def _check_system(system: object) -> None:
    if system is None:
        return
    _require(isinstance(system, dict), "systemInstruction must be a Content")
    assert isinstance(system, dict)
    parts = system.get("parts")
    _require(isinstance(parts, list) and bool(parts), "systemInstruction.parts is empty")
    assert isinstance(parts, list)
    _require(all(isinstance(p.get("text"), str) for p in parts), "systemInstruction: text only")


def _check_tools(tools: list[JSON]) -> set[str]:
    names: set[str] = set()
    for tool in tools:
        _require(set(tool) <= {"functionDeclarations"}, f"tools: unexpected {sorted(tool)}")
        for declaration in tool["functionDeclarations"]:
            _require(isinstance(declaration.get("name"), str), "functionDeclarations.name")
            _require(
                not ("parameters" in declaration and "parametersJsonSchema" in declaration),
                "parameters and parametersJsonSchema are mutually exclusive",
            )
            allowed = {"name", "description", "parameters", "parametersJsonSchema"}
            _require(set(declaration) <= allowed, f"functionDeclarations: {sorted(declaration)}")
            names.add(declaration["name"])
    return names


def _check_tool_config(tool_config: object, names: set[str]) -> None:
    if tool_config is None:
        return
    assert isinstance(tool_config, dict)
    calling = tool_config.get("functionCallingConfig", {})
    _require(calling.get("mode") in _MODES, "functionCallingConfig.mode: invalid")
    allowed = calling.get("allowedFunctionNames")
    if allowed is not None:
        _require(calling["mode"] in ("ANY", "VALIDATED"), "allowedFunctionNames needs mode ANY")
        _require(set(allowed) <= names, "allowedFunctionNames: unknown function")


# -- answers --------------------------------------------------------------------------


def _call_part(call: FunctionCall) -> JSON:
    body: JSON = {"name": call.name, "args": call.args}
    if call.id:
        body["id"] = call.id
    part: JSON = {"functionCall": body}
    if call.thought_signature:
        part["thoughtSignature"] = call.thought_signature
    return part


def _usage(reply: Reply, *, final: bool = True) -> JSON:
    if not final:
        return {"promptTokenCount": reply.prompt_tokens, "totalTokenCount": reply.prompt_tokens}
    usage: JSON = {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": reply.candidates_tokens,
        "totalTokenCount": reply.prompt_tokens + reply.candidates_tokens + reply.thoughts_tokens,
    }
    if reply.thoughts_tokens:
        usage["thoughtsTokenCount"] = reply.thoughts_tokens
    return usage


def _candidate(parts: list[JSON], finish_reason: str | None) -> JSON:
    candidate: JSON = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish_reason:
        candidate["finishReason"] = finish_reason
    return candidate


def response(reply: Reply, model: str, response_id: str | None = None) -> JSON:
    """The non-streaming response body."""
    body: JSON = {
        "usageMetadata": _usage(reply),
        "modelVersion": model,
        "responseId": response_id or secrets.token_urlsafe(12),
    }
    if reply.block_reason:
        return {**body, "promptFeedback": {"blockReason": reply.block_reason}}
    parts = [{"text": reply.text}] if reply.text else []
    parts += [_call_part(c) for c in reply.function_calls]
    return {"candidates": [_candidate(parts, reply.finish_reason)], **body}


def stream_chunks(reply: Reply, model: str) -> list[JSON]:
    """The streamed responses: text word by word, then the calls and the finish reason."""
    response_id = secrets.token_urlsafe(12)
    if reply.block_reason:
        return [response(reply, model, response_id)]
    pieces = re.findall(r"\S+\s*|\s+", reply.text)
    head = {"modelVersion": model, "responseId": response_id}
    chunks = [
        {
            "candidates": [_candidate([{"text": p}], None)],
            "usageMetadata": _usage(reply, final=False),
        }
        | head
        for p in pieces[:-1]
    ]
    last = [{"text": pieces[-1]}] if pieces else []
    last += [_call_part(c) for c in reply.function_calls]
    final = {"candidates": [_candidate(last, reply.finish_reason)], "usageMetadata": _usage(reply)}
    return [*chunks, final | head]


async def _sse(reply: Reply, model: str) -> AsyncIterator[bytes]:
    for chunk in stream_chunks(reply, model):
        yield b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


async def _broken_sse(failure: MidStreamError, model: str) -> AsyncIterator[bytes]:
    chunk = {"candidates": [_candidate([{"text": "partial "}], None)], "modelVersion": model}
    yield b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
    error = {"code": failure.code, "message": failure.message, "status": failure.status}
    yield b"data: " + orjson.dumps({"error": error}) + b"\r\n\r\n"


def _error(failure: Failure) -> Response:
    error: JSON = {"code": failure.code, "message": failure.message, "status": failure.status}
    if failure.details:
        error["details"] = failure.details
    return Response(
        orjson.dumps({"error": error}),
        status_code=failure.code,
        media_type="application/json",
        headers=failure.headers,
    )
