"""The semantic cache and per-key cache choices through the whole gateway.

The real bundled models: SmolLM2 answers, MiniLM embeds the prompts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from tests.integration._gateway import gateway_client, sse_text

pytestmark = pytest.mark.slow

ADMIN = "atr-" + "s" * 40
QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital city of France?"


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = {
        "models": {
            "smol": {"backend": "llamacpp", "n_ctx": 512},
            "mini": {"backend": "onnx_embedding", "aliases": ["default-embedding"]},
        },
        "cache": {"backend": "inprocess", "semantic": {"enabled": True}},
    }
    async with gateway_client(tmp_path, ADMIN, config) as http:
        yield http


def _chat(content: str, **extra: object) -> dict[str, object]:
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "temperature": 0,
    }
    return {**body, **extra}


async def _ask(
    client: httpx.AsyncClient, body: dict[str, object], key: str = ADMIN
) -> httpx.Response:
    response = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    await asyncio.sleep(0.05)  # answers and their vectors are stored in a background task
    return response


async def _key(client: httpx.AsyncClient, **fields: object) -> tuple[str, str]:
    created = await client.post("/v1/admin/keys", json={"name": "k", **fields})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


async def test_a_paraphrase_is_answered_from_the_cache_and_other_prompts_are_not(
    client: httpx.AsyncClient,
) -> None:
    first = await _ask(client, _chat(QUESTION))
    assert first.headers["x-atrium-cache"] == "miss"
    paraphrased = await _ask(client, _chat(PARAPHRASE))
    assert paraphrased.headers["x-atrium-cache"] == "semantic-hit"
    assert paraphrased.json()["choices"] == first.json()["choices"]
    assert paraphrased.json()["usage"] == first.json()["usage"]

    unrelated = await _ask(client, _chat("How do I bake bread?"))
    assert unrelated.headers["x-atrium-cache"] == "miss"
    other_params = await _ask(client, _chat(PARAPHRASE, max_tokens=9))
    assert other_params.headers["x-atrium-cache"] == "miss"
    sampled = await _ask(client, _chat(PARAPHRASE, temperature=0.7))
    assert "x-atrium-cache" not in sampled.headers

    streamed = await client.post(
        "/v1/chat/completions", json=_chat("Which city is France's capital?", stream=True)
    )
    assert streamed.headers["x-atrium-cache"] == "semantic-hit"
    assert sse_text(streamed.text)[0] == first.json()["choices"][0]["message"]["content"]

    metrics = (await client.get("/metrics")).text
    assert 'atrium_cache_requests_total{result="semantic_hit"} 2.0' in metrics


async def test_similar_answers_stay_within_a_team(client: httpx.AsyncClient) -> None:
    for name in ("red", "blue"):
        made = await client.post("/v1/admin/teams", json={"name": name})
        assert made.status_code == 201
    _, red_one = await _key(client, team="red")
    _, red_two = await _key(client, team="red")
    _, blue = await _key(client, team="blue")
    _, loner = await _key(client)

    await _ask(client, _chat(QUESTION), key=red_one)
    same_team = await _ask(client, _chat(PARAPHRASE), key=red_two)
    assert same_team.headers["x-atrium-cache"] == "semantic-hit"
    other_team = await _ask(client, _chat(PARAPHRASE), key=blue)
    assert other_team.headers["x-atrium-cache"] == "miss"
    no_team = await _ask(client, _chat("Tell me the capital of France."), key=loner)
    assert no_team.headers["x-atrium-cache"] == "miss"


async def test_a_keys_cache_choice_beats_the_default_and_is_changed_by_patch(
    client: httpx.AsyncClient,
) -> None:
    key_id, never = await _key(client, cache=False)
    body = _chat("Name a fruit.")
    for _ in range(2):
        refused = await client.post(
            "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {never}", "x-atrium-cache": "on"},
        )
        assert "x-atrium-cache" not in refused.headers
    assert (await client.get(f"/v1/admin/keys/{key_id}")).json()["cache"] is False

    changed = await client.patch(f"/v1/admin/keys/{key_id}", json={"cache": None})
    assert changed.status_code == 200
    assert changed.json()["cache"] is None
    allowed = await _ask(client, body, key=never)
    assert allowed.headers["x-atrium-cache"] in {"miss", "hit"}

    bad = await client.patch(f"/v1/admin/keys/{key_id}", json={"cache": "yes"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "cache"
    missing = await client.patch("/v1/admin/keys/nope", json={"cache": True})
    assert missing.status_code == 404


async def test_a_key_that_opts_in_is_cached_when_the_default_is_off(tmp_path: Path) -> None:
    config = {
        "models": {"smol": {"backend": "llamacpp", "n_ctx": 512}},
        "cache": {"backend": "inprocess", "by_default": False},
    }
    async with gateway_client(tmp_path, ADMIN, config) as http:
        _, opted_in = await _key(http, cache=True)
        body = _chat("Name a colour.")
        plain = await _ask(http, body)
        assert "x-atrium-cache" not in plain.headers  # the default: off
        first = await _ask(http, body, key=opted_in)
        assert first.headers["x-atrium-cache"] == "miss"
        second = await _ask(http, body, key=opted_in)
        assert second.headers["x-atrium-cache"] == "hit"
        skipped = await http.post(
            "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {opted_in}", "x-atrium-cache": "off"},
        )
        assert "x-atrium-cache" not in skipped.headers
