"""The watcher runner on the real detection ledger (SQLite and PostgreSQL).

Baselines, restarts, several workers, a failing callback and a failing source, with the
folder and /v1/models watchers watching real folders and a real local provider.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atrium.bus.events import ReleaseDetected
from atrium.releases.watchers import (
    BASELINE_KEY,
    FolderWatcher,
    FolderWatcherConfig,
    OpenAIModelsWatcher,
    OpenAIModelsWatcherConfig,
    WatcherRunner,
    release_id_for,
)
from atrium.store import Database
from atrium.store.detections import DetectionRepository
from tests.integration.providers.loopback import LoopbackServer

pytestmark = pytest.mark.integration

WAIT_S = 30.0


class Provider:
    """An OpenAI-compatible ``GET /v1/models`` that can be switched to failing."""

    def __init__(self) -> None:
        self.models = ["tiny-1"]
        self.failing = False
        self.app = Starlette(routes=[Route("/v1/models", self._models)])

    async def _models(self, _: Request) -> Response:
        if self.failing:
            error = {"message": "The server is overloaded", "type": "server_error"}
            return JSONResponse({"error": error}, status_code=503)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "me"} for m in self.models]
        return JSONResponse({"object": "list", "data": data})


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    fake = Provider()
    with LoopbackServer(fake.app) as server:
        yield fake, f"{server.url}/v1"


def models_watcher(base_url: str, **fields: Any) -> OpenAIModelsWatcher:
    values = {"name": "provider", "base_url": base_url, "allow_private_network": True}
    return OpenAIModelsWatcher(OpenAIModelsWatcherConfig.model_validate(values | fields))


class Inbox:
    """The runner's callback: collects events; can be told to fail."""

    def __init__(self, *, failing: bool = False) -> None:
        self.events: list[ReleaseDetected] = []
        self.failing = failing
        self.arrived = asyncio.Event()

    async def __call__(self, event: ReleaseDetected) -> None:
        self.events.append(event)
        self.arrived.set()
        if self.failing:
            raise RuntimeError("the pipeline is not taking releases")

    @property
    def keys(self) -> list[str]:
        return [e.key for e in self.events]


async def test_the_first_poll_is_a_baseline_once_across_restarts(
    provider: tuple[Provider, str], database: Database
) -> None:
    fake, url = provider
    fake.models = ["tiny-1", "tiny-2"]
    ledger = DetectionRepository(database)
    inbox = Inbox()
    watcher = models_watcher(url)
    runner = WatcherRunner([watcher], ledger, inbox)
    try:
        assert await runner.run_poll(watcher) == []  # existing ids: known, not new
        fake.models.append("tiny-3")
        (event,) = await runner.run_poll(watcher)
    finally:
        await runner.stop()
    assert await ledger.seen("provider", BASELINE_KEY)
    assert event.key == "tiny-3"
    assert event.release_id == release_id_for("provider", "tiny-3")

    # A restart is not a first poll: what appeared meanwhile is reported.
    fake.models.append("tiny-4")
    again = models_watcher(url)
    restarted = WatcherRunner([again], ledger, inbox)
    try:
        assert [e.key for e in await restarted.run_poll(again)] == ["tiny-4"]
    finally:
        await restarted.stop()
    assert inbox.keys == ["tiny-3", "tiny-4"]


async def test_without_a_baseline_every_existing_id_is_new(
    provider: tuple[Provider, str], database: Database
) -> None:
    fake, url = provider
    fake.models = ["tiny-1", "tiny-2"]
    inbox = Inbox()
    watcher = models_watcher(url, baseline=False)
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox)
    try:
        await runner.run_poll(watcher)
        await runner.run_poll(watcher)
    finally:
        await runner.stop()
    assert inbox.keys == ["tiny-1", "tiny-2"]
    assert {e.source for e in inbox.events} == {"openai"}


async def test_the_ledger_records_what_was_reported(
    provider: tuple[Provider, str], database: Database
) -> None:
    _, url = provider
    ledger = DetectionRepository(database)
    watcher = models_watcher(url, baseline=False, model="tiny")
    runner = WatcherRunner([watcher], ledger, Inbox())
    try:
        (event,) = await runner.run_poll(watcher)
    finally:
        await runner.stop()
    (record,) = await ledger.recent()
    assert (record.watcher, record.key) == ("provider", "tiny-1")
    assert record.payload["release_id"] == event.release_id
    assert (record.payload["model"], record.payload["uri"]) == ("tiny", "tiny-1")


