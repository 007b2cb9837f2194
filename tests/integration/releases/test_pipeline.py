"""The release pipeline end to end in one platform: real replicas of the bundled model,
the real gateway routing a steady load, the durable DBOS workflow steering the canary."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
import uvicorn
from click.testing import Result
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from atrium.app import Platform, build_app, build_platform
from atrium.bus.events import AlertFired
from atrium.cli import app as cli_app
from atrium.core.errors import NotFoundError
from atrium.core.settings import Settings
from atrium.runtime.backends.llamacpp import bundled_gguf

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "atr-" + "r" * 40
HEADERS = {"authorization": f"Bearer {KEY}"}


def policy(**canary: Any) -> dict[str, Any]:
    return {
        "public_name": "smol",
        "gates": None,
        "deployment": {"replicas": {"min": 1, "max": 1}, "context_length": 512},
        "canary": {
            "step_weights": [50, 100],
            "interval_seconds": 4,
            "checks_per_interval": 2,
            "max_holds": 2,
            # Latency judgement has unit tests; here a loaded 2-core machine must not
            # roll back a good version because its first requests ran beside a warm-up.
            "analysis": {"min_requests": 3, "max_latency_ratio": 10.0, "max_ttft_ratio": 10.0},
            **canary,
        },
    }


#: A small suite: every gate runs, on few cases (the bundled model is slow on 2 cores).
QUICK_GATES: dict[str, Any] = {
    "tasks": {"max_cases": 2},
    "safety": {"max_cases": 1},
    "performance": {"requests": 2, "concurrency": 1, "warmup": 0},
}
#: A task dataset no model passes (the answer it wants is nonsense): its floor fails it.
IMPOSSIBLE = """
name: impossible
gate: tasks
max_tokens: 8
defaults: {scoring: contains}
cases:
  - {id: nonsense, prompt: "Say hello.", expected: "zq-7781-xv"}
