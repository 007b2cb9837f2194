"""The openai_compat backend in front of a real OpenAI-compatible server on loopback.

The upstream is llama-cpp-python's own server (``python -m llama_cpp.server``)
running the bundled GGUF; Atrium runs in process and is driven by the official
``openai`` client.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio

from atrium.app import build_app, build_platform
from atrium.core.settings import OpenAICompatModel, Settings
from atrium.runtime.backends.llamacpp import bundled_gguf

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "atr-" + "u" * 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()),
        "--model_alias", "smol-upstream", "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "512",
    ]  # fmt: skip
    log_path = tmp_path_factory.mktemp("llama-server") / "log"
    log = log_path.open("wb")  # a file, not a pipe: llama.cpp's load log would fill a pipe
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(log_path.read_text(errors="replace")[-2000:])
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("llama_cpp.server did not start")
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest_asyncio.fixture
async def client(upstream_url: str, tmp_path: Path) -> AsyncIterator[openai.AsyncOpenAI]:
    settings = Settings(
        data_dir=tmp_path,
        auth={"bootstrap_key": KEY},  # type: ignore[arg-type]
        models={
            "remote-smol": OpenAICompatModel(
                base_url=upstream_url, upstream_model="smol-upstream", aliases=["remote"]
            ),
            "impatient": OpenAICompatModel(
                base_url=upstream_url, upstream_model="smol-upstream", timeout_seconds=0.05
            ),
            "dead": OpenAICompatModel(
                base_url=f"http://127.0.0.1:{_free_port()}/v1", connect_timeout_seconds=1
            ),
        },
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app))
    try:
        async with openai.AsyncOpenAI(
            base_url="http://atrium/v1", api_key=KEY, http_client=http, max_retries=0
        ) as api:
            yield api
    finally:
        await platform.close()


MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Name three colours."}]


async def test_chat_through_the_gateway(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="remote",
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0


async def test_streaming_passes_chunks_through_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="remote-smol",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    # llama_cpp.server ignores include_usage; the gateway still ends with a usage chunk.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert sum(1 for c in chunks if c.usage is not None) == 1


async def test_streaming_without_include_usage_has_no_usage_chunk(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="remote",
        messages=MESSAGES,
        max_tokens=4,
        stream=True,  # type: ignore[arg-type]
    )
    chunks = [chunk async for chunk in stream]
    assert chunks
    assert all(c.usage is None and c.choices for c in chunks)


async def test_an_unreachable_upstream_is_a_502_not_a_hang(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(model="dead", messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
    assert raised.value.status_code == 502
    assert raised.value.body == {
        "message": "cannot connect to the upstream for 'dead'",
        "type": "server_error",
        "param": None,
        "code": "upstream_error",
    }


async def test_a_slow_upstream_is_a_504(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        await client.chat.completions.create(model="impatient", messages=MESSAGES, max_tokens=64)  # type: ignore[arg-type]
    assert raised.value.status_code == 504
    assert raised.value.body == {
        "message": "upstream for 'impatient' timed out",
        "type": "server_error",
        "param": None,
        "code": "upstream_timeout",
    }
