"""The llama.cpp backend on the real bundled SmolLM2 model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from atrium.core.errors import ContextLengthError, InvalidRequestError
from atrium.core.settings import LlamaCppModel
from atrium.runtime.backends.llamacpp import LlamaCppBackend, bundled_gguf
from atrium.runtime.schema import ChatCompletionRequest, CompletionRequest

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def backend() -> AsyncIterator[LlamaCppBackend]:
    model = LlamaCppBackend("smol", LlamaCppModel(n_ctx=512, queue_limit=4))
    await model.start()
    yield model
    await model.close()


def _chat(**fields: object) -> ChatCompletionRequest:
    body = {"model": "smol", "messages": [{"role": "user", "content": "Name a colour."}]}
    return ChatCompletionRequest.model_validate({**body, **fields})


def test_the_bundled_model_ships_in_its_wheel() -> None:
    path = bundled_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


@pytest.mark.asyncio(loop_scope="module")
async def test_chat_answers_with_openai_shape_and_exact_usage(backend: LlamaCppBackend) -> None:
    result = await backend.chat(_chat(max_tokens=6, temperature=0))
    assert result["object"] == "chat.completion"
    assert result["model"] == "smol"
    choice = result["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 6


@pytest.mark.asyncio(loop_scope="module")
async def test_streamed_usage_matches_the_unstreamed_count(backend: LlamaCppBackend) -> None:
    request = _chat(max_tokens=8, temperature=0, seed=1)
    whole = await backend.chat(request)
    events = [e async for e in backend.chat_stream(request.model_copy(update={"stream": True}))]
    chunks = [orjson.loads(e.data) for e in events]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    final = events[-1]
    assert final.usage_only
    assert final.usage is not None
    assert final.usage.prompt_tokens == whole["usage"]["prompt_tokens"]
    assert final.usage.completion_tokens == whole["usage"]["completion_tokens"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


@pytest.mark.asyncio(loop_scope="module")
async def test_n_choices_are_indexed_and_prompt_counted_once(backend: LlamaCppBackend) -> None:
    single = await backend.chat(_chat(max_tokens=4, temperature=0))
    double = await backend.chat(_chat(max_tokens=4, temperature=0, n=2))
    assert [c["index"] for c in double["choices"]] == [0, 1]
    assert double["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]


@pytest.mark.asyncio(loop_scope="module")
async def test_completions_and_token_counting(backend: LlamaCppBackend) -> None:
    request = CompletionRequest.model_validate(
        {"model": "smol", "prompt": ["One, two,", "Red, green,"], "max_tokens": 3}
    )
    result = await backend.complete(request)
    assert result["object"] == "text_completion"
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert await backend.count_tokens("hello world") == 2


@pytest.mark.asyncio(loop_scope="module")
async def test_too_long_for_the_context_window_is_a_clear_400(backend: LlamaCppBackend) -> None:
    with pytest.raises(ContextLengthError, match="context window is 512 tokens") as raised:
        await backend.chat(_chat(max_tokens=600))
    assert raised.value.status == 400
    assert raised.value.code == "context_length_exceeded"


@pytest.mark.asyncio(loop_scope="module")
async def test_tools_are_refused_not_ignored(backend: LlamaCppBackend) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(InvalidRequestError, match="does not support tools"):
        await backend.chat(_chat(tools=[tool]))


@pytest.mark.asyncio(loop_scope="module")
async def test_seeded_sampling_repeats(backend: LlamaCppBackend) -> None:
    request = _chat(max_tokens=8, temperature=0.9, seed=42)
    first = await backend.chat(request)
    second = await backend.chat(request)
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