"""


@dataclass
class Harness:
    platform: Platform
    http: httpx.AsyncClient
    client: openai.AsyncOpenAI
    incoming: Path
    app: FastAPI
    alerts: list[AlertFired] = field(default_factory=list)

    async def release(self, uri: Path | str, release_id: str, model: str = "smol") -> str:
        body = {"model": model, "uri": str(uri), "release_id": release_id}
        response = await self.http.post("/v1/releases", json=body, headers=HEADERS)
        assert response.status_code == 201, response.text
        release_id_: str = response.json()["id"]
        return release_id_

    async def show(self, release_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/v1/releases/{release_id}", headers=HEADERS)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def until_ended(self, release_id: str, seconds: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = await self.show(release_id)
            if data["finished_at"] is not None:
                return data
            await asyncio.sleep(0.25)
        raise AssertionError(f"release {release_id} did not end: {await self.show(release_id)}")

    async def until_stage(self, release_id: str, stage: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if (await self.show(release_id))["stage"] == stage:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"release never reached {stage}: {await self.show(release_id)}")


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(tmp_path) as started:
        yield started


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[Harness]:
    """A platform on ``tmp_path`` (a second one on the same folder is a restart)."""
    incoming = tmp_path / "incoming"
    incoming.mkdir(exist_ok=True)
    impossible = tmp_path / "impossible.yaml"
    impossible.write_text(IMPOSSIBLE)
    strict = {"order": ["tasks"], "tasks": {"datasets": [str(impossible)], "min_score": 1.0}}
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path / "data",
            "auth": {"bootstrap_key": KEY},
            "models": {},
            "registry": {
                "source_roots": [str(incoming), str(bundled_gguf().parent)],
                # Room for a (sparse) file larger than any pool, refused by the pools.
                "max_artifact_bytes": 8 * 1024**4,
            },
            "releases": {
                "policies": {
                    "smol": policy(),
                    "gated": {**policy(), "public_name": "gated", "gates": "quick"},
                    "ungated": {**policy(), "public_name": "ungated", "gates": "nowhere"},
                    "strict": {**policy(), "public_name": "strict", "gates": "strict"},
                    "approved": {**policy(), "public_name": "approved", "require_approval": True},
                    "tolerant": {**policy(threshold=2), "public_name": "tolerant"},
                },
                "gate_suites": {"quick": QUICK_GATES, "strict": strict},
            },
        }
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    alerts: list[AlertFired] = []

    async def keep(event: AlertFired) -> None:
        alerts.append(event)

    subscription = await platform.bus.subscribe(AlertFired, "test-alerts", "c", keep)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://atrium")
    client = openai.AsyncOpenAI(
        base_url="http://atrium/v1", api_key=KEY, http_client=http, max_retries=0
    )
    try:
        yield Harness(platform, http, client, incoming, app, alerts)
    finally:
        await subscription.stop()
        await http.aclose()
        await platform.close()


@dataclass
class Load:
    """A steady stream of chat requests to the public name, counting every failure."""

    client: openai.AsyncOpenAI
    model: str = "smol"
    sent: int = 0
    failed: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, users: int = 2) -> None:
        await asyncio.gather(*(self._user(i, stop) for i in range(users)))

    async def _user(self, user: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sent += 1
            try:
                reply = await self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": f"Say hello to user {user}."}],
                    max_tokens=4,
                    temperature=0,
                    user=f"u{self.sent}",
                )
                assert reply.choices[0].message.content is not None
            except openai.APIError as exc:
                self.failed.append(repr(exc))


@contextlib.asynccontextmanager
async def steady_load(client: openai.AsyncOpenAI, model: str = "smol") -> AsyncIterator[Load]:
    load, stop = Load(client, model), asyncio.Event()
    task = asyncio.create_task(load.run(stop))
    try:
        yield load
    finally:
        stop.set()
        await task


async def production(harness: Harness) -> dict[str, Any]:
    """Release version 1 (no stable yet: it goes straight to production)."""
    first = await harness.release(bundled_gguf(), "smol-v1")
    return await harness.until_ended(first)


def stages(release: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for entry in release["timeline"]:
        if not seen or seen[-1] != entry["stage"]:
            seen.append(entry["stage"])
    return seen


async def test_a_first_release_goes_straight_to_production(harness: Harness) -> None:
    done = await production(harness)
    assert done["status"] == "succeeded", (done["reason"], done["timeline"])
    assert done["version"] == 1
    assert stages(done) == [
        "detected", "registering", "deploying", "smoke_testing", "gating", "promoted",
    ]  # fmt: skip
    reply = await harness.client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
    registry = harness.platform.registry
    assert (await registry.resolve("smol", "production")).version == 1
    lineage = [link.kind for link in await registry.lineage("smol", 1)]
    assert lineage == ["release", "deployment", "rollout"]
    # Prometheus has the release's time from detection to production.
    metrics = await harness.http.get("/metrics", headers=HEADERS)
    assert metrics.status_code == 200
    samples = {
        (sample.name, sample.labels.get("model")): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    name = "atrium_release_detection_to_production_seconds"
    assert samples[f"{name}_count", "smol"] == 1
    assert 0 < samples[f"{name}_sum", "smol"] <= done["seconds_to_production"] + 1


async def test_a_good_version_is_canaried_under_load_and_promoted(harness: Harness) -> None:
    assert (await production(harness))["status"] == "succeeded"
    async with steady_load(harness.client) as load:
        second = await harness.release(bundled_gguf(), "smol-v2")
        done = await harness.until_ended(second)
    assert done["status"] == "succeeded", done
    assert load.failed == []
    assert load.sent > 10
    events = [str(e.get("event", "")) for e in done["timeline"]]
    assert not [e for e in events if "without enough traffic" in e], events
    # Each step judged and passed; a loaded machine may first hold an interval for traffic.
    analyses = [e for e in done["timeline"] if str(e.get("event", "")).startswith("analysis")]
    analyses = [e for e in analyses if not e["event"].endswith(": hold")]
    assert [e["event"] for e in analyses] == ["analysis at 50%: pass", "analysis at 100%: pass"]
    assert analyses[0]["metrics"]["canary"]["requests"] >= 3
    assert (await harness.platform.registry.resolve("smol", "production")).version == 2
    names = [d.name for d in await harness.platform.releases.deployments.list()]
    assert names == ["smol-v2"]  # the old version was drained and stopped


async def test_a_crashing_canary_is_rolled_back_without_client_errors(harness: Harness) -> None:
    assert (await production(harness))["status"] == "succeeded"
    async with steady_load(harness.client) as load:
        second = await harness.release(bundled_gguf(), "smol-v2-bad")
        await harness.until_stage(second, "canary")
        crasher = asyncio.create_task(keep_killing(harness, "smol-v2"))
        try:
            done = await harness.until_ended(second)
        finally:
            crasher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await crasher
    assert done["status"] == "rolled_back", done
    assert "error rate" in done["reason"]
    assert done["weight"] == 0.0
    assert load.failed == []  # the canary's failures fell back to the stable version
    assert failed_analyses(done) == 1  # threshold 1: the first failed analysis rolls back
    assert (await harness.platform.registry.resolve("smol", "production")).version == 1
    names = [d.name for d in await harness.platform.releases.deployments.list()]
    assert names == ["smol-v1"]
    assert any(a.name == "release_rolled_back" for a in harness.alerts)


def failed_analyses(release: dict[str, Any]) -> int:
    return sum(1 for e in release["timeline"] if str(e.get("event", "")).endswith("%: fail"))


async def test_a_canary_with_threshold_2_tolerates_one_failed_analysis(harness: Harness) -> None:
    first = await harness.release(bundled_gguf(), "tolerant-v1", model="tolerant")
    assert (await harness.until_ended(first))["status"] == "succeeded"
    async with steady_load(harness.client, "tolerant") as load:
        second = await harness.release(bundled_gguf(), "tolerant-v2", model="tolerant")
        await harness.until_stage(second, "canary")
        crasher = asyncio.create_task(keep_killing(harness, "tolerant-v2"))
        try:
            done = await harness.until_ended(second)
        finally:
            crasher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await crasher
    assert done["status"] == "rolled_back", done
    assert "error rate" in done["reason"]
    assert failed_analyses(done) == 2  # the first failure was tolerated, the second was not
    assert load.failed == []
    assert (await harness.platform.registry.resolve("tolerant", "production")).version == 1


async def keep_killing(harness: Harness, deployment: str) -> None:
    """Kill the deployment's replica processes whenever they come up (a crashing version)."""
    while True:
        with contextlib.suppress(Exception):
            status = await harness.platform.releases.deployments.status(deployment)
            for replica in status.replicas:
                if replica.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(replica.pid, signal.SIGKILL)
        await asyncio.sleep(0.05)


