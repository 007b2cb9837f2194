"""Overload: a model with one worker and a queue of one refuses the rest with 503, at once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

if TYPE_CHECKING:
    from conftest import RemoteAtriumServer

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2-135m"
BURST = 6
CAPACITY = 2  # one worker generating plus one request queued
MAX_TOKENS = 16
# Admission is timing: a refusal needs a third request to arrive while two are in
# flight. Six requests sent at once arrive within milliseconds while each answer
# takes far longer, so one burst is enough; a few are allowed for a starved machine.
MAX_BURSTS = 3
PARAGRAPH = (
    "The harbour town wakes before dawn. Fishing boats slip out past the breakwater, "
    "their lamps swinging in the swell, while the bakers on the quay pull the first "
    "loaves from brick ovens. By seven the market stalls are up: crates of mackerel and "
    "crab, baskets of samphire, and a man who sells nothing but rope. Children run "
    "between the stalls on their way to school, and the gulls watch everything from "
    "the chimney pots, waiting for someone to drop a pasty. "
)


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    """Only the chat model, with capacity for two requests (the embedder is not needed)."""
    return {
        "models": {
            CHAT_MODEL: {
                "backend": "llamacpp",
                "workers": 1,
                "queue_limit": 1,
                "aliases": ["default"],
            }
        }
    }


@dataclass
class Outcome:
    """How one streamed request ended, and when (for ordering only)."""

    finished_at: float
    text: str = ""
    finish_reason: str | None = None
    usage: Any = None
    refusal: openai.APIStatusError | None = None


async def stream_one(client: openai.AsyncOpenAI, index: int) -> Outcome:
    """One streamed chat, read to the end; a refusal is an outcome, not an error."""
    # A distinct start per request, so no request reuses another's cached prompt.
    content = f"Request {index}. {PARAGRAPH}Describe the town in one sentence."
    try:
        stream = await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": content}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    except openai.APIStatusError as exc:
        return Outcome(finished_at=time.monotonic(), refusal=exc)
    outcome = Outcome(finished_at=0.0)
    async with stream:
        async for chunk in stream:
            if chunk.usage is not None:
                outcome.usage = chunk.usage
            for choice in chunk.choices:
                outcome.text += choice.delta.content or ""
                outcome.finish_reason = choice.finish_reason or outcome.finish_reason
    outcome.finished_at = time.monotonic()
    return outcome


async def idle(server: RemoteAtriumServer) -> None:
    """Wait (polling, with a deadline) until the model reports nothing in flight."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=server.url_root, timeout=30) as http:
        while True:
            detail = (await http.get("/readyz")).json()["models"][CHAT_MODEL]["detail"]
            if detail == "0 in flight":
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the model never went idle: {detail}")
            await asyncio.sleep(0.05)


def assert_refused_as_overloaded(refusal: openai.APIStatusError) -> None:
    """503 in OpenAI's error shape, code ``model_overloaded``, with a Retry-After."""
    assert refusal.status_code == 503
    assert refusal.code == "model_overloaded"
    assert refusal.type == "server_error"
    assert int(refusal.response.headers["retry-after"]) >= 1
    assert refusal.response.headers["x-request-id"]


def assert_complete(outcome: Outcome) -> None:
    """An admitted stream ran to its end: text, a finish reason and usage."""
    assert outcome.text.strip()
    assert outcome.finish_reason in {"stop", "length"}
    assert outcome.usage is not None
    assert 0 < outcome.usage.completion_tokens <= MAX_TOKENS


async def test_burst_beyond_capacity_is_refused_at_once(server: RemoteAtriumServer) -> None:
    refused_total = 0
    async with server.get_async_client() as client:
        for _ in range(MAX_BURSTS):
            await idle(server)
            outcomes = await asyncio.gather(*(stream_one(client, i) for i in range(BURST)))

            admitted = [o for o in outcomes if o.refusal is None]
            refused = [o for o in outcomes if o.refusal is not None]
            # The first two to arrive always fit; every other one either fit after them or
            # was refused with a proper 503.
            assert len(admitted) >= CAPACITY
            for outcome in admitted:
                assert_complete(outcome)
            for outcome in refused:
                assert outcome.refusal is not None
                assert_refused_as_overloaded(outcome.refusal)
                # Refused at once, not after waiting for a free worker.
                assert outcome.finished_at < max(o.finished_at for o in admitted)
            refused_total += len(refused)
            if refused:
                break

    assert refused_total >= 1, f"no request was refused in {MAX_BURSTS} bursts of {BURST}"


async def test_model_serves_again_after_the_burst(server: RemoteAtriumServer) -> None:
    await idle(server)
    async with server.get_async_client() as client:
        together = await asyncio.gather(*(stream_one(client, 100 + i) for i in range(CAPACITY)))
        single = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
        )

    for outcome in together:
        assert outcome.refusal is None, outcome.refusal
        assert_complete(outcome)
    assert single.choices[0].message.content


def test_refusals_are_counted_in_metrics(server: RemoteAtriumServer) -> None:
    with server.http() as http:
        exposition = http.get("/metrics").text

    refused = [
        line
        for line in exposition.splitlines()
        if line.startswith("atrium_requests_total{")
        and f'model="{CHAT_MODEL}"' in line
        and 'status="503"' in line
    ]
    assert refused
    assert float(refused[0].rsplit(" ", 1)[1]) >= 1
    in_flight = [
        line for line in exposition.splitlines() if line.startswith("atrium_requests_in_flight{")
    ]
    assert in_flight
    assert all(float(line.rsplit(" ", 1)[1]) == 0 for line in in_flight)
