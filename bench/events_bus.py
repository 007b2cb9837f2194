"""Atrium's event bus on Redis Streams and its durable consumers, and what tracing costs.

Everything runs through the production code on 127.0.0.1:

- bus throughput: ``--events`` ``request.completed`` events published as fast as one
  publisher can (one XADD each, as ``EventPublisher`` sends them) into a
  :class:`~atrium.bus.redis_streams.RedisStreamsEventBus` on the real Redis, handled by
  one and by two consumers of one group (competing consumers, each its own
  subscription as a replica would run it, all in this process). events/s = events /
  (first publish to last handled); the latency of each event is from just before its
  XADD to the end of its handler (its XACK follows at once, in the same loop);
- bus latency at a steady rate: the same, paced at ``--rate`` events/s, so the
  latency is the bus's own and not queueing behind a burst;
- durable consumers: the same events, flat out and at ``--rate``, consumed by the
  production audit consumer (``AuditRecorder``, group ``audit``) and usage consumer
  (``UsageRecorder``, group ``usage``), wired as ``build_platform`` wires them on
  ``bus.backend: redis`` (``build_bus``, default settings, 100 handlers at once, each
  returning only once a group commit to the store holds its event), in one and in two
  replica processes (``_durable_consumers.py``, consumer ``<host>-<pid>``), writing to a
  new PostgreSQL database migrated for the case and dropped after (``_consumers_case.py``).
  events/s = events / (first publish to the first look, every 20 ms, that finds every
  audit entry and every usage event id in the database). Latency, per group: from the
  bench's clock just
  before the event's XADD to the arrival of the reply to the XACK that acknowledged it
  in a consumer process (``CLOCK_MONOTONIC`` on both sides), so it spans the XADD, the
  wait in the stream, the read, the handler's queueing, the group-commit delay and the
  transaction, and the XACK round trip; ``both`` is the later of the two groups. After
  each case the bench checks that every event has exactly one audit entry under its id
  and is in the usage totals once (seen ids and sums), and that each group acknowledged
  every entry; it fails otherwise. Bench CPU is the publisher's (and the polling);
  the consumer processes' CPU is counted apart; PostgreSQL's and Redis's is in the
  other work;
- audit: the same for an audited request (``GET /v1/admin/alerts``: admin reads are
  audited) with ``audit.record_api_calls`` off and on, and for a non-streaming chat
  completion (the chat part's upstream) with ``audit.record_inference`` off and on (the
  entry written from the ``request.completed`` event), each round ending with the
  recorder's flush so the entries' hash-chained inserts are counted;
- tracing: CPU time per request of ``GET /v1/models`` through the whole ASGI app of
  a platform (``build_app``: request id, body limit, tracing, auth, audit, routing)
  driven in-process by httpx, with tracing off, and on with sampling 1% and 100%
  (spans batched to an in-memory exporter, so span export work is counted as in
  production, minus the network). The rounds are interleaved and the median kept;
- tracing on the chat path: the same for a non-streaming ``POST /v1/chat/completions``
  through the gateway to an OpenAI-compatible upstream (``_chat_upstream.py``, a fixed
  answer, in a process of its own so that its CPU is not counted): a sampled request
  has the server span, the ``router`` span and one ``backend`` span per upstream call.

The machine is shared: before each measured case the script waits for a quiet machine
and records the CPU other processes used meanwhile (``foreign_cores_during``).

    .venv/bin/python bench/events_bus.py               # about 7 minutes on a quiet machine
    .venv/bin/python bench/events_bus.py --events 2000 --requests 300 --no-write  # smoke
    .venv/bin/python bench/events_bus.py --parts chat  # one part; the others are kept
    .venv/bin/python bench/events_bus.py --parts consumers --events 2000 --no-write  # smoke

``--parts`` measures some parts only (``bus``, ``consumers``, ``tracing``, ``chat``,
``audit``); the results of the others are carried over from the last
``results/events_bus.json``, and ``measured`` in the JSON says when and on which commit
each part was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import redis.asyncio as aioredis
from _common import (
    BENCH_DIR,
    RESULTS_DIR,
    WORK_DIR,
    AtriumSource,
    ForeignLoad,
    JSONDict,
    ManagedProcess,
    free_port,
    machine_facts,
    markdown_table,
    ms,
    package_version,
    run_main,
    summary,
    wait_for_quiet,
    wait_http_ok,
    write_results,
)
from _consumers_case import consumers_case
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import func, select

from atrium.app import Platform, build_app, build_platform
from atrium.audit.recorder import GROUP as AUDIT_GROUP
from atrium.bus import RedisStreamsEventBus
from atrium.bus.events import RequestCompleted
from atrium.core.settings import Settings
from atrium.gateway.usage import GROUP as USAGE_GROUP
from atrium.store.audit import AuditRow

NAME = "events_bus"
#: An audited read (admin paths are audited, reads included), cheap to answer.
AUDITED = "/v1/admin/alerts"
KEY = "atr-" + "e" * 40
CHAT = "/v1/chat/completions"
CHAT_BODY: JSONDict = {
    "model": "mock-gpt",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 16,
}
PARTS = ("bus", "consumers", "tracing", "chat", "audit")


def _event() -> RequestCompleted:
    return RequestCompleted(
        model="smol", key_id="key_0123456789", prompt_tokens=42, completion_tokens=128,
        latency_ms=812.5, status=200, stream=True, endpoint="chat.completions",
        team_id="team_1", cost_usd=0.00042, routed_to="smol-v2", ttft_ms=95.0,
    )  # fmt: skip


async def _bus_case(consumers: int, events: int, rate: float | None) -> JSONDict:
    """Publish ``events`` (at ``rate``/s, or flat out) and time each to its handler's end."""
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    prefix = f"atrium-bench:{uuid4().hex}:"
    bus = RedisStreamsEventBus(client, stream_prefix=prefix)
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()

    async def handle(event: RequestCompleted) -> None:
        latencies.append(time.perf_counter() - sent[event.id])
        if len(latencies) == events:
            done.set()

    try:
        for n in range(consumers):
            await bus.subscribe(RequestCompleted, "bench", f"c{n}", handle)
        await asyncio.sleep(0.2)  # every consumer blocked in XREADGROUP
        meter = ForeignLoad().start()
        cpu0, started = time.process_time(), time.perf_counter()
        for n in range(events):
            if rate is not None:
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            event = _event()
            sent[event.id] = time.perf_counter()
            await bus.publish(event)
        published = time.perf_counter() - started
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        foreign = meter.stop()
    finally:
        await bus.close()
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    lat = summary([x * 1000 for x in latencies], digits=3)
    return {
        "consumers": consumers,
        "events": events,
        "rate": rate,
        "events_per_s": round(events / elapsed, 1),
        "publish_per_s": round(events / published, 1),
        "latency_ms": lat,
        "bench_cpu_ms_per_event": round(cpu / events * 1000, 4),
        "foreign_cores_during": foreign,
    }