async def test_several_workers_report_each_release_once(tmp_path: Path, database: Database) -> None:
    for index in range(4):
        path = tmp_path / f"model-{index}.gguf"
        path.write_bytes(b"GGUF" + bytes([index]) * 32)
        os.utime(path, (1_000.0, 1_000.0))
    inbox = Inbox()
    config = FolderWatcherConfig(name="drop", url=str(tmp_path), min_age_seconds=0)
    workers = [
        WatcherRunner([FolderWatcher(config)], DetectionRepository(database), inbox)
        for _ in range(3)
    ]
    await asyncio.gather(*(w.run_poll(w.watchers["drop"]) for w in workers))
    assert sorted(inbox.keys) == sorted(set(inbox.keys))
    assert sorted(Path(e.uri).name for e in inbox.events) == [f"model-{i}.gguf" for i in range(4)]


async def test_a_folder_release_is_reported_when_complete_and_again_when_replaced(
    tmp_path: Path, database: Database
) -> None:
    inbox = Inbox()
    watcher = FolderWatcher(FolderWatcherConfig(name="drop", url=str(tmp_path)))
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox)
    target = tmp_path / "smollm2.gguf"
    target.write_bytes(b"GGUF-partial")
    assert await runner.run_poll(watcher) == []  # just appeared: maybe still being written
    (first,) = await runner.run_poll(watcher)
    assert await runner.run_poll(watcher) == []
    target.write_bytes(b"GGUF-complete-and-different")
    assert await runner.run_poll(watcher) == []
    (second,) = await runner.run_poll(watcher)
    assert first.uri == second.uri == str(target)
    assert (first.metadata["size"], second.metadata["size"]) == (12, 27)
    assert inbox.keys == [first.key, second.key]


async def test_a_failing_callback_is_logged_and_the_release_not_repeated(
    provider: tuple[Provider, str], database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = provider
    inbox = Inbox(failing=True)
    watcher = models_watcher(url, baseline=False)
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox)
    try:
        with caplog.at_level(logging.ERROR, logger="atrium.releases.watchers"):
            await runner.run_poll(watcher)
        await runner.run_poll(watcher)
    finally:
        await runner.stop()
    assert inbox.keys == ["tiny-1"]
    assert "handing on release tiny-1 of watcher provider failed" in caplog.text
    assert runner.stats()["provider"].errors == 1


async def test_a_failing_source_is_retried_with_backoff_and_the_loop_survives(
    provider: tuple[Provider, str], database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = provider
    fake.failing = True
    inbox = Inbox()
    watcher = models_watcher(url, baseline=False, interval_seconds=0.05)
    runner = WatcherRunner(
        [watcher], DetectionRepository(database), inbox, retry_base_seconds=0.01, jitter=0.0
    )
    caplog.set_level(logging.WARNING, logger="atrium.releases.watchers")
    await runner.start()
    try:
        async with asyncio.timeout(WAIT_S):
            while runner.stats()["provider"].errors < 3:  # noqa: ASYNC110 - counters
                await asyncio.sleep(0.01)
            fake.failing = False
            await inbox.arrived.wait()
    finally:
        await runner.stop()
    assert inbox.keys == ["tiny-1"]
    assert "release watcher provider failed (3 in a row)" in caplog.text
    assert "answered 503" in caplog.text
    assert runner.stats()["provider"].consecutive_errors == 0


async def test_poll_soon_wakes_a_sleeping_watcher(
    provider: tuple[Provider, str], database: Database
) -> None:
    fake, url = provider
    inbox = Inbox()
    watcher = models_watcher(url, baseline=False, interval_seconds=3600)
    runner = WatcherRunner([watcher], DetectionRepository(database), inbox, jitter=0.0)
    await runner.start()  # the first poll comes at once (no jitter)
    try:
        async with asyncio.timeout(WAIT_S):
            await inbox.arrived.wait()
            inbox.arrived.clear()
            fake.models.append("tiny-2")
            runner.poll_soon("provider")  # an hour early
            await inbox.arrived.wait()
    finally:
        await runner.stop()
    assert inbox.keys == ["tiny-1", "tiny-2"]


def test_watcher_names_must_be_unique(tmp_path: Path) -> None:
    config = FolderWatcherConfig(name="drop", url=str(tmp_path))

    async def ignore(_: ReleaseDetected) -> None:
        return None

    with pytest.raises(ValueError, match="unique"):
        WatcherRunner(
            [FolderWatcher(config), FolderWatcher(config)],
            DetectionRepository(None),  # type: ignore[arg-type]
            ignore,
        )
