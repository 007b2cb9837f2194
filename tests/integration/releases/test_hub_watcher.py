"""The Hub watcher and webhook receiver against a local Hub (real ``huggingface_hub`` calls).

The ledger runs on the real database (SQLite and PostgreSQL); files are real GGUF files,
downloaded by ``hf_hub_download`` from the fake Hub's CDN origin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from atrium.api.errors import install_error_handlers
from atrium.bus.events import ReleaseDetected
from atrium.registry.gguf import read_gguf
from atrium.releases.hub import HubWebhookReceiver, HuggingFaceWatcher, hub_webhook_router
from atrium.releases.watchers import HuggingFaceWatcherConfig, WatcherRunner
from atrium.store import Database
from atrium.store.detections import DetectionRepository
from tests.integration.providers.loopback import LoopbackServer
from tests.integration.releases.fake_hub import FakeHub, gguf_bytes, hub_webhook_payload

pytestmark = pytest.mark.integration

REPO = "acme/Tiny-GGUF"
QUANT_FILE = "tiny-Q4_K_M.gguf"
SECRET = "whsec-" + "s" * 24
WAIT_S = 30.0


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """A fake Hub with its CDN on a second origin, pages of two repositories."""
    fake = FakeHub(page_size=2)
    with LoopbackServer(fake.app) as api, LoopbackServer(fake.app) as cdn:
        fake.cdn_url = cdn.url
        fake.endpoint = api.url
        yield fake


def watcher_config(hub: FakeHub, tmp_path: Path, **fields: Any) -> HuggingFaceWatcherConfig:
    values: dict[str, Any] = {
        "name": "hub",
        "endpoint": hub.endpoint,
        "author": "acme",
        "pattern": "*-GGUF",
        "quantizations": ["Q4_K_M"],
        "download_dir": tmp_path / "hub-cache",
        "baseline": False,
        "interval_seconds": 3600,
    }
    return HuggingFaceWatcherConfig.model_validate(values | fields)


class Inbox:
    """The callback: collects events, lets a test wait for the next one."""

    def __init__(self) -> None:
        self.events: list[ReleaseDetected] = []
        self._arrived = asyncio.Event()

    async def __call__(self, event: ReleaseDetected) -> None:
        self.events.append(event)
        self._arrived.set()

    async def wait_for(self, count: int) -> list[ReleaseDetected]:
        async with asyncio.timeout(WAIT_S):
            while len(self.events) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events


def publish_catalogue(hub: FakeHub) -> str:
    """The watched repo and its neighbours; returns the watched repo's commit."""
    sha = hub.publish(
        REPO,
        {
            QUANT_FILE: gguf_bytes("tiny", "q4"),
            "tiny-Q8_0.gguf": gguf_bytes("tiny", "q8"),
            "README.md": b"# Tiny\n",
        },
    )
    hub.publish("acme/other-model", {"other-Q4_K_M.gguf": gguf_bytes("other")})
    hub.publish("someone/Tiny-GGUF", {QUANT_FILE: gguf_bytes("theirs")})
    hub.publish("acme/Small-GGUF", {"small-Q4_K_M.bin": b"not a gguf file"})
    return sha


def downloaded(event: ReleaseDetected) -> bytes:
    """The bytes of the file a detection points to."""
    return Path(event.uri).read_bytes()


def architecture(event: ReleaseDetected) -> str | None:
    """What the downloaded file's GGUF header names as its architecture."""
    path = Path(event.uri)
    with path.open("rb") as handle:
        return read_gguf(handle, path.stat().st_size).architecture


def file_at(hub: FakeHub, sha: str, filename: str) -> bytes:
    """The bytes the fake Hub serves for a file at a commit."""
    return hub._repos[REPO].commit(sha).files[filename]  # type: ignore[union-attr]


