"""Atrium's gateway side by side with its peers (Portkey, LiteLLM) in front of one upstream.

An nginx mock upstream (``<repo>/../shared/peers/mock/nginx.conf``) answers chat
completions from memory on loopback, one port for JSON and one for SSE. One gateway
at a time (Atrium, then Portkey, then LiteLLM, each installed into ``bench/.work/peers/``
and stopped before the next starts) gets, with the same client and the same load tool:

1. sequential keep-alive latency, non-streaming and streaming, in blocks alternating
   with the same requests direct to nginx (added = through minus direct, per percentile);
2. requests/s with ``wrk -t2`` and the peers' ``chat.lua`` at each concurrency;
3. in a second, fresh process: resident memory (its process tree) fresh, after a wrk
   soak round and after another one.

Then two Atrium replicas sharing PostgreSQL and Redis get 3N concurrent requests on a
key limited to N per minute (the peers' support for the same is recorded). A peer that
fails to install or start is recorded as such and the run goes on.

Run: ``.venv/bin/python bench/gateway_overhead.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import math
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from _common import (
    LOOPBACK,
    REPO,
    WORK_DIR,
    ForeignLoad,
    JSONDict,
    atrium_source,
    command_version,
    connect,
    log_summary,
    machine_facts,
    run_main,
    summary,
    thread_count,
    tree_cpu_seconds,
    tree_rss,
    wait_for_quiet,
    write_results,
)
from _gateway_report import ratios, render_markdown, targets
from _peers import (
    CHAT_PATH,
    PORTKEY_LIMITS,
    AtriumGateway,
    AtriumNoInferenceAuditGateway,
    Gateway,
    LiteLLMGateway,
    MockPorts,
    PortkeyGateway,
    Route,
    atrium_replica_limits,
    direct_route,
    ensure_tools,
    litellm_limits,
    nginx_mock,
    run_wrk,
)

NAME = "gateway_overhead"
DONE_TAIL = b"data: [DONE]\n\n"
CLIENT = "http.client (stdlib), one persistent connection per target, TCP_NODELAY, gc off"
# Untimed requests on each connection before each block (and to reopen an idle one).
REWARM = 20
# The body of the peers' wrk script (mock/chat.lua), so both measurements send the same.
PROMPT = "Say hello in five words."
GATEWAYS = ("atrium", "portkey", "litellm")
#: Also accepted by --gateways: Atrium variants, measured beside ``atrium``.
VARIANTS = ("atrium-noaudit",)
KINDS = (("non_streaming", False), ("streaming", True))


@dataclass(frozen=True)
class Options:
    """Command-line settings."""

    peers_dir: Path
    gateways: tuple[str, ...]
    requests: int
    warmup: int
    blocks: int
    calibration: int
    wrk: bool
    wrk_duration_s: int
    wrk_connections: tuple[int, ...]
    wrk_threads: int
    soak_requests: int
    soak_rounds: int
    soak_connections: int
    soak_max_s: int
    limits: bool
    limit_rpm: int
    pg_server: str
    redis_url: str
    max_foreign_cores: float
    quiet_timeout_s: float
    atrium_ref: str | None
    quick: bool

    @property
    def quiet(self) -> JSONDict:
        """Arguments of :func:`wait_for_quiet`."""
        return {"max_foreign_cores": self.max_foreign_cores, "timeout_s": self.quiet_timeout_s}


QUICK = {
    "requests": 300,
    "warmup": 50,
    "blocks": 3,
    "calibration_requests": 0,
    "wrk_duration": 3,
    "soak_requests": 5000,
    "soak_max_seconds": 20,
    "limit_rpm": 20,
    "quiet_timeout": 5.0,
}


def parse_options(argv: list[str] | None = None) -> Options:
    """Read the command line (``--quick`` changes the defaults, explicit flags win)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add(
        "--peers-dir",
        type=Path,
        default=REPO.parent / "shared" / "peers",
        help="the peers' folder: mock/, portkey/, litellm/ (default: <repo>/../shared/peers)",
    )
    add("--gateways", default=",".join(GATEWAYS), help="which, in order (default: all three)")
    add("--quick", action="store_true", help=f"a short smoke run: {QUICK}")
    add("--requests", type=int, default=2000, help="timed sequential requests per target")
    add("--warmup", type=int, default=300, help="untimed sequential requests first")
    add("--blocks", type=int, default=10, help="alternating direct/gateway blocks per row")
    add(
        "--calibration-requests",
        type=int,
        default=1000,
        help="requests per client when comparing clients direct to nginx (0: skip)",
    )
    add("--no-wrk", action="store_true", help="skip the throughput runs")
    add("--wrk-duration", type=int, default=10, help="seconds per throughput run")
    add("--wrk-connections", default="32,128", help="concurrencies of the throughput runs")
    add("--wrk-threads", type=int, default=2)
    add("--soak-requests", type=int, default=100_000, help="requests per memory round (0: skip)")
    add("--soak-rounds", type=int, default=2)
    add("--soak-connections", type=int, default=32)
    add(
        "--soak-max-seconds",
        type=int,
        default=110,
        help="a round stops here even short of --soak-requests (slow gateways)",
    )
    add("--no-limits", action="store_true", help="skip the two-replica rate-limit test")
    add("--limit-rpm", type=int, default=50, help="N: the key's RPM; 3N requests are sent")
    add("--pg-server", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    add("--redis-url", default="redis://127.0.0.1:6379/0", help="as Atrium's default")
    add(
        "--max-foreign-cores",
        type=float,
        default=0.25,
        help="wait before each block until other work uses fewer cores than this",
    )
    add("--quiet-timeout", type=float, default=30.0, help="longest wait for quiet (s)")
    add(
        "--atrium-ref",
        help="run atrium/ as of this git commit (exported to bench/.work) instead of the tree",
    )
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    gateways = tuple(g.strip() for g in args.gateways.split(",") if g.strip())
    if unknown := set(gateways) - set(GATEWAYS) - set(VARIANTS):
        parser.error(f"unknown gateways {sorted(unknown)}; choose from {GATEWAYS + VARIANTS}")
    return Options(
        peers_dir=args.peers_dir.resolve(),
        gateways=gateways,
        requests=args.requests,
        warmup=args.warmup,
        blocks=args.blocks,
        calibration=args.calibration_requests,
        wrk=not args.no_wrk,
        wrk_duration_s=args.wrk_duration,
        wrk_connections=tuple(int(c) for c in args.wrk_connections.split(",")),
        wrk_threads=args.wrk_threads,
        soak_requests=args.soak_requests,
        soak_rounds=args.soak_rounds,
        soak_connections=args.soak_connections,
        soak_max_s=args.soak_max_seconds,
        limits=not args.no_limits,
        limit_rpm=args.limit_rpm,
        pg_server=args.pg_server,
        redis_url=args.redis_url,
        max_foreign_cores=args.max_foreign_cores,
        quiet_timeout_s=args.quiet_timeout,
        atrium_ref=args.atrium_ref,
        quick=args.quick,
    )


# -- sequential latency -------------------------------------------------------------


def chat_body(model: str, *, stream: bool) -> bytes:
    """The small chat request of the peers' wrk script."""
    tail = ',"stream":true' if stream else ""
    return (
        f'{{"model":"{model}","messages":[{{"role":"user","content":"{PROMPT}"}}],'
        f'"max_tokens":16{tail}}}'
    ).encode()


def check_answer(status: int, body: bytes, *, stream: bool) -> None:
    """Fail loudly on a wrong answer: a fast error is not a fast answer."""
    ok = status == 200 and (body.endswith(DONE_TAIL) if stream else b'"choices"' in body)
    if not ok:
        msg = f"unexpected answer: {status} {body[:300]!r}"
        raise RuntimeError(msg)


class KeepAliveClient:
    """Sequential requests on one route over one persistent ``http.client`` connection.

    The stdlib client has the lowest and steadiest overhead of the candidates (see
    the calibration in the results); the same client serves every target, so its
    cost cancels out of the difference.
    """

    def __init__(self, route: Route) -> None:
        self.port = route.port
        self.body = chat_body(route.model, stream=route.stream)
        self.headers = route.headers
        self.stream = route.stream
        self.samples: list[float] = []
        self.connections_opened = 0
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = connect(self.port)
            self.connections_opened += 1
        return self._conn

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def warm(self, n: int) -> None:
        """Untimed requests; reconnects once if the server dropped an idle connection."""
        try:
            self.timed(n)
        except (ConnectionError, http.client.HTTPException):
            self.close()
            self.timed(n)

    def timed(self, n: int) -> list[float]:
        """Milliseconds of each of ``n`` requests, each read to its last byte."""
        conn, body, headers, stream = self._connection(), self.body, self.headers, self.stream
        samples: list[float] = []
        clock = time.perf_counter_ns
        gc.disable()  # the client's own collector pauses are not the gateway's latency
        try:
            for _ in range(n):
                started = clock()
                conn.request("POST", CHAT_PATH, body, headers)
                response = conn.getresponse()
                data = response.read()
                elapsed = clock() - started
                check_answer(response.status, data, stream=stream)
                samples.append(elapsed / 1e6)
        finally:
            gc.enable()
        return samples


def calibrate_clients(ports: MockPorts, options: Options) -> JSONDict:
    """Each candidate client's latency direct to nginx: mostly its own overhead."""
    route, n = direct_route(ports, "sk-calibration", stream=False), options.calibration
    result: JSONDict = {"quiet": wait_for_quiet(**options.quiet)}
    client = KeepAliveClient(route)
    try:
        client.warm(min(200, n))
        result["http.client"] = summary(client.timed(n))
    finally:
        client.close()
    samples: list[float] = []
    with httpx.Client(base_url=f"http://{LOOPBACK}:{route.port}", headers=route.headers) as hx:
        gc.disable()
        try:
            for _ in range(min(200, n) + n):
                started = time.perf_counter_ns()
                response = hx.post(CHAT_PATH, content=client.body)
                samples.append((time.perf_counter_ns() - started) / 1e6)
                check_answer(response.status_code, response.content, stream=False)
        finally:
            gc.enable()
    result["httpx"] = summary(samples[-n:])
    return result


def added(direct: JSONDict, through: JSONDict) -> JSONDict:
    """Through-minus-direct at each percentile (and the mean), in ms."""
    keys = ["mean", *(k for k in direct if k.startswith("p"))]
    return {k: round(through[k] - direct[k], 4) for k in keys}


def measure_sequential(
    direct_to: Route, gateway: Route, gateway_pid: int, options: Options
) -> JSONDict:
    """Direct and through the gateway in alternating blocks, then the difference.

    Blocks alternate which target goes first, and each starts once the machine is
    quiet, so that noise from other work lands on both samples alike. The gateway's
    CPU time (its process tree, from /proc) is read around its timed requests.
    """
    direct, through = KeepAliveClient(direct_to), KeepAliveClient(gateway)
    per_block = math.ceil(options.requests / options.blocks)
    blocks: list[JSONDict] = []
    cpu = 0.0
    try:
        direct.warm(options.warmup)
        through.warm(options.warmup)
        for index in range(options.blocks):
            quiet = wait_for_quiet(**options.quiet)
            direct.warm(REWARM)
            through.warm(REWARM)
            meter = ForeignLoad().start()
            for client in (direct, through) if index % 2 == 0 else (through, direct):
                before = tree_cpu_seconds(gateway_pid) if client is through else 0.0
                client.samples.extend(client.timed(per_block))
                if client is through:
                    cpu += tree_cpu_seconds(gateway_pid) - before
            blocks.append({**quiet, "foreign_cores_during": meter.stop()})
    finally:
        direct.close()
        through.close()
    direct_summary, through_summary = summary(direct.samples), summary(through.samples)
    return {
        "direct": direct_summary,
        "gateway": through_summary,
        "added": added(direct_summary, through_summary),
        "gateway_cpu_ms_per_request": round(cpu / len(through.samples) * 1000, 3),
        "connections_opened": {
            "direct": direct.connections_opened,
            "gateway": through.connections_opened,
        },
        "blocks": blocks,
    }


def measure_throughput(
    wrk: str, lua: Path, routes: dict[str, Route], options: Options, watch_pid: int | None = None
) -> JSONDict:
    """requests/s for each kind of request at each concurrency."""
    result: JSONDict = {}
    for kind, route in routes.items():
        result[kind] = {}
        for connections in options.wrk_connections:
            print(f"  wrk {kind} c{connections} ...", flush=True)
            result[kind][f"c{connections}"] = run_wrk(
                wrk,
                lua,
                route,
                threads=options.wrk_threads,
                connections=connections,
                duration_s=options.wrk_duration_s,
                quiet=options.quiet,
                watch_pid=watch_pid,
            )
    return result


def soak_round(wrk: str, lua: Path, route: Route, gateway: Gateway, options: Options) -> JSONDict:
    """One round of ``--soak-requests`` (or ``--soak-max-seconds``), then the memory."""
    per_thread = math.ceil(options.soak_requests / options.wrk_threads)
    run = run_wrk(
        wrk,
        lua,
        route,
        threads=options.wrk_threads,
        connections=options.soak_connections,
        duration_s=options.soak_max_s,
        quiet=options.quiet,
        stop_after=per_thread,
        watch_pid=gateway.pid,
    )
    time.sleep(1.0)  # let the last answers and their bookkeeping finish
    return {"wrk": run, "rss": tree_rss(gateway.pid)}


# -- one gateway --------------------------------------------------------------------


def measure_gateway(
    gateway: Gateway, ports: MockPorts, wrk: str | None, lua: Path, options: Options
) -> JSONDict:
    """Install one gateway, then measure it in two runs of a fresh process each.

    First latency and throughput, then (restarted, so that neither depends on what
    the other left behind) memory fresh and after each soak round. Errors are
    recorded, not raised.
    """
    result: JSONDict = {"label": gateway.label, "auth": gateway.auth, "logs": {}}
    stage = "install"
    try:
        print(f"{gateway.label}: installing ...", flush=True)
        result["install"] = gateway.install()
        stage = "start"
        with running(gateway, "latency", result):
            result["facts"] = gateway.facts()
            if isinstance(gateway, LiteLLMGateway) and options.limits:
                try:
                    result["key_limit_probe"] = gateway.probe_key_limits(options.limit_rpm)
                except Exception as exc:
                    result["key_limit_probe_error"] = f"{type(exc).__name__}: {exc}"
            result["sequential"] = {}
            for kind, stream in KINDS:
                stage = f"sequential {kind}"
                print(f"  sequential {kind} ...", flush=True)
                result["sequential"][kind] = measure_sequential(
                    direct_route(ports, gateway.route(stream=stream).key, stream=stream),
                    gateway.route(stream=stream),
                    gateway.pid,
                    options,
                )
            if wrk and options.wrk:
                stage = "throughput"
                routes = {kind: gateway.route(stream=stream) for kind, stream in KINDS}
                result["wrk"] = measure_throughput(wrk, lua, routes, options, gateway.pid)
            result["threads_end"] = thread_count(gateway.pid)
        if wrk and options.soak_requests:
            stage = "memory soak: start"
            with running(gateway, "memory", result):
                memory: JSONDict = {"fresh": tree_rss(gateway.pid), "rounds": []}
                result["memory"] = memory
                for index in range(options.soak_rounds):
                    stage = f"memory soak, round {index + 1}"
                    print(f"  {stage} ...", flush=True)
                    route = gateway.route(stream=False)
                    memory["rounds"].append(soak_round(wrk, lua, route, gateway, options))
    except Exception as exc:
        result["error"] = f"{stage}: {type(exc).__name__}: {exc}"
        print(f"\n{gateway.label} FAILED at {result['error']}\n", file=sys.stderr, flush=True)
    return result


@contextmanager
def running(gateway: Gateway, phase: str, result: JSONDict) -> Iterator[Gateway]:
    """A fresh process of ``gateway`` for one phase; its startup time and log in ``result``."""
    gateway.phase = phase
    started = time.monotonic()
    try:
        gateway.start()
        result.setdefault("startup_s", {})[phase] = round(time.monotonic() - started, 1)
        print(f"{gateway.label} on {gateway.port} (pid {gateway.pid}), {phase} run", flush=True)
        yield gateway
    finally:
        gateway.stop()
        if gateway.process is not None:
            result["logs"][phase] = log_summary(gateway.process.log_path)


def make_gateway(
    name: str, run_dir: Path, ports: MockPorts, source: Path | None, peers: Path
) -> Gateway:
    """The adapter for one gateway name."""
    if name == "atrium":
        return AtriumGateway(run_dir / "atrium", ports, source)
    if name == "atrium-noaudit":
        return AtriumNoInferenceAuditGateway(run_dir / name, ports, source)
    if name == "portkey":
        return PortkeyGateway(run_dir / "portkey", ports, peers)
    return LiteLLMGateway(run_dir / "litellm", ports, peers)


def rate_limits(
    results: JSONDict, ports: MockPorts, source: Path | None, run_dir: Path, options: Options
) -> JSONDict:
    """The per-key limit across two replicas, per gateway (or why not)."""
    limits: JSONDict = {}
    if "atrium" in options.gateways:
        print(f"Atrium: two replicas, key at {options.limit_rpm} RPM ...", flush=True)
        try:
            limits["atrium"] = atrium_replica_limits(
                run_dir / "replicas",
                ports,
                source,
                options.limit_rpm,
                options.pg_server,
                options.redis_url,
            )
        except Exception as exc:
            limits["atrium"] = {"supported": True, "error": f"{type(exc).__name__}: {exc}"}
            print(f"\nAtrium replicas FAILED: {limits['atrium']['error']}\n", file=sys.stderr)
    if "portkey" in options.gateways:
        limits["portkey"] = PORTKEY_LIMITS
    if "litellm" in options.gateways:
        litellm = results.get("litellm", {})
        limits["litellm"] = litellm_limits(
            litellm.get("key_limit_probe"),
            litellm.get("key_limit_probe_error") or litellm.get("error"),
        )
    return limits


# -- main ---------------------------------------------------------------------------


def run(options: Options) -> JSONDict:
    """Everything, with every process stopped on the way out."""
    source = atrium_source(options.atrium_ref)
    nginx, wrk = ensure_tools(options.wrk or bool(options.soak_requests))
    lua = options.peers_dir / "mock" / "chat.lua"
    run_dir = WORK_DIR / NAME
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with ExitStack() as stack:
        ports = stack.enter_context(nginx_mock(nginx, options.peers_dir, run_dir / "nginx"))
        print(f"nginx mock on {ports.json} (JSON) and {ports.sse} (SSE)", flush=True)
        calibration = calibrate_clients(ports, options) if options.calibration else {}
        direct_wrk = None
        if wrk and options.wrk:
            print("direct to nginx:", flush=True)
            routes = {kind: direct_route(ports, "sk-direct", stream=s) for kind, s in KINDS}
            direct_wrk = measure_throughput(wrk, lua, routes, options)
        gateways: JSONDict = {}
        for name in options.gateways:
            gateway = make_gateway(name, run_dir, ports, source.path, options.peers_dir)
            gateways[name] = measure_gateway(gateway, ports, wrk, lua, options)
        limits = (
            rate_limits(gateways, ports, source.path, run_dir, options) if options.limits else {}
        )
    data: JSONDict = {
        "benchmark": NAME,
        "machine": machine_facts(
            source,
            nginx=command_version([nginx, "-v"]),
            wrk=command_version([wrk, "-v"]) if wrk else None,
            node=command_version(["node", "--version"]),
        ),
        "settings": settings_facts(options, lua),
        "runtime_s": round(time.monotonic() - started, 1),
        "client_calibration_direct_ms": calibration,
        "latency_unit": "ms",
        "direct_wrk": direct_wrk,
        "gateways": gateways,
        "rate_limits": limits,
    }
    data["ratios"] = ratios(data)
    data["targets"] = targets(data)
    return data


def settings_facts(options: Options, lua: Path) -> JSONDict:
    """Every knob of the run, for the results."""
    return {
        "quick": options.quick,
        "peers_dir": str(options.peers_dir),
        "gateways": list(options.gateways),
        "order": (
            "one gateway at a time: start, sequential, wrk, stop; start again (fresh "
            "process, fresh data folder), memory fresh, soak rounds, stop"
        ),
        "requests": options.requests,
        "warmup": options.warmup,
        "blocks": options.blocks,
        "rewarm_per_block": REWARM,
        "calibration_requests": options.calibration,
        "quiet": options.quiet,
        "client": CLIENT,
        "request_body": chat_body("mock-gpt", stream=False).decode(),
        "added_latency_method": (
            "percentile of the through-gateway sample minus the same percentile of the "
            "direct sample, measured in alternating blocks (independent samples, not paired)"
        ),
        "wrk": {
            "threads": options.wrk_threads,
            "connections": list(options.wrk_connections),
            "duration_s": options.wrk_duration_s,
            "script": str(lua),
        },
        "soak": {
            "requests_per_round": options.soak_requests,
            "rounds": options.soak_rounds,
            "connections": options.soak_connections,
            "max_s_per_round": options.soak_max_s,
            "load": "wrk with chat.lua STOP_AFTER, non-streaming",
            "rss": "sum of VmRSS over the gateway's process tree (/proc), 1 s after a round",
        },
        "limits": {"rpm": options.limit_rpm, "requests": 3 * options.limit_rpm},
    }


def main() -> None:
    """Run the benchmark, write the results and print the tables."""
    options = parse_options()
    if not (options.peers_dir / "mock" / "nginx.conf").is_file():
        sys.exit(f"no mock/nginx.conf under {options.peers_dir} (see --peers-dir)")
    data = run(options)
    markdown = render_markdown(data)
    json_path, md_path = write_results(NAME, data, markdown)
    print()
    print(markdown)
    print(f"\nwrote {json_path.relative_to(REPO)} and {md_path.relative_to(REPO)}")
    failed = [g["label"] for g in data["gateways"].values() if "error" in g]
    if failed:
        print(f"\nfailed (see 'error' in the JSON): {', '.join(failed)}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