def _settings(
    data_dir: Path,
    sampling: float | None,
    *,
    audit: bool,
    inference: bool = True,
    upstream: int | None = None,
) -> Settings:
    tracing: dict[str, Any] = {"enabled": sampling is not None}
    if sampling is not None:
        tracing["sampling_ratio"] = sampling
    models: JSONDict = {}
    if upstream is not None:
        base_url = f"http://127.0.0.1:{upstream}/v1"
        models["mock-gpt"] = {"backend": "openai_compat", "base_url": base_url}
    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "auth": {"bootstrap_key": KEY},
            "workflows": {"enabled": False},
            "tracing": tracing,
            "audit": {"record_api_calls": audit, "record_inference": inference},
            **({"models": models} if models else {}),
        }
    )


@contextlib.contextmanager
def chat_upstream() -> Iterator[int]:
    """``_chat_upstream.py`` on a free port, in a process of its own; yields the port."""
    port = free_port()
    process = ManagedProcess(
        "chat upstream",
        [sys.executable, str(BENCH_DIR / "_chat_upstream.py"), "--port", str(port)],
        WORK_DIR / "events_bus" / "chat_upstream.log",
    )
    try:
        process.start()
        wait_http_ok(port, "/v1/models", process, timeout=30)
        yield port
    finally:
        process.stop()