async def test_an_operator_can_pause_resume_and_abort(harness: Harness) -> None:
    assert (await production(harness))["status"] == "succeeded"
    second = await harness.release(bundled_gguf(), "smol-v2")
    await harness.until_stage(second, "canary")
    for action, expect in (("pause", "paused"), ("resume", "running")):
        response = await harness.http.post(f"/v1/releases/{second}/{action}", headers=HEADERS)
        assert response.status_code == 202, response.text
        await until(functools.partial(status_is, harness, second, expect))
    response = await harness.http.post(f"/v1/releases/{second}/abort", headers=HEADERS)
    assert response.status_code == 202
    done = await harness.until_ended(second)
    assert done["status"] == "aborted"
    assert (await harness.platform.registry.resolve("smol", "production")).version == 1
    again = await harness.http.post(f"/v1/releases/{second}/resume", headers=HEADERS)
    assert again.status_code == 409
    assert "has ended" in again.json()["error"]["message"]


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The harness's app on a loopback port too (the CLI speaks HTTP), in this event loop."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await until(lambda: _started(server, task), seconds=30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()  # the server failed to start: raise why
    return bool(server.started)


async def cli(url: str, *args: str) -> Result:
    """``atrium ARGS`` against the served app, in a thread (the loop keeps serving)."""
    argv = [*args, "--url", url, "--api-key", KEY]
    return await asyncio.to_thread(CliRunner().invoke, cli_app, argv)


