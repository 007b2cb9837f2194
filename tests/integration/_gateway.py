"""The whole gateway in process, for tests that drive it over HTTP with a key of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import orjson

from atrium.app import build_app, build_platform
from atrium.core.settings import Settings


@asynccontextmanager
async def gateway_client(
    data_dir: Path, key: str, config: Mapping[str, object]
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the started platform built from ``config``, with ``key`` as its bootstrap
    key and the client's credential; the platform is closed afterwards."""
    settings = Settings.model_validate(
        {"data_dir": data_dir, "auth": {"bootstrap_key": key}, **config}
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://atrium",
            headers={"authorization": f"Bearer {key}"},
        ) as http:
            yield http
    finally:
        await platform.close()


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