async def _app_case(
    sampling: float | None,
    requests: int,
    rounds: int,
    *,
    path: str = "/v1/models",
    audit: bool = True,
    inference: bool = True,
    upstream: int | None = None,
) -> JSONDict:
    """CPU ms per GET ``path`` through the app, median of ``rounds`` rounds; with
    ``upstream`` (its port), per chat completion to the model served there instead.

    Each round ends with the audit recorder's flush, so the audit entries' writes
    (hash chain and insert, batched off the request) are counted in the round.
    """
    if upstream is not None:
        path = CHAT
    with tempfile.TemporaryDirectory(prefix="atrium-bench-") as tmp:
        settings = _settings(
            Path(tmp), sampling, audit=audit, inference=inference, upstream=upstream
        )
        platform = build_platform(settings, announce_key=lambda _: None)
        exporter = InMemorySpanExporter()
        if platform.tracing is not None:
            platform.tracing.provider.add_span_processor(BatchSpanProcessor(exporter))
        app = build_app(settings, platform)
        await platform.start()
        per_round: list[float] = []
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app),
                base_url="http://atrium",
                headers={"authorization": f"Bearer {KEY}"},
            ) as client:

                async def send() -> httpx.Response:
                    if upstream is None:
                        return await client.get(path)
                    return await client.post(path, json=CHAT_BODY)

                for _ in range(50):  # warm-up: imports, caches, first spans
                    answer = await send()
                    assert answer.status_code == 200, answer.text
                await platform.audit_recorder.flush()
                meter = ForeignLoad().start()
                for _ in range(rounds):
                    cpu0 = time.process_time()
                    for _ in range(requests):
                        await send()
                    await platform.audit_recorder.flush()
                    per_round.append((time.process_time() - cpu0) / requests * 1000)
                foreign = meter.stop()
            if platform.tracing is not None:
                platform.tracing.provider.force_flush()
            entries = await _audit_entries(platform)
        finally:
            await platform.close()
        return {
            "sampling": sampling,
            "path": path,
            "audit": audit,
            "audit_entries": entries,
            "requests_per_round": requests,
            "rounds": rounds,
            "cpu_ms_per_request": round(statistics.median(per_round), 4),
            "cpu_ms_per_request_rounds": [round(x, 4) for x in per_round],
            "spans_exported": len(exporter.get_finished_spans()),
            "spans_by_name": dict(
                collections.Counter(span.name for span in exporter.get_finished_spans())
            ),
            "foreign_cores_during": foreign,
        }


async def measure(args: argparse.Namespace) -> JSONDict:
    """The cases of every part in ``args.parts``, each after a quiet wait."""
    measured: JSONDict = {}
    if "bus" in args.parts:
        measured["bus"] = await _measure_bus(args)
    if "consumers" in args.parts:
        measured["consumers"] = await _measure_consumers(args)
    if "tracing" in args.parts:
        measured["tracing"] = await _measure_tracing(args)
    if "chat" in args.parts:
        with chat_upstream() as port:
            measured["chat_tracing"] = await _measure_tracing(args, upstream=port)
    if "audit" in args.parts:
        with chat_upstream() as port:
            measured["audit"] = await _measure_audit(args, upstream=port)
    return measured


async def _measure_bus(args: argparse.Namespace) -> list[JSONDict]:
    bus: list[JSONDict] = []
    for rate in (None, args.rate):
        for consumers in (1, 2):
            quiet = wait_for_quiet(args.max_foreign_cores, timeout_s=args.quiet_timeout)
            events = args.events if rate is None else min(args.events, int(args.rate * 10))
            row = await _bus_case(consumers, events, rate)
            bus.append(row | {"quiet_wait": quiet})
            print(f"bus {consumers} consumer(s) rate {rate}: {row['events_per_s']} ev/s, "
                  f"p50 {row['latency_ms']['p50']} ms p99 {row['latency_ms']['p99']} ms "
                  f"(other work {row['foreign_cores_during']:.2f} cores)", flush=True)  # fmt: skip
    return bus


