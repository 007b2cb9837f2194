"""The 24-hour release pipeline, timed end to end on this machine (target: under 10 minutes).

One ``atrium serve`` (fresh data folder) watches a folder for GGUF files. The script:

1. drops the bundled SmolLM2 GGUF into the folder: the first version is detected,
   registered, deployed (two local replicas), gated and promoted (nothing to canary against);
2. starts a steady synthetic load through the gateway (the official ``openai`` client,
   ``--users`` concurrent users asking the public name), drops a new version (the same
   weights, ``general.version`` set: a new file) and times detection -> registered ->
   deployed -> gated -> each canary step -> 100% production, counting every failed
   client request;
3. drops a bad version (its header declares a 256-token context window: it answers the
   gates' short prompts and fails the load's longer ones) and times how long after its
   first canary step it is rolled back, again counting client-visible failures.

    .venv/bin/python bench/release_pipeline.py        # about 6 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import openai
from _common import (
    RESULTS_DIR,
    WORK_DIR,
    AtriumServer,
    AtriumSource,
    JSONDict,
    atrium_server,
    machine_facts,
    markdown_table,
    run_main,
)
from gguf_variants import new_version, short_context_version

from atrium.runtime.backends.llamacpp import bundled_gguf

PUBLIC = "smol"
MODEL = "smollm2"
TARGET_SECONDS = 600.0
#: A document the load asks about: about 300 tokens, past the bad version's window.
DOCUMENT = " ".join(
    f"Section {i}: the desk's limits for product {i} are reviewed each morning by risk."
    for i in range(1, 21)
)


@dataclass
class ReleaseServer(AtriumServer):
    """``atrium serve`` with a folder watcher and a release policy."""

    extra: JSONDict = field(default_factory=dict)

    @property
    def config(self) -> JSONDict:
        """The base settings plus the release pipeline's."""
        return {**super().config, **self.extra}


def settings(watch: Path, interval: float) -> JSONDict:
    """Watcher, policy and a gate suite sized for two cores."""
    policy = {
        "public_name": PUBLIC,
        "deployment": {"replicas": {"min": 2, "max": 2}, "resources": {"cpus": 1}},
        "gates": "bundled",
        "canary": {
            "step_weights": [25, 50, 100],
            "interval_seconds": interval,
            "checks_per_interval": 4,
            "analysis": {
                "min_requests": 5,
                "max_latency_ratio": 2.0,
                "max_ttft_ratio": 2.0,
                "warmup_seconds": interval / 2,
            },
        },
    }
    suite = {
        "tasks": {"max_cases": 3},
        "safety": {"max_cases": 2},
        # On two cores the standby shares the CPU with production's live load, which the
        # production side of the comparison does not: ratios allow for that.
        "performance": {
            "requests": 4,
            "concurrency": 2,
            "warmup": 2,
            "max_ttft_p50_ratio": 4.0,
            "max_ttft_p95_ratio": 4.0,
            "min_tokens_per_second_ratio": 0.25,
        },
    }
    watcher = {
        "kind": "folder",
        "name": "drops",
        "url": str(watch),
        "model": MODEL,
        "pattern": "*.gguf",
        "interval_seconds": 1,
    }
    return {
        "registry": {"source_roots": [str(watch)]},
        "releases": {
            "watchers": [watcher],
            "policies": {MODEL: policy},
            "gate_suites": {"bundled": suite},
            "autoscale_interval_seconds": 5,
        },
    }


@dataclass
class Load:
    """Steady users asking the public name; every failure kept."""

    client: openai.AsyncOpenAI
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def user(self, n: int) -> None:
        while not self.stop.is_set():
            self.sent += 1
            try:
                await self.client.chat.completions.create(
                    model=PUBLIC,
                    messages=[
                        {"role": "system", "content": DOCUMENT},
                        {"role": "user", "content": f"User {n}: which section covers limits?"},
                    ],
                    max_tokens=12,
                    temperature=0,
                )
            except openai.APIError as exc:
                self.failed.append(repr(exc)[:300])

    def counts(self) -> JSONDict:
        return {"requests": self.sent, "failed": len(self.failed), "errors": self.failed[:5]}


async def releases(http: httpx.AsyncClient) -> list[JSONDict]:
    answer = await http.get("/v1/releases")
    answer.raise_for_status()
    data: list[JSONDict] = answer.json()["data"]
    return data


async def wait_release(http: httpx.AsyncClient, seen: int, limit_s: float) -> JSONDict:
    """The release after the first ``seen`` ones, once it has ended."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = await releases(http)
        if len(found) > seen and found[0]["finished_at"] is not None:
            return found[0]
        await asyncio.sleep(0.5)
    raise TimeoutError(f"no release ended within {limit_s:.0f}s: {await releases(http)}")


def stage_times(release: JSONDict) -> JSONDict:
    """Seconds from detection to each stage's first appearance and to each analysis."""
    start = datetime.fromisoformat(release["timeline"][0]["at"])
    out: JSONDict = {}
    for entry in release["timeline"]:
        at = (datetime.fromisoformat(entry["at"]) - start).total_seconds()
        label = entry.get("event") or entry["stage"]
        out.setdefault(str(label), round(at, 2))
    return out


