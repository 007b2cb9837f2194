"""The functional gate: does the candidate speak OpenAI's chat API correctly?

Conformance is absolute, not relative to production: every check must pass. The checks
are a plain chat (shape, roles, usage), a stream (chunks, finish_reason, final usage), a
stop sequence (derived from the plain answer, so it is one the model really produces), a
max_tokens limit, and JSON mode where the version claims it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from atrium.registry.types import ModelMetadata
from atrium.releases._gate_calls import (
    ChatOutcome,
    StreamOutcome,
    bounded_chat,
    bounded_stream,
    first_choice,
    message_content,
)
from atrium.releases._gate_types import CaseFailure, FunctionalGateConfig, GateResult, clip
from atrium.runtime.base import ModelBackend
from atrium.runtime.schema import JSON, ChatCompletionRequest

CHAT_PROMPT = "Write one sentence about the sea."
LONG_PROMPT = "Write a long story about a dragon who learns to fly."
JSON_PROMPT = "Describe a person as a JSON object with the keys name and age."
_FINISH = {"stop", "length"}
_WORD = re.compile(r"[A-Za-z]{3,}")


@dataclass(frozen=True, slots=True)
class Check:
    """One conformance check: what was asked, what it needed, what it got."""

    name: str
    input: str
    expected: str
    problem: str | None
    got: str

    def failure(self) -> CaseFailure:
        """The check as a failing case."""
        got = self.problem or ""
        if self.got and self.got != self.problem:
            got += f"; answer: {clip(self.got, 200)!r}"
        return CaseFailure(case=self.name, input=self.input, expected=self.expected, got=got)


def claims_json_mode(metadata: ModelMetadata) -> bool:
    """Whether the version's metadata says it supports ``response_format: json_object``."""
    extra = metadata.model_extra or {}
    formats = extra.get("response_formats")
    return extra.get("json_mode") is True or (
        isinstance(formats, list) and "json_object" in formats
    )


def chat_problem(response: JSON | None, limit: int) -> str | None:
    """What is wrong with a ``chat.completion`` object, or None."""
    if response is None:
        return "no response"
    choice = first_choice(response)
    message = choice.get("message") if choice else None
    problems = [
        (response.get("object") != "chat.completion", "object is not chat.completion"),
        (not isinstance(response.get("id"), str), "no id"),
        (choice is None, "no choices"),
        (not isinstance(message, dict), "choices[0] has no message"),
        (isinstance(message, dict) and message.get("role") != "assistant", "role is not assistant"),
        (message_content(response) is None, "message has no text content"),
        (choice is not None and choice.get("finish_reason") not in _FINISH, "bad finish_reason"),
    ]
    found = next((text for bad, text in problems if bad), None)
    return found or usage_problem(response.get("usage"), limit)