async def _measure_consumers(args: argparse.Namespace) -> list[JSONDict]:
    rows: list[JSONDict] = []
    for rate in (None, args.rate):
        for replicas in (1, 2):
            quiet = wait_for_quiet(args.max_foreign_cores, timeout_s=args.quiet_timeout)
            events = args.events if rate is None else min(args.events, int(args.rate * 10))
            row = await consumers_case(replicas, events, rate, _event)
            rows.append(row | {"quiet_wait": quiet})
            both = row["latency_ms"]["both"]
            print(f"consumers {replicas} replica(s) rate {rate}: {row['events_per_s']} ev/s "
                  f"committed, acked by both p50 {both['p50']} ms p99 {both['p99']} ms "
                  f"(other work {row['foreign_cores_during']:.2f} cores)", flush=True)  # fmt: skip
    return rows


async def _measure_tracing(
    args: argparse.Namespace, *, upstream: int | None = None
) -> list[JSONDict]:
    """Tracing off, at 1% and at 100%: GET /v1/models, or a chat completion (``upstream``)."""
    tracing: list[JSONDict] = []
    what = "tracing" if upstream is None else "chat tracing"
    for sampling in (None, 0.01, 1.0):
        quiet = wait_for_quiet(args.max_foreign_cores, timeout_s=args.quiet_timeout)
        row = await _app_case(sampling, args.requests, args.rounds, upstream=upstream)
        tracing.append(row | {"quiet_wait": quiet})
        print(f"{what} {sampling}: {row['cpu_ms_per_request']} CPU ms/request, "
              f"spans {row['spans_by_name']} "
              f"(other work {row['foreign_cores_during']:.2f} cores)", flush=True)  # fmt: skip
    _overheads(tracing)
    return tracing


async def _measure_audit(args: argparse.Namespace, *, upstream: int) -> list[JSONDict]:
    """An audited admin read with ``audit.record_api_calls`` off and on, then a chat
    completion with ``audit.record_inference`` off and on (its entry is written from
    the ``request.completed`` event, off the request)."""
    audit: list[JSONDict] = []
    for chat in (False, True):
        pair: list[JSONDict] = []
        for record in (False, True):
            quiet = wait_for_quiet(args.max_foreign_cores, timeout_s=args.quiet_timeout)
            row = await _app_case(
                None, args.requests, args.rounds, path=AUDITED, audit=record or chat,
                inference=record or not chat, upstream=upstream if chat else None,
            )  # fmt: skip
            pair.append(row | {"quiet_wait": quiet, "audit": record})
            print(f"audit {record} {row['path']}: {row['cpu_ms_per_request']} CPU ms/request, "
                  f"{row['audit_entries']} entries "
                  f"(other work {row['foreign_cores_during']:.2f} cores)", flush=True)  # fmt: skip
        _overheads(pair)
        audit += pair
    return audit


def _overheads(rows: list[JSONDict]) -> None:
    """Each row's CPU beyond the first row's."""
    base = rows[0]["cpu_ms_per_request"]
    for row in rows:
        row["overhead_cpu_ms"] = round(row["cpu_ms_per_request"] - base, 4)
        row["overhead_percent"] = round((row["cpu_ms_per_request"] / base - 1) * 100, 1)


async def _audit_entries(platform: Platform) -> int:
    """How many audit entries the platform wrote."""
    async with platform.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditRow)) or 0)


def _spans(row: JSONDict) -> str:
    """Spans exported, with the chat path's router and backend spans among them."""
    by_name: dict[str, int] = row.get("spans_by_name", {})
    inner = [f"{by_name[name]:,} {name}" for name in ("router", "backend") if name in by_name]
    return f"{row['spans_exported']:,}" + (f" ({', '.join(inner)})" if inner else "")


def _tracing_table(rows: list[JSONDict]) -> str:
    return markdown_table(
        ["tracing", "CPU ms/request", "overhead ms", "overhead", "spans", "other work (cores)"],
        [
            [
                "off" if row["sampling"] is None else f"{row['sampling'] * 100:g}%",
                ms(row["cpu_ms_per_request"], 3),
                ms(row["overhead_cpu_ms"], 3),
                f"{row['overhead_percent']:+.1f}%",
                _spans(row),
                ms(row["foreign_cores_during"]),
            ]
            for row in rows
        ],
    )