def publish(drop: Path, watch: Path) -> float:
    """Move a finished file into the watched folder (atomically); the wall time it landed."""
    target = watch / drop.name
    drop.replace(target)
    return time.time()


async def phase(
    http: httpx.AsyncClient, load: Load | None, drop: Path, watch: Path, limit_s: float
) -> JSONDict:
    seen = len(await releases(http))
    before = load.counts() if load is not None else None
    landed = publish(drop, watch)
    release = await wait_release(http, seen, limit_s)
    detected = datetime.fromisoformat(release["timeline"][0]["at"]).timestamp()
    ended = release["finished_at"]
    result: JSONDict = {
        "file": drop.name,
        "status": release["status"],
        "reason": release["reason"],
        "version": release["version"],
        "file_to_detection_s": round(detected - landed, 2),
        "detection_to_end_s": round(ended - detected, 2),
        "stages_s": stage_times(release),
    }
    if load is not None and before is not None:
        after = load.counts()
        result["client_requests"] = after["requests"] - before["requests"]
        result["client_failures"] = after["failed"] - before["failed"]
        result["client_errors"] = after["errors"]
    return result


async def run(work: Path, interval: float, users: int) -> JSONDict:
    shutil.rmtree(work, ignore_errors=True)
    watch, staging = work / "watch", work / "staging"
    watch.mkdir(parents=True)
    staging.mkdir()
    server = ReleaseServer(work / "server", models={}, extra=settings(watch, interval))
    server.ready_timeout = 180.0
    with atrium_server(server):
        base = f"http://127.0.0.1:{server.port}"
        headers = {"authorization": f"Bearer {server.key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
            first = staging / "smollm2-v1.gguf"
            shutil.copyfile(bundled_gguf(), first)
            v1 = await phase(http, None, first, watch, 300)
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=server.key, max_retries=0)
            load = Load(client)
            users_tasks = [asyncio.create_task(load.user(n)) for n in range(users)]
            try:
                good = new_version(bundled_gguf(), staging / "smollm2-v2.gguf", "v2")
                v2 = await phase(http, load, good, watch, TARGET_SECONDS + 300)
                bad = short_context_version(bundled_gguf(), staging / "smollm2-v3.gguf", 256)
                v3 = await phase(http, load, bad, watch, TARGET_SECONDS)
            finally:
                load.stop.set()
                await asyncio.gather(*users_tasks)
                await client.close()
            metrics = (await http.get("/metrics")).text
    return {"first": v1, "good": v2, "bad": v3, "metrics": _release_metrics(metrics)}


def _release_metrics(text: str) -> list[str]:
    wanted = ("atrium_release_detection_to_production_seconds_sum", "atrium_releases_total")
    return [line for line in text.splitlines() if line.startswith(wanted)]


def report(result: JSONDict, interval: float, users: int) -> str:
    good, bad = result["good"], result["bad"]
    first_step = bad["stages_s"].get("canary at 25%")
    rolled = bad["stages_s"].get("rolled_back")
    rollback_after = (
        round(rolled - first_step, 2) if first_step is not None and rolled is not None else None
    )
    result["bad"]["rollback_after_first_step_s"] = rollback_after
    rows = [
        ["first version: detection to production", f"{result['first']['detection_to_end_s']} s",
         "-", result["first"]["status"]],
        ["new version: detection to 100% production", f"{good['detection_to_end_s']} s",
         f"< {TARGET_SECONDS:.0f} s", good["status"]],
        ["new version: client requests failed", f"{good['client_failures']} of "
         f"{good['client_requests']}", "0", "-"],
        ["bad version: rolled back after its first canary step", f"{rollback_after} s",
         f"< {interval:g} s (one interval)", bad["status"]],
        ["bad version: client requests failed", f"{bad['client_failures']} of "
         f"{bad['client_requests']}", "0", "-"],
    ]  # fmt: skip
    stages = [[name, f"{seconds} s"] for name, seconds in good["stages_s"].items()]
    return "\n\n".join(
        [
            "# Release pipeline: detection to production",
            f"`bench/release_pipeline.py`: {users} steady users through the gateway, canary "
            f"steps 25/50/100% held {interval:g} s each, two local replicas per version.",
            markdown_table(["measure", "result", "target", "outcome"], rows),
            "## Stages of the new version (seconds after detection)",
            markdown_table(["stage", "at"], stages),
            f"Bad version's reason: {bad['reason']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=30.0, help="Canary step hold (s).")
    # Two users keep both cores busy without queueing: on a machine whose replicas share
    # two cores, a heavier load slows whichever arm competes with the busier one.
    parser.add_argument("--users", type=int, default=2, help="Steady load's users.")
    parser.add_argument("--no-write", action="store_true", help="Print, do not save.")
    args = parser.parse_args()
    result = asyncio.run(run(WORK_DIR / "release_pipeline", args.interval, args.users))
    document = report(result, args.interval, args.users)
    result["machine"] = machine_facts(AtriumSource())
    print(document)
    if not args.no_write:
        (RESULTS_DIR / "release_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS_DIR / "release_pipeline.md").write_text(document + "\n")


if __name__ == "__main__":
    run_main(main)