def usage_problem(usage: Any, limit: int) -> str | None:
    """What is wrong with a ``usage`` object, or None."""
    if not isinstance(usage, dict):
        return "no usage"
    raw = [usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    counts = [c for c in raw if isinstance(c, int) and c >= 0]
    if len(counts) != len(raw):
        return f"usage counts are not whole numbers: {usage}"
    prompt, completion, total = counts
    if total != prompt + completion:
        return f"usage total_tokens {total} != {prompt} + {completion}"
    if prompt == 0 or not 0 < completion <= limit:
        return f"usage {prompt} prompt / {completion} completion tokens (limit {limit})"
    return None


def stream_problem(outcome: StreamOutcome, limit: int) -> str | None:
    """What is wrong with a streamed answer, or None."""
    if outcome.error is not None:
        return outcome.error
    chunks = outcome.chunks
    last = chunks[-1] if chunks else {}
    return _first(
        (not any(c.get("choices") for c in chunks), "the stream had no chunks with choices"),
        (
            any(c.get("object") != "chat.completion.chunk" for c in chunks),
            "a chunk's object is not chat.completion.chunk",
        ),
        (len({c.get("id") for c in chunks}) != 1, "chunks do not share one id"),
        (not outcome.text, "the stream carried no content"),
        (
            outcome.finish_reason not in _FINISH,
            f"the stream ended without a finish_reason (got {outcome.finish_reason!r})",
        ),
        (
            bool(last.get("choices")) or not isinstance(last.get("usage"), dict),
            "the stream did not end with a usage chunk (stream_options.include_usage)",
        ),
    ) or usage_problem(outcome.usage, limit)


class FunctionalGate:
    """Runs the conformance checks on one candidate."""

    def __init__(self, config: FunctionalGateConfig, seed: int) -> None:
        self._config = config
        self._seed = seed

    def _request(self, backend: ModelBackend, prompt: str, **fields: Any) -> ChatCompletionRequest:
        body: JSON = {
            "model": backend.name,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": self._config.max_tokens,
            "temperature": 0.0,
            "seed": self._seed,
        }
        return ChatCompletionRequest.model_validate(body | fields)

    async def _chat(self, backend: ModelBackend, request: ChatCompletionRequest) -> ChatOutcome:
        return await bounded_chat(backend, request, self._config.timeout_s)

    async def run(self, candidate: ModelBackend, metadata: ModelMetadata) -> GateResult:
        """Every check; the gate passes when all do."""
        plain = await self._chat(candidate, self._request(candidate, CHAT_PROMPT))
        checks = [
            self._shape(plain),
            await self._stream(candidate),
            await self._stop(candidate, plain),
            await self._length(candidate),
        ]
        wants_json = self._config.json_mode == "always" or (
            self._config.json_mode == "auto" and claims_json_mode(metadata)
        )
        if wants_json:
            checks.append(await self._json(candidate))
        return _result(checks)

    def _shape(self, plain: ChatOutcome) -> Check:
        problem = plain.error or chat_problem(plain.response, self._config.max_tokens)
        expected = "a chat.completion with an assistant message, finish_reason and usage"
        return Check("chat", CHAT_PROMPT, expected, problem, plain.shown())

    async def _stream(self, candidate: ModelBackend) -> Check:
        request = self._request(
            candidate, CHAT_PROMPT, stream=True, stream_options={"include_usage": True}
        )
        outcome = await bounded_stream(candidate, request, self._config.timeout_s)
        expected = "chat.completion.chunk events, a finish_reason, then a usage chunk"
        problem = stream_problem(outcome, self._config.max_tokens)
        return Check("stream", CHAT_PROMPT, expected, problem, clip(outcome.text))

    async def _stop(self, candidate: ModelBackend, plain: ChatOutcome) -> Check:
        stop = _stop_word(plain.content)
        if stop is None:
            missing = (
                f"not run: the plain chat failed ({plain.error})"
                if plain.error is not None
                else "the plain answer had no word to use as a stop sequence"
            )
            return Check("stop", CHAT_PROMPT, "a stop sequence", missing, plain.content)
        outcome = await self._chat(candidate, self._request(candidate, CHAT_PROMPT, stop=[stop]))
        text, choice = outcome.content, first_choice(outcome.response)
        reason = choice.get("finish_reason") if choice else None
        problem = outcome.error or _first(
            (stop in text, f"the answer contains the stop sequence {stop!r}"),
            (reason != "stop", f"finish_reason is {reason!r}, not 'stop'"),
        )
        return Check("stop", f"{CHAT_PROMPT} (stop={stop!r})", f"no {stop!r}", problem, text)

    async def _length(self, candidate: ModelBackend) -> Check:
        limit = self._config.length_limit
        outcome = await self._chat(
            candidate, self._request(candidate, LONG_PROMPT, max_tokens=limit)
        )
        choice = first_choice(outcome.response)
        reason = choice.get("finish_reason") if choice else None
        usage = (outcome.response or {}).get("usage")
        used = usage.get("completion_tokens") if isinstance(usage, dict) else None
        problem = outcome.error or _first(
            (reason != "length", f"finish_reason is {reason!r}, not 'length'"),
            (not isinstance(used, int) or used > limit, f"completion_tokens {used} > {limit}"),
        )
        expected = f"finish_reason 'length', at most {limit} completion tokens"
        return Check(
            "max_tokens", f"{LONG_PROMPT} (max_tokens={limit})", expected, problem, outcome.shown()
        )

    async def _json(self, candidate: ModelBackend) -> Check:
        request = self._request(
            candidate,
            JSON_PROMPT,
            max_tokens=self._config.json_max_tokens,
            response_format={"type": "json_object"},
        )
        outcome = await self._chat(candidate, request)
        return Check(
            "json_mode",
            f"{JSON_PROMPT} (response_format json_object)",
            "a JSON object",
            outcome.error or _json_problem(outcome.content),
            outcome.shown(),
        )


def _first(*conditions: tuple[bool, str]) -> str | None:
    return next((text for bad, text in conditions if bad), None)


def _json_problem(text: str) -> str | None:
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"not JSON: {exc}"
    return None if isinstance(parsed, dict) else f"JSON {type(parsed).__name__}, not an object"


def _stop_word(text: str) -> str | None:
    """A word from the middle of ``text`` whose first occurrence is not at its start."""
    words = [m for m in _WORD.finditer(text) if m.start() > 0 and text.find(m.group()) > 0]
    return words[len(words) // 2].group() if words else None


def _result(checks: list[Check]) -> GateResult:
    failed = [c for c in checks if c.problem is not None]
    score = (len(checks) - len(failed)) / len(checks)
    if failed:
        detail = "; ".join(f"{c.name}: {c.problem}" for c in failed)
        reason = f"functional failed: {len(failed)} of {len(checks)} checks ({detail})"
    else:
        reason = f"functional passed: {', '.join(c.name for c in checks)}"
    return GateResult(
        name="functional",
        passed=not failed,
        reason=clip(reason, 1000),
        score=score,
        threshold=1.0,
        failures=[c.failure() for c in failed],
        metrics={c.name: float(c.problem is None) for c in checks},
    )