async def test_a_new_gguf_is_detected_downloaded_and_never_reported_twice(
    hub: FakeHub, database: Database, tmp_path: Path
) -> None:
    sha = publish_catalogue(hub)
    inbox = Inbox()
    watcher = HuggingFaceWatcher(watcher_config(hub, tmp_path))
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox)

    events = await runner.run_poll(watcher)

    assert [e.key for e in events] == [f"{REPO}@{sha}/{QUANT_FILE}"]
    event = events[0]
    assert inbox.events == events
    assert (event.source, event.model) == ("huggingface", "acme--Tiny-GGUF")
    path = Path(event.uri)
    assert downloaded(event) == file_at(hub, sha, QUANT_FILE)
    # The Hub cache layout: models--acme--Tiny-GGUF/snapshots/<sha>/<file>.
    assert path.parent.name == sha
    assert path.parts[-4] == "models--acme--Tiny-GGUF"
    assert architecture(event) == "llama"
    assert event.metadata["revision"] == sha
    assert event.metadata["license"] == "apache-2.0"
    assert event.metadata["quantization"] == "Q4_K_M"
    assert "gguf" in event.metadata["tags"]
    # The listing asked for acme's repos and followed the Link header to the next page.
    listings = [q for m, p, q in hub.requests if p == "/api/models"]
    assert "author=acme" in listings[0]
    assert any("cursor=" in q for q in listings)

    # A restart: a new watcher and runner on the same ledger report nothing again.
    again = HuggingFaceWatcher(watcher_config(hub, tmp_path))
    restarted = WatcherRunner([again], DetectionRepository(database), inbox)
    assert await restarted.run_poll(again) == []
    assert len(inbox.events) == 1


async def test_a_new_revision_published_while_the_watcher_runs_is_reported(
    hub: FakeHub, database: Database, tmp_path: Path
) -> None:
    first = publish_catalogue(hub)
    inbox = Inbox()
    config = watcher_config(hub, tmp_path, baseline=True, interval_seconds=0.2)
    watcher = HuggingFaceWatcher(config)
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox, jitter=0.0)
    assert await runner.run_poll(watcher) == []  # the baseline: what exists is known

    await runner.start()
    try:
        second = hub.publish(REPO, {QUANT_FILE: gguf_bytes("tiny", "q4, retrained")})
        (event,) = await inbox.wait_for(1)
    finally:
        await runner.stop()

    assert second != first
    assert event.key == f"{REPO}@{second}/{QUANT_FILE}"
    assert downloaded(event) == file_at(hub, second, QUANT_FILE)
    assert downloaded(event) != file_at(hub, first, QUANT_FILE)
    assert runner.stats()["hub"].errors == 0


async def test_a_file_that_fails_the_filters_is_never_reported(
    hub: FakeHub, database: Database, tmp_path: Path
) -> None:
    publish_catalogue(hub)
    inbox = Inbox()
    config = watcher_config(hub, tmp_path, quantizations=["Q5_K_S"])
    watcher = HuggingFaceWatcher(config)
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox)
    assert await runner.run_poll(watcher) == []
    assert hub.paths("HEAD") == []  # nothing was even looked at for download
    assert not (tmp_path / "hub-cache").exists()


@pytest.fixture
def webhook_setup(
    hub: FakeHub, database: Database, tmp_path: Path
) -> tuple[HubWebhookReceiver, FastAPI, Inbox]:
    inbox = Inbox()
    watcher = HuggingFaceWatcher(watcher_config(hub, tmp_path))
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox)
    receiver = HubWebhookReceiver(SecretStr(SECRET), runner)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(hub_webhook_router(receiver))
    return receiver, app, inbox