async def test_operators_steer_live_releases_by_cli_and_api(harness: Harness) -> None:
    assert (await production(harness))["status"] == "succeeded"
    registry = harness.platform.registry
    async with served(harness.app) as url:
        # CLI: pause and resume a live canary, then promote it straight to production.
        second = await harness.release(bundled_gguf(), "smol-v2")
        await harness.until_stage(second, "canary")
        for action, expect in (("pause", "paused"), ("resume", "running")):
            sent = await cli(url, "releases", action, second)
            assert sent.exit_code == 0, sent.output
            assert f"{action} sent to {second}" in sent.output
            await until(functools.partial(status_is, harness, second, expect))
        promoted = await cli(url, "releases", "promote", second)
        assert promoted.exit_code == 0, promoted.output
        done = await harness.until_ended(second)
        assert (done["status"], done["stage"], done["weight"]) == ("succeeded", "promoted", 100.0)
        events = [e.get("event") for e in done["timeline"]]
        assert "canary at 50%" in events
        assert "canary at 100%" not in events  # it jumped from the first step
        assert (await registry.resolve("smol", "production")).version == 2

        # API: promote the next one from its first step too.
        third = await harness.release(bundled_gguf(), "smol-v3")
        await harness.until_stage(third, "canary")
        response = await harness.http.post(f"/v1/releases/{third}/promote", headers=HEADERS)
        assert response.status_code == 202, response.text
        done = await harness.until_ended(third)
        assert (done["status"], done["stage"]) == ("succeeded", "promoted")
        assert "canary at 100%" not in [e.get("event") for e in done["timeline"]]
        assert (await registry.resolve("smol", "production")).version == 3

        # CLI: abort a live canary; production stays where it was.
        fourth = await harness.release(bundled_gguf(), "smol-v4")
        await harness.until_stage(fourth, "canary")
        aborted = await cli(url, "releases", "abort", fourth)
        assert aborted.exit_code == 0, aborted.output
        done = await harness.until_ended(fourth)
        assert (done["status"], done["weight"]) == ("aborted", 0.0)
    assert (await registry.resolve("smol", "production")).version == 3
    names = [d.name for d in await harness.platform.releases.deployments.list()]
    assert names == ["smol-v3"]


async def status_is(harness: Harness, release_id: str, status: str) -> bool:
    return (await harness.show(release_id))["status"] == status


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_a_corrupt_file_fails_at_registration_leaving_nothing(harness: Harness) -> None:
    corrupt = harness.incoming / "broken.gguf"
    corrupt.write_bytes(b"GGUF" + b"\xff" * 64)
    release = await harness.release(corrupt, "broken")
    done = await harness.until_ended(release)
    assert done["status"] == "failed"
    assert done["reason"].startswith("registering: ")
    assert done["version"] is None
    assert await harness.platform.registry.versions("smol") == []  # nothing half-registered
    assert await harness.platform.releases.deployments.list() == []


async def test_files_no_pool_can_hold_or_of_unknown_format_fail_at_registration(
    harness: Harness,
) -> None:
    # A real GGUF header over 4 TiB (sparse): more memory than this machine's pool has.
    huge = harness.incoming / "huge.gguf"
    with bundled_gguf().open("rb") as source, huge.open("wb") as out:
        out.write(source.read(16 * 1024 * 1024))
        out.truncate(4 * 1024**4)
    unknown = harness.incoming / "weights.gguf"
    unknown.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 16)
    done = await harness.until_ended(await harness.release(huge, "huge"))
    assert done["status"] == "failed"
    assert done["reason"].startswith("registering: no pool can hold 'smol-v1' (needs about ")
    assert "'local-cpu' (cpu, " in done["reason"]
    assert "GiB a replica, the pool has" in done["reason"]
    done = await harness.until_ended(await harness.release(unknown, "unknown"))
    assert done["status"] == "failed"
    assert done["reason"] == (
        "registering: unknown model format: the file is neither GGUF nor safetensors"
    )
    # Nothing half-registered: no version, no file in the store, nothing deployed.
    assert done["version"] is None
    assert await harness.platform.registry.versions("smol") == []
    store = harness.platform.registry.store
    assert (store.staged_paths(), store.stored_paths()) == ([], [])
    assert await harness.platform.releases.deployments.list() == []


async def test_bad_requests_get_clear_errors(harness: Harness) -> None:
    response = await harness.http.post(
        "/v1/releases", json={"model": "unknown", "uri": "/x.gguf"}, headers=HEADERS
    )
    assert response.status_code == 400
    assert "no release policy" in response.json()["error"]["message"]
    response = await harness.http.post("/v1/releases/rel_nope/pause", headers=HEADERS)
    assert response.status_code == 404
    response = await harness.http.post("/v1/releases", json={"model": "smol"}, headers=HEADERS)
    assert response.status_code == 400
    response = await harness.http.get("/v1/releases")
    assert response.status_code == 401