def _bus_table(rows: list[JSONDict]) -> str:
    headers = ["publishing", "consumers", "events", "events/s", "p50 ms", "p99 ms",
               "bench CPU ms/event", "other work (cores)"]  # fmt: skip
    return markdown_table(
        headers,
        [
            [
                "flat out" if row["rate"] is None else f"{row['rate']:g}/s",
                str(row["consumers"]),
                f"{row['events']:,}",
                f"{row['events_per_s']:,.0f}",
                ms(row["latency_ms"]["p50"]),
                ms(row["latency_ms"]["p99"]),
                ms(row["bench_cpu_ms_per_event"], 3),
                ms(row["foreign_cores_during"]),
            ]
            for row in rows
        ],
    )


def _consumers_table(rows: list[JSONDict]) -> str:
    headers = ["publishing", "replicas", "events", "events/s committed", "audit p50 / p99 ms",
               "usage p50 / p99 ms", "bench CPU ms/event", "consumers CPU ms/event",
               "other work (cores)"]  # fmt: skip

    def p50_p99(latency: JSONDict) -> str:
        return f"{ms(latency['p50'], 1)} / {ms(latency['p99'], 1)}"

    return markdown_table(
        headers,
        [
            [
                "flat out" if row["rate"] is None else f"{row['rate']:g}/s",
                str(row["replicas"]),
                f"{row['events']:,}",
                f"{row['events_per_s']:,.0f}",
                p50_p99(row["latency_ms"][AUDIT_GROUP]),
                p50_p99(row["latency_ms"][USAGE_GROUP]),
                ms(row["bench_cpu_ms_per_event"], 3),
                ms(row["consumers_cpu_ms_per_event"], 3),
                ms(row["foreign_cores_during"]),
            ]
            for row in rows
        ],
    )


def _audit_table(rows: list[JSONDict]) -> str:
    headers = ["audit", "request", "CPU ms/request", "overhead ms", "overhead", "entries",
               "other work (cores)"]  # fmt: skip
    return markdown_table(
        headers,
        [
            [
                "on" if row["audit"] else "off",
                f"`{'POST' if row['path'] == CHAT else 'GET'} {row['path']}`",
                ms(row["cpu_ms_per_request"], 3),
                ms(row["overhead_cpu_ms"], 3),
                f"{row['overhead_percent']:+.1f}%",
                f"{row['audit_entries']:,}",
                ms(row["foreign_cores_during"]),
            ]
            for row in rows
        ],
    )


def markdown(data: JSONDict) -> str:
    """A table per part measured (or carried over)."""
    machine = data["machine"]
    sections: list[str] = []
    if "bus" in data:
        sections += [
            f"Redis Streams (Redis {data['redis_version']}), `request.completed` events, "
            f"on {machine['cpu_model']} ({machine['cpus_usable']} cores, shared). "
            "Latency: publish (XADD) to the end of the handler; the XACK follows at once.",
            _bus_table(data["bus"]),
        ]
    if "consumers" in data:
        sections += [
            "Durable consumers: the production audit and usage consumers (one of each per "
            "replica process, 100 handlers at once, a group commit to PostgreSQL before the "
            "XACK). events/s: first publish to every audit entry and usage id in the "
            "database; latency: just before the XADD to the group's XACK reply. Bench CPU: "
            "publishing and polling; other work includes PostgreSQL's and Redis's.",
            _consumers_table(data["consumers"]),
        ]
    if "tracing" in data:
        sections += [
            "Tracing: CPU per `GET /v1/models` through the whole app in-process (client "
            "included, the same in every row); spans batched to an in-memory exporter.",
            _tracing_table(data["tracing"]),
        ]
    if "chat_tracing" in data:
        sections += [
            "Tracing on the chat path: CPU per non-streaming `POST /v1/chat/completions` "
            "through the gateway (client included) to an OpenAI-compatible upstream in "
            "another process (its CPU not counted); a sampled request exports the server "
            "span, the `router` span and a `backend` span per upstream call.",
            _tracing_table(data["chat_tracing"]),
        ]
    if "audit" in data:
        sections += [
            "Audit on the request path: CPU per audited request (an admin read, with "
            "`audit.record_api_calls` off and on; a non-streaming chat completion through "
            "the gateway to the upstream of the chat tracing part, with "
            "`audit.record_inference` off and on: its entry is written from the "
            "`request.completed` event on the in-process bus), each round including the "
            "flush of its entries (hash chain and insert, batched).",
            _audit_table(data["audit"]),
        ]
    return "\n\n".join(sections)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--events", type=int, default=20_000, help="events per flat-out case")
    add("--rate", type=float, default=500.0, help="events/s of the paced cases (10 s each)")
    add("--requests", type=int, default=1000, help="requests per tracing round")
    add("--rounds", type=int, default=5, help="tracing rounds per setting (median kept)")
    add("--max-foreign-cores", type=float, default=0.25, help="quiet: other work under this")
    add("--quiet-timeout", type=float, default=60.0, help="longest wait for quiet (s), per case")
    add("--json", type=Path, default=None, help="also write the whole result here")
    add("--parts", type=lambda s: s.split(","), default=list(PARTS),
        help=f"comma-separated parts to measure ({','.join(PARTS)}); the others are kept "
        "from the last results")  # fmt: skip
    add("--no-write", action="store_true", help="print the tables, write no result files")
    return parser.parse_args()


