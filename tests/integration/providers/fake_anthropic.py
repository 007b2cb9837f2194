"""A fake Anthropic Messages API that speaks its documented wire format.

``POST /v1/messages`` checks each request the way the real API does (auth and
version headers, body fields, turn and tool-result rules) and answers 400 in
Anthropic's error shape when a rule is broken, so a wrong translation fails the
test with the reason. Valid requests are recorded; the answer is the next one
the test scripted: a ``Reply`` (rendered as a JSON message, or as the SSE event
sequence when the request streams), a ``Failure`` or a ``Stall``.
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
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_TOP_LEVEL = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "output_config",
    }
)
_TOOL_CHOICE_TYPES = frozenset({"auto", "any", "tool", "none"})


@dataclass(frozen=True)
class ToolUse:
    """A tool_use block the model answers with."""

    id: str
    name: str
    input: JSON


@dataclass(frozen=True)
class Reply:
    """One answer of the model."""

    text: str = ""
    tool_uses: list[ToolUse] = field(default_factory=list)
    stop_reason: str = "end_turn"
    input_tokens: int = 12
    output_tokens: int = 7
    cache_read_input_tokens: int = 0


@dataclass(frozen=True)
class Failure:
    """An error status in Anthropic's error shape."""

    status: int
    error_type: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stall:
    """Wait this long before answering (to trip the client's timeout)."""

    seconds: float


@dataclass(frozen=True)
class MidStreamError:
    """A stream that starts (200, message_start) and then sends an ``error`` event."""

    error_type: str
    message: str


Answer = Reply | Failure | Stall | MidStreamError


@dataclass(frozen=True)
class Recorded:
    """A request that passed the checks."""

    headers: dict[str, str]
    body: JSON


class RequestError(Exception):
    """A request the real API would refuse with 400."""