async def test_gates_run_on_the_standby_and_are_kept_on_the_version(harness: Harness) -> None:
    release = await harness.release(bundled_gguf(), "gated-v1", model="gated")
    done = await harness.until_ended(release)
    assert done["status"] == "succeeded", (done["reason"], done["timeline"])
    gate_events = [
        e["event"] for e in done["timeline"] if str(e.get("event", "")).startswith("gates:")
    ]
    assert len(gate_events) == 1
    links = await harness.platform.registry.lineage("gated", 1)
    gates = [link for link in links if link.kind == "gate"]
    assert len(gates) == 1
    report = gates[0].detail["report"]
    assert report["passed"] is True
    assert [g["name"] for g in report["gates"]] == ["functional", "tasks", "safety", "performance"]


async def test_an_unknown_gate_suite_fails_the_release_at_gating(harness: Harness) -> None:
    release = await harness.release(bundled_gguf(), "ungated-v1", model="ungated")
    done = await harness.until_ended(release)
    assert done["status"] == "failed"
    assert done["reason"].startswith("gating: gate suite 'nowhere' is not configured")
    assert await harness.platform.releases.deployments.list() == []  # the standby is gone


async def test_a_failing_gate_stops_the_release_at_gating_naming_it(harness: Harness) -> None:
    release = await harness.release(bundled_gguf(), "strict-v1", model="strict")
    done = await harness.until_ended(release)
    assert done["status"] == "failed"
    assert done["reason"] == (
        "gating: tasks failed: impossible scored 0.00, below the floor 1.00 (short by 1.00); "
        "failing cases: impossible/nonsense"
    )
    assert await harness.platform.releases.deployments.list() == []  # the standby is gone
    links = await harness.platform.registry.lineage("strict", 1)
    (gate,) = [link for link in links if link.kind == "gate"]
    assert gate.detail["passed"] is False
    assert [g["name"] for g in gate.detail["report"]["gates"]] == ["tasks"]
    with pytest.raises(NotFoundError):
        await harness.platform.registry.resolve("strict", "production")


async def test_a_restarted_control_plane_resumes_the_rollout(tmp_path: Path) -> None:
    async with running(tmp_path) as first:
        assert (await production(first))["status"] == "succeeded"
        second = await first.release(bundled_gguf(), "smol-v2")
        await first.until_stage(second, "canary")
    # Stopped mid-canary: every replica is gone, the release's DBOS workflow is pending.
    async with running(tmp_path) as again:
        restored = sorted(d.name for d in await again.platform.releases.deployments.list())
        assert restored == ["smol-v1", "smol-v2"]
        async with steady_load(again.client) as load:
            done = await again.until_ended(second)
    assert done["status"] == "succeeded", (done["reason"], done["timeline"])
    assert load.failed == []
    events = [e.get("event") for e in done["timeline"]]
    assert events.count("canary at 50%") == 1  # resumed where it was, not started over
    assert "analysis at 100%: pass" in events, done["timeline"]


async def test_a_release_can_wait_for_a_person_before_promotion(harness: Harness) -> None:
    first = await harness.release(bundled_gguf(), "approved-v1", model="approved")
    await harness.until_stage(first, "awaiting_approval")
    approve = await harness.http.post(f"/v1/releases/{first}/approve", headers=HEADERS)
    assert approve.status_code == 202
    assert (await harness.until_ended(first))["status"] == "succeeded"
    second = await harness.release(bundled_gguf(), "approved-v2", model="approved")
    async with steady_load(harness.client, "approved"):
        await harness.until_stage(second, "awaiting_approval")
    reject = await harness.http.post(f"/v1/releases/{second}/reject", headers=HEADERS)
    assert reject.status_code == 202
    done = await harness.until_ended(second)
    assert done["status"] == "rolled_back"
    assert done["reason"] == "promotion rejected by an operator"
    assert (await harness.platform.registry.resolve("approved", "production")).version == 1


async def test_a_step_that_fails_unexpectedly_ends_the_release_with_the_reason(
    harness: Harness,
) -> None:
    assert (await production(harness))["status"] == "succeeded"
    second = await harness.release(bundled_gguf(), "smol-v2")
    await harness.until_stage(second, "smoke_testing")
    # The stable version disappears under the release: it cannot canary against it.
    deleted = await harness.http.delete("/v1/deployments/smol-v1", headers=HEADERS)
    assert deleted.status_code == 200
    done = await harness.until_ended(second)
    assert done["status"] == "failed"
    assert done["reason"] == "pipeline: the stable deployment is gone"
    assert await harness.platform.releases.deployments.list() == []