_RESULT_PARTS = ("bus", "consumers", "tracing", "chat_tracing", "audit")


def _previous() -> JSONDict:
    path = RESULTS_DIR / f"{NAME}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _carried_over(results: JSONDict) -> JSONDict:
    """The parts not measured now, from the last results."""
    previous = _previous()
    return {k: previous[k] for k in _RESULT_PARTS if k in previous and k not in results}


def _measured(results: JSONDict, facts: JSONDict, settings: JSONDict) -> JSONDict:
    """When, on which commit and with which settings each part was measured."""
    previous = _previous()
    machine = previous.get("machine", {})
    atrium = machine.get("atrium", {})
    measured: JSONDict = {
        k: {"timestamp_utc": machine.get("timestamp_utc"), "commit": atrium.get("commit"),
            "settings": previous.get("settings")}
        for k in _RESULT_PARTS if k in previous and k not in results
    }  # fmt: skip
    measured |= previous.get("measured", {})
    for part in results:
        measured[part] = {
            "timestamp_utc": facts["timestamp_utc"],
            "commit": facts["atrium"]["commit"],
            "atrium_dirty": facts["atrium"]["atrium_dirty"],
            "load_average_1_5_15": facts["load_average_1_5_15"],
            "settings": settings,
        }
    return {k: measured[k] for k in _RESULT_PARTS if k in measured}


def main() -> None:
    """Measure, print, write the results."""
    args = parse_args()
    started = time.monotonic()

    async def redis_version() -> str:
        client = aioredis.Redis(host="127.0.0.1", port=6379)
        try:
            info: dict[str, Any] = await client.info("server")
            return str(info["redis_version"])
        finally:
            await client.aclose()

    facts = machine_facts(
        AtriumSource(), redis_py=package_version("redis"),
        opentelemetry_sdk=package_version("opentelemetry-sdk"),
    )  # fmt: skip
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}: pick from {', '.join(PARTS)}")
    settings = {
        "events": args.events,
        "rate": args.rate,
        "requests": args.requests,
        "rounds": args.rounds,
        "max_foreign_cores": args.max_foreign_cores,
        "quiet_timeout_s": args.quiet_timeout,
    }
    results = asyncio.run(measure(args))
    data: JSONDict = {
        "name": NAME,
        "machine": facts,
        "redis_version": asyncio.run(redis_version()),
        "settings": settings,
        **_carried_over(results),
        **results,
        "wall_minutes": round((time.monotonic() - started) / 60, 1),
    }
    data["measured"] = _measured(results, facts, settings)
    text = markdown(data)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    if not args.no_write:
        json_path, md_path = write_results(NAME, data, text)
        print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    run_main(main)
