"""Semantic cache: which requests can be matched, and the in-process prompt index."""

from __future__ import annotations

import numpy as np

from atrium.gateway.semantic_cache import InProcessPromptIndex, Vector, semantic_query
from atrium.runtime.schema import ChatCompletionRequest, CompletionRequest


def _unit(*values: float) -> Vector:
    vector = np.asarray(values, dtype=np.float32)
    return np.asarray(vector / np.linalg.norm(vector), dtype=np.float32)


def _chat(**fields: object) -> ChatCompletionRequest:
    body: dict[str, object] = {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi there"}],
        "temperature": 0,
    }
    return ChatCompletionRequest.model_validate({**body, **fields})


def test_only_deterministic_plain_text_prompts_are_matched() -> None:
    query = semantic_query("m", _chat(), scope="team:a", max_chars=100)
    assert query is not None
    assert query.text == "user: Hi there"
    assert semantic_query("m", _chat(temperature=0.5), scope="team:a", max_chars=100) is None
    assert semantic_query("m", _chat(), scope="team:a", max_chars=5) is None
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    with_image = _chat(messages=[{"role": "user", "content": image}])
    assert semantic_query("m", with_image, scope="team:a", max_chars=100) is None
    tool = _chat(
        messages=[
            {"role": "user", "content": "x"},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ]
    )
    assert semantic_query("m", tool, scope="team:a", max_chars=100) is None
    two = CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"], "temperature": 0})
    assert semantic_query("m", two, scope="team:a", max_chars=100) is None


def test_the_bucket_holds_everything_but_the_prompt() -> None:
    def bucket(request: ChatCompletionRequest, scope: str = "team:a", model: str = "m") -> str:
        query = semantic_query(model, request, scope=scope, max_chars=100)
        assert query is not None
        return query.bucket

    base = bucket(_chat())
    assert bucket(_chat(messages=[{"role": "user", "content": "Other"}])) == base
    assert bucket(_chat(stream=True)) == base
    assert bucket(_chat(max_tokens=5)) != base
    assert bucket(_chat(), scope="team:b") != base
    assert bucket(_chat(), model="n") != base


async def test_the_index_finds_the_nearest_live_prompt_of_its_bucket() -> None:
    now = [0.0]
    index = InProcessPromptIndex(max_entries=3, clock=lambda: now[0])
    await index.add("b", _unit(1, 0, 0), "east", ttl=10)
    await index.add("b", _unit(0, 1, 0), "north", ttl=20)
    found = await index.nearest("b", _unit(0.9, 0.1, 0))
    assert found is not None
    assert found[0] == "east"
    assert found[1] > 0.99
    assert await index.nearest("other", _unit(1, 0, 0)) is None
    now[0] = 15.0  # "east" has expired
    found = await index.nearest("b", _unit(0.9, 0.1, 0))
    assert found is not None
    assert found[0] == "north"


async def test_the_index_drops_the_oldest_past_its_bound() -> None:
    index = InProcessPromptIndex(max_entries=2)
    for number, key in enumerate(("one", "two", "three")):
        await index.add(f"bucket-{number % 2}", _unit(1, number, 0), key, ttl=60)
    assert len(index) == 2
    found = await index.nearest("bucket-0", _unit(1, 0, 0))
    assert found is not None
    assert found[0] == "three"  # "one" went first, from the same bucket
    await index.add("bucket-0", _unit(0, 0, 1), "three", ttl=60)  # replaces, not duplicates
    assert len(index) == 2
    many = InProcessPromptIndex(max_entries=100)
    for number in range(40):  # grows its matrix past the first allocation
        await index.add("b", _unit(1, number, 0), f"k{number}", ttl=60)
        await many.add("b", _unit(1, number, 0), f"k{number}", ttl=60)
    found = await many.nearest("b", _unit(1, 39, 0))
    assert found is not None
    assert found[0] == "k39"
