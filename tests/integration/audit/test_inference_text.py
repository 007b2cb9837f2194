"""Prompt and completion text in the audit trail (``audit.record_text``), through the whole
gateway to a real OpenAI-compatible upstream on loopback that echoes the prompt back."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from atrium.app import Platform, build_app, build_platform
from atrium.core.settings import Settings

pytestmark = pytest.mark.integration

KEY = "atr-" + "x" * 40
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
PHONE = "+44 20 7946 0958"
PROMPT = f"Write to {EMAIL}, charge {CARD}, call {PHONE}."


def _echo_app() -> Starlette:
    """Answers every chat with the last message's text, whole or as one chunk per word."""

    async def chat(request: Request) -> Response:
        body = await request.json()
        text = body["messages"][-1]["content"]
        head = {"id": "chatcmpl-1", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            usage = {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18}
            return JSONResponse(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        async def chunks() -> AsyncIterator[bytes]:
            words = text.split(" ")
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                chunk = {**head, "object": "chat.completion.chunk", "choices": [choice]}
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            end = {"index": 0, "delta": {}, "finish_reason": "stop"}
            last = {**head, "object": "chat.completion.chunk", "choices": [end]}
            yield b"data: " + orjson.dumps(last) + b"\n\ndata: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": []})

    return Starlette(
        routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)]
    )


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(_echo_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the upstream did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


async def _gateway(
    tmp_path: Path, upstream_url: str, audit: dict[str, Any]
) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": KEY},
            "models": {"echo": {"backend": "openai_compat", "base_url": upstream_url}},
            "workflows": {"enabled": False},
            "audit": {"flush_seconds": 60, **audit},
        }
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    headers = {"authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium", headers=headers
        ) as client:
            yield platform, client
    finally:
        await platform.close()


@pytest_asyncio.fixture
async def text_on(
    tmp_path: Path, upstream_url: str
) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    async for running in _gateway(tmp_path, upstream_url, {"record_text": True}):
        yield running


@pytest_asyncio.fixture
async def text_off(
    tmp_path: Path, upstream_url: str
) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    async for running in _gateway(tmp_path, upstream_url, {}):
        yield running


def _chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


async def _inference_entries(
    platform: Platform, client: httpx.AsyncClient, count: int
) -> list[dict[str, Any]]:
    """Wait (bounded by tries, not time) for the bus consumer and the writer."""
    for _ in range(500):
        await platform.audit_recorder.flush()
        response = await client.get("/v1/audit", params={"action": "inference."})
        entries: list[dict[str, Any]] = response.json()["data"]
        if len(entries) >= count:
            return entries
        await asyncio.sleep(0.01)  # the publisher and the bus consumer run as tasks
    pytest.fail(f"fewer than {count} inference entries")


async def test_text_is_not_recorded_by_default(
    text_off: tuple[Platform, httpx.AsyncClient],
) -> None:
    platform, client = text_off
    answer = await client.post("/v1/chat/completions", json=_chat(PROMPT))
    assert answer.status_code == 200

    [entry] = await _inference_entries(platform, client, 1)

    assert entry["detail"]["completion_tokens"] == 9
    assert "prompt" not in entry["detail"]
    assert "completion" not in entry["detail"]
    stored = json.dumps(entry)
    assert EMAIL not in stored
    assert "jane" not in stored


async def test_text_is_recorded_redacted_in_both_modes_and_the_chain_verifies(
    text_on: tuple[Platform, httpx.AsyncClient],
) -> None:
    platform, client = text_on
    plain = await client.post("/v1/chat/completions", json=_chat(PROMPT))
    streamed = await client.post("/v1/chat/completions", json=_chat(PROMPT, stream=True))
    assert plain.status_code == streamed.status_code == 200
    assert plain.json()["choices"][0]["message"]["content"] == PROMPT  # the caller's answer
    assert EMAIL in streamed.text  # is untouched: only the audit copy is redacted

    entries = await _inference_entries(platform, client, 2)

    assert len(entries) == 2  # one entry a request: the bus consumer skipped these two
    redacted = "Write to [REDACTED:email], charge [REDACTED:credit_card], call [REDACTED:phone]."
    for entry, stream in zip(entries, (False, True), strict=True):
        detail = entry["detail"]
        assert detail["stream"] is stream
        assert detail["prompt"] == f"user: {redacted}"
        assert detail["completion"] == redacted  # the stream assembled from its chunks
        assert "text_truncated" not in detail
        assert entry["actor"] is not None
        assert entry["target"] == "echo"
    stored = json.dumps(entries)
    for secret in (EMAIL, CARD, PHONE, "4111"):
        assert secret not in stored
    report = await platform.audit.verify()
    assert report.checked >= 2
    assert report.ok, report


async def test_long_text_is_cut_to_the_limit(tmp_path: Path, upstream_url: str) -> None:
    async for platform, client in _gateway(
        tmp_path, upstream_url, {"record_text": True, "max_text_chars": 40}
    ):
        long = "word " * 50 + EMAIL
        await client.post("/v1/chat/completions", json=_chat(long, stream=True))
        [entry] = await _inference_entries(platform, client, 1)
        detail = entry["detail"]
        assert len(detail["prompt"]) == len(detail["completion"]) == 40
        assert detail["completion"] == "word " * 8
        assert detail["text_truncated"] is True