class FakeAnthropic:
    """The fake API's state: the expected key, the script, the requests seen."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self._script: deque[Answer] = deque()
        self.app = Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

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

    async def _messages(self, request: Request) -> Response:
        if not self._authenticated(request):
            return _error(Failure(401, "authentication_error", "invalid x-api-key"))
        try:
            body = orjson.loads(await request.body())
            _check_headers(request)
            check_request(body)
        except (RequestError, orjson.JSONDecodeError) as exc:
            return _error(Failure(400, "invalid_request_error", str(exc)))
        self.requests.append(Recorded(dict(request.headers), body))
        answer = self._script.popleft() if self._script else Reply(text="ok")
        while isinstance(answer, Stall):
            await asyncio.sleep(answer.seconds)
            answer = self._script.popleft() if self._script else Reply(text="ok")
        if isinstance(answer, Failure):
            return _error(answer)
        if isinstance(answer, MidStreamError):
            return StreamingResponse(
                _broken_sse(answer, body["model"]), media_type="text/event-stream"
            )
        if body.get("stream"):
            return StreamingResponse(_sse(answer, body["model"]), media_type="text/event-stream")
        return Response(orjson.dumps(message(answer, body["model"])), media_type="application/json")

    def _authenticated(self, request: Request) -> bool:
        # The API takes the key as x-api-key, or as a bearer token (what this SDK sends).
        bearer = request.headers.get("authorization", "")
        return (
            request.headers.get("x-api-key") == self.api_key or bearer == f"Bearer {self.api_key}"
        )


def _check_headers(request: Request) -> None:
    if not _VERSION.fullmatch(request.headers.get("anthropic-version", "")):
        raise RequestError("anthropic-version: header is required")
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise RequestError("content-type must be application/json")


# -- request checks -------------------------------------------------------------------


def check_request(body: object) -> None:
    """Raise ``RequestError`` where the real Messages API would answer 400."""
    _require(isinstance(body, dict), "body: must be an object")
    assert isinstance(body, dict)
    extra = set(body) - _TOP_LEVEL
    _require(not extra, f"{sorted(extra)}: Extra inputs are not permitted")
    _require(isinstance(body.get("model"), str), "model: Field required")
    max_tokens = body.get("max_tokens")
    _require(isinstance(max_tokens, int) and max_tokens >= 1, "max_tokens: Field required")
    _check_sampling(body)
    _check_system(body.get("system"))
    _check_messages(body.get("messages"))
    _check_tools(body.get("tools"), body.get("tool_choice"))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RequestError(message)


def _check_sampling(body: JSON) -> None:
    stops = body.get("stop_sequences", [])
    _require(isinstance(stops, list), "stop_sequences: must be a list")
    _require(all(isinstance(s, str) and s.strip() for s in stops), "stop_sequences: blank")
    metadata = body.get("metadata", {})
    _require(set(metadata) <= {"user_id"}, "metadata: only user_id is allowed")
    output = body.get("output_config", {})
    fmt = output.get("format")
    if fmt is not None:
        _require(fmt.get("type") == "json_schema", "output_config.format.type: json_schema")
        _require(isinstance(fmt.get("schema"), dict), "output_config.format.schema: required")


def _check_system(system: object) -> None:
    if system is None or isinstance(system, str):
        return
    _require(isinstance(system, list), "system: must be a string or text blocks")
    assert isinstance(system, list)
    for block in system:
        _check_text_block(block)


def _check_messages(messages: object) -> None:
    _require(isinstance(messages, list) and bool(messages), "messages: at least one message")
    assert isinstance(messages, list)
    previous: JSON | None = None
    for i, message in enumerate(messages):
        role = message.get("role")
        _require(role in ("user", "assistant"), f"messages.{i}.role: user or assistant")
        if previous is None:
            _require(role == "user", "messages: first message must use the user role")
        else:
            _require(role != previous["role"], "messages: roles must alternate")
        blocks = _blocks(message.get("content"), f"messages.{i}")
        (_check_user if role == "user" else _check_assistant)(blocks, previous, i)
        previous = {"role": role, "blocks": blocks}


def _blocks(content: object, where: str) -> list[JSON]:
    if isinstance(content, str):
        _require(bool(content), f"{where}: text content blocks must be non-empty")
        return [{"type": "text", "text": content}]
    _require(isinstance(content, list) and bool(content), f"{where}: content must not be empty")
    assert isinstance(content, list)
    return content


def _check_text_block(block: JSON) -> None:
    _require(block.get("type") == "text", "text block expected")
    text = block.get("text")
    _require(isinstance(text, str) and bool(text), "text content blocks must be non-empty")


def _check_assistant(blocks: list[JSON], previous: JSON | None, i: int) -> None:
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            _check_text_block(block)
        elif kind == "tool_use":
            _require(isinstance(block.get("id"), str), f"messages.{i}: tool_use.id required")
            _require(isinstance(block.get("name"), str), f"messages.{i}: tool_use.name required")
            _require(isinstance(block.get("input"), dict), f"messages.{i}: input must be an object")
        else:
            raise RequestError(f"messages.{i}: unexpected {kind!r} block in an assistant turn")


def _check_user(blocks: list[JSON], previous: JSON | None, i: int) -> None:
    expected = {b["id"] for b in (previous or {}).get("blocks", []) if b.get("type") == "tool_use"}
    seen: set[str] = set()
    for position, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "text":
            _check_text_block(block)
        elif kind == "tool_result":
            _require(position == len(seen), f"messages.{i}: tool_result blocks must come first")
            tool_use_id = block.get("tool_use_id")
            _require(
                tool_use_id in expected,
                f"messages.{i}: unexpected tool_use_id {tool_use_id!r} in tool_result blocks",
            )
            _require(isinstance(block.get("content", ""), str | list), "tool_result.content")
            seen.add(str(tool_use_id))
        else:
            raise RequestError(f"messages.{i}: unexpected {kind!r} block in a user turn")
    missing = expected - seen
    _require(not missing, f"messages.{i}: tool_use ids without tool_result: {sorted(missing)}")


def _check_tools(tools: object, tool_choice: object) -> None:
    names: set[str] = set()
    for tool in tools if isinstance(tools, list) else []:
        name = tool.get("name")
        _require(isinstance(name, str) and bool(_TOOL_NAME.fullmatch(name)), "tools.name")
        schema = tool.get("input_schema")
        _require(isinstance(schema, dict), "tools.input_schema: Field required")
        _require(schema.get("type") == "object", "tools.input_schema.type: must be object")
        _require(set(tool) <= {"name", "description", "input_schema"}, "tools: extra inputs")
        names.add(name)
    if tool_choice is None:
        return
    _require(isinstance(tool_choice, dict), "tool_choice: must be an object")
    assert isinstance(tool_choice, dict)
    _require(tool_choice.get("type") in _TOOL_CHOICE_TYPES, "tool_choice.type: invalid")
    if tool_choice["type"] == "tool":
        _require(tool_choice.get("name") in names, "tool_choice.name: no tool of that name")


# -- answers --------------------------------------------------------------------------


def message(reply: Reply, model: str) -> JSON:
    """The non-streaming response body."""
    content: list[JSON] = [{"type": "text", "text": reply.text}] if reply.text else []
    content += [
        {"type": "tool_use", "id": t.id, "name": t.name, "input": t.input} for t in reply.tool_uses
    ]
    return {
        "id": _message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": _usage(reply),
    }


def _usage(reply: Reply) -> JSON:
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": reply.cache_read_input_tokens,
        "output_tokens": reply.output_tokens,
    }


def _message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def stream_events(reply: Reply, model: str) -> list[tuple[str, JSON]]:
    """The SSE events of a streamed answer, in the documented order."""
    start = {**message(reply, model), "content": [], "stop_reason": None}
    start["usage"] = {**_usage(reply), "output_tokens": 1}
    events: list[tuple[str, JSON]] = [("message_start", {"message": start}), ("ping", {})]
    index = 0
    if reply.text:
        events += _text_block(index, reply.text)
        index += 1
    for tool_use in reply.tool_uses:
        events += _tool_block(index, tool_use)
        index += 1
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": None}
    events.append(
        ("message_delta", {"delta": delta, "usage": {"output_tokens": reply.output_tokens}})
    )
    events.append(("message_stop", {}))
    return events


def _text_block(index: int, text: str) -> list[tuple[str, JSON]]:
    pieces = re.findall(r"\S+\s*|\s+", text)
    return [
        ("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}),
        *(
            ("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": p}})
            for p in pieces
        ),
        ("content_block_stop", {"index": index}),
    ]


def _tool_block(index: int, tool_use: ToolUse) -> list[tuple[str, JSON]]:
    arguments = orjson.dumps(tool_use.input).decode()
    half = len(arguments) // 2
    block = {"type": "tool_use", "id": tool_use.id, "name": tool_use.name, "input": {}}
    return [
        ("content_block_start", {"index": index, "content_block": block}),
        *(
            (
                "content_block_delta",
                {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
            )
            # The API's first input_json_delta is often empty; clients must cope.
            for piece in ("", arguments[:half], arguments[half:])
        ),
        ("content_block_stop", {"index": index}),
    ]


async def _sse(reply: Reply, model: str) -> AsyncIterator[bytes]:
    for name, data in stream_events(reply, model):
        payload = orjson.dumps({"type": name, **data})
        yield b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


async def _broken_sse(failure: MidStreamError, model: str) -> AsyncIterator[bytes]:
    name, data = stream_events(Reply(), model)[0]
    yield b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"
    error = {"type": "error", "error": {"type": failure.error_type, "message": failure.message}}
    yield b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"


def _error(failure: Failure) -> Response:
    body = {
        "type": "error",
        "error": {"type": failure.error_type, "message": failure.message},
        "request_id": "req_" + secrets.token_hex(8),
    }
    return Response(
        orjson.dumps(body),
        status_code=failure.status,
        media_type="application/json",
        headers=failure.headers,
    )
