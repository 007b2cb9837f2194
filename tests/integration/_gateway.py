"""The whole gateway in process, for tests that drive it over HTTP with a key of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson

from atrium.app import Platform, build_app, build_platform
from atrium.core.settings import Settings


@asynccontextmanager
async def running_gateway(
    data_dir: Path, key: str, config: Mapping[str, object], *, request_timeout_s: float = 5.0
) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    """The started platform built from ``config``, with ``key`` as its bootstrap key (added
    to any ``auth`` settings in ``config``), and a client with ``key`` as its credential and
    ``request_timeout_s`` seconds per request (httpx's default); the platform is closed
    afterwards."""
    auth = config.get("auth", {})
    assert isinstance(auth, Mapping)
    settings = Settings.model_validate(
        {**config, "data_dir": data_dir, "auth": {**auth, "bootstrap_key": key}}
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://atrium",
            headers={"authorization": f"Bearer {key}"},
            timeout=request_timeout_s,
        ) as http:
            yield platform, http
    finally:
        await platform.close()


@asynccontextmanager
async def gateway_client(
    data_dir: Path, key: str, config: Mapping[str, object]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the started platform built from ``config`` (see ``running_gateway``)."""
    async with running_gateway(data_dir, key, config) as (_, http):
        yield http


def sse_text(raw: str) -> tuple[str, list[str]]:
    """The text of a streamed chat completion and the finish reasons its chunks gave."""
    chunks = [
        orjson.loads(line[6:])
        for line in raw.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    text = "".join(choice["delta"].get("content") or "" for choice in choices)
    return text, [choice["finish_reason"] for choice in choices if choice["finish_reason"]]