async def post_webhook(app: FastAPI, body: bytes, secret: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-webhook-secret"] = secret
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub-hook") as client:
        return await client.post("/v1/webhooks/huggingface", content=body, headers=headers)


async def test_a_webhook_with_the_right_secret_polls_that_repository_at_once(
    hub: FakeHub, webhook_setup: tuple[HubWebhookReceiver, FastAPI, Inbox]
) -> None:
    receiver, app, inbox = webhook_setup
    old = publish_catalogue(hub)
    new = hub.publish(REPO, {QUANT_FILE: gguf_bytes("tiny", "pushed")})
    body = orjson.dumps(hub_webhook_payload(REPO, new, old))

    response = await post_webhook(app, body, SECRET)
    await receiver.drain()

    assert response.status_code == 202
    assert response.json() == {"accepted": True, "repo": REPO, "watchers": ["hub"], "reason": None}
    (event,) = await inbox.wait_for(1)
    assert (event.source, event.key) == ("webhook", f"{REPO}@{new}/{QUANT_FILE}")
    assert downloaded(event) == file_at(hub, new, QUANT_FILE)
    # One repository was read, at the pushed commit; no listing was needed.
    assert f"/api/models/{REPO}/revision/{new}" in hub.paths()
    assert "/api/models" not in hub.paths()


async def test_a_webhook_for_a_repository_nobody_watches_starts_nothing(
    hub: FakeHub, webhook_setup: tuple[HubWebhookReceiver, FastAPI, Inbox]
) -> None:
    receiver, app, inbox = webhook_setup
    sha = hub.publish("someone/Tiny-GGUF", {QUANT_FILE: gguf_bytes("theirs")})
    response = await post_webhook(
        app, orjson.dumps(hub_webhook_payload("someone/Tiny-GGUF", sha)), SECRET
    )
    await receiver.drain()
    assert response.status_code == 200
    assert response.json()["accepted"] is False
    assert inbox.events == []
    assert hub.requests == []


@pytest.mark.parametrize("secret", [None, "whsec-wrong", SECRET + "x"])
async def test_a_webhook_without_the_right_secret_is_refused(
    hub: FakeHub, webhook_setup: tuple[HubWebhookReceiver, FastAPI, Inbox], secret: str | None
) -> None:
    receiver, app, inbox = webhook_setup
    sha = publish_catalogue(hub)
    response = await post_webhook(app, orjson.dumps(hub_webhook_payload(REPO, sha)), secret)
    await receiver.drain()
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("authentication_error", "invalid_secret")
    assert SECRET not in response.text
    assert inbox.events == []
    assert hub.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        orjson.dumps({"event": {"action": "update", "scope": "repo.content"}}),
        orjson.dumps({"event": {"action": "update"}, "repo": {"type": "model", "name": REPO}}),
    ],
    ids=["not-json", "not-an-object", "no-repo", "no-scope"],
)
async def test_a_malformed_webhook_is_a_400(
    hub: FakeHub, webhook_setup: tuple[HubWebhookReceiver, FastAPI, Inbox], body: bytes
) -> None:
    receiver, app, inbox = webhook_setup
    response = await post_webhook(app, body, SECRET)
    await receiver.drain()
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert inbox.events == []


@pytest.mark.slow
async def test_the_hub_down_is_logged_retried_and_survived(
    hub: FakeHub, database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sha = publish_catalogue(hub)
    hub.down = True
    inbox = Inbox()
    watcher = HuggingFaceWatcher(watcher_config(hub, tmp_path, interval_seconds=0.2))
    runner = WatcherRunner(
        [watcher], DetectionRepository(database), inbox, retry_base_seconds=0.05, jitter=0.0
    )
    caplog.set_level(logging.WARNING, logger="atrium.releases.watchers")
    await runner.start()
    try:
        async with asyncio.timeout(WAIT_S):
            while runner.stats()["hub"].errors == 0:  # noqa: ASYNC110 - counters, not events
                await asyncio.sleep(0.05)
        hub.down = False
        (event,) = await inbox.wait_for(1)
    finally:
        await runner.stop()

    assert event.key == f"{REPO}@{sha}/{QUANT_FILE}"
    assert "release watcher hub failed (1 in a row)" in caplog.text
    assert "503" in caplog.text
    stats = runner.stats()["hub"]
    assert stats.errors >= 1
    assert stats.consecutive_errors == 0
    assert stats.polls >= 2
