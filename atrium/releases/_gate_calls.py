"""Bounded calls on a candidate: every request has a deadline, every failure is data.

A release candidate is untrusted: it may hang, raise anything, or answer in a broken
shape. The gates must record that as a failing case and go on, so these helpers turn
each outcome (answer, timeout, exception) into a value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import orjson

from atrium.releases._gate_types import clip
from atrium.runtime.base import ModelBackend, StreamEvent
from atrium.runtime.schema import JSON, ChatCompletionRequest

Clock = Callable[[], float]


def describe_error(exc: BaseException) -> str:
    """One line naming the error: its type and message."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return clip(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 300)


@dataclass(frozen=True, slots=True)
class ChatOutcome:
    """A non-streamed answer, or why there is none."""

    response: JSON | None
    error: str | None = None

    @property
    def content(self) -> str:
        """The first choice's message text ("" when missing or malformed)."""
        return message_content(self.response) or ""

    def shown(self) -> str:
        """What a report shows as the answer: the text, or the error."""
        return self.error if self.error is not None else clip(self.content)


def message_content(response: JSON | None) -> str | None:
    """``choices[0].message.content`` when the response has that shape."""
    choice = first_choice(response)
    message = choice.get("message") if choice is not None else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def first_choice(response: JSON | None) -> JSON | None:
    """``choices[0]`` when it is a JSON object."""
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice: JSON = choices[0]
    return choice


async def bounded_chat(
    backend: ModelBackend, request: ChatCompletionRequest, timeout_s: float
) -> ChatOutcome:
    """``backend.chat(request)`` within ``timeout_s``; a timeout or exception is an outcome."""
    try:
        async with asyncio.timeout(timeout_s):
            response: Any = await backend.chat(request)
    except TimeoutError:
        return ChatOutcome(None, f"no answer within {timeout_s:g} s")
    except Exception as exc:  # noqa: BLE001 - the candidate's failure is recorded as a failing case
        return ChatOutcome(None, describe_error(exc))
    if not isinstance(response, dict):
        return ChatOutcome(None, f"the answer is a {type(response).__name__}, not a JSON object")
    return ChatOutcome(response)


@dataclass(slots=True)
class StreamOutcome:
    """A streamed answer: its chunks, timings and final usage, or why it broke off."""

    chunks: list[JSON] = field(default_factory=list)
    text: str = ""
    ttft_s: float | None = None
    total_s: float = 0.0
    usage: JSON | None = None
    finish_reason: str | None = None
    error: str | None = None

    @property
    def completion_tokens(self) -> int:
        """Completion tokens from the usage chunk (0 without one)."""
        value = (self.usage or {}).get("completion_tokens")
        return value if isinstance(value, int) else 0

    def add(self, chunk: JSON, elapsed: float) -> None:
        """Take one parsed chunk into the outcome."""
        self.chunks.append(chunk)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choice = first_choice(chunk)
        if choice is None:
            return
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            self.text += content
            if self.ttft_s is None:
                self.ttft_s = elapsed
        if choice.get("finish_reason") is not None:
            self.finish_reason = str(choice["finish_reason"])


async def _consume(
    events: AsyncIterator[StreamEvent], outcome: StreamOutcome, clock: Clock, started: float
) -> None:
    try:
        async for event in events:
            chunk = orjson.loads(event.data)
            if not isinstance(chunk, dict):
                msg = "a stream chunk is not a JSON object"
                raise TypeError(msg)
            outcome.add(chunk, clock() - started)
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            with suppress(Exception):
                await closer()


async def bounded_stream(
    backend: ModelBackend,
    request: ChatCompletionRequest,
    timeout_s: float,
    clock: Clock = time.perf_counter,
) -> StreamOutcome:
    """Read ``backend.chat_stream(request)`` to its end within ``timeout_s``."""
    outcome = StreamOutcome()
    started = clock()
    try:
        async with asyncio.timeout(timeout_s):
            await _consume(backend.chat_stream(request), outcome, clock, started)
    except TimeoutError:
        outcome.error = f"the stream did not end within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - the candidate's failure is recorded as a failing case
        outcome.error = describe_error(exc)
    outcome.total_s = clock() - started
    return outcome
