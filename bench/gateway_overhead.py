"""Latency Atrium's gateway adds in front of an OpenAI-compatible upstream.

An nginx mock upstream (``<repo>/../shared/peers/mock/nginx.conf``) answers chat
completions from memory on loopback, one port for JSON and one for SSE. The same
client sends the same sequential keep-alive requests direct to nginx and through
``atrium serve`` (key auth on, rate limits on but never reached); the added latency
at each percentile is the through-Atrium percentile minus the direct percentile.
``wrk`` then measures requests/s at 32 connections, direct and through Atrium.

Run: ``.venv/bin/python bench/gateway_overhead.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import math
import os
import re
import shutil
import subprocess
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
    AtriumServer,
    ForeignLoad,
    JSONDict,
    ManagedProcess,
    atrium_server,
    atrium_source,
    connect,
    free_port,
    machine_facts,
    managed,
    markdown_table,
    ms,
    rss_mib,
    run_main,
    summary,
    thread_count,
    wait_for_quiet,
    wait_http_ok,
    write_results,
)

NAME = "gateway_overhead"
CHAT_PATH = "/v1/chat/completions"
DONE_TAIL = b"data: [DONE]\n\n"
TARGET_P50_ADDED_MS = 1.0
CLIENT = "http.client (stdlib), one persistent connection per target, TCP_NODELAY, gc off"
# Untimed requests on each connection before each block (and to reopen an idle one).
REWARM = 20
# The body of the peers' wrk script (mock/chat.lua), so both measurements send the same.
PROMPT = "Say hello in five words."


@dataclass(frozen=True)
class Options:
    """Command-line settings."""

    peers_dir: Path
    requests: int
    warmup: int
    wrk: bool
    wrk_duration_s: int
    wrk_connections: int
    wrk_threads: int
    calibration: int
    blocks: int
    max_foreign_cores: float
    quiet_timeout_s: float
    atrium_ref: str | None

    @property
    def quiet(self) -> JSONDict:
        """Arguments of :func:`wait_for_quiet`."""
        return {"max_foreign_cores": self.max_foreign_cores, "timeout_s": self.quiet_timeout_s}


def parse_options() -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=REPO.parent / "shared" / "peers",
        help="folder with mock/nginx.conf and mock/chat.lua (default: <repo>/../shared/peers)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per target")
    parser.add_argument("--warmup", type=int, default=300, help="untimed requests first")
    parser.add_argument(
        "--blocks", type=int, default=10, help="alternating direct/Atrium blocks per row"
    )
    parser.add_argument(
        "--max-foreign-cores",
        type=float,
        default=0.25,
        help="wait before each block until other work uses fewer cores than this",
    )
    parser.add_argument(
        "--quiet-timeout", type=float, default=30.0, help="longest wait for quiet (s)"
    )
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk throughput rows")
    parser.add_argument("--wrk-duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--atrium-ref",
        help="run atrium/ as of this git commit (exported to bench/.work) instead of the tree",
    )
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument(
        "--calibration-requests",
        type=int,
        default=1000,
        help="requests per client when comparing clients direct to nginx (0: skip)",
    )
    args = parser.parse_args()
    return Options(
        peers_dir=args.peers_dir.resolve(),
        requests=args.requests,
        warmup=args.warmup,
        wrk=not args.no_wrk,
        wrk_duration_s=args.wrk_duration,
        wrk_connections=args.wrk_connections,
        wrk_threads=args.wrk_threads,
        calibration=args.calibration_requests,
        blocks=args.blocks,
        max_foreign_cores=args.max_foreign_cores,
        quiet_timeout_s=args.quiet_timeout,
        atrium_ref=args.atrium_ref,
    )


# -- tools --------------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """A program on PATH or in /usr/sbin (where Debian puts nginx)."""
    found = shutil.which(name)
    if found:
        return found
    sbin = Path("/usr/sbin") / name
    return str(sbin) if sbin.is_file() else None


def ensure_tools(want_wrk: bool) -> tuple[str, str | None]:
    """nginx (required) and wrk (optional), installed with apt-get when running as root."""
    wanted = ["nginx", "wrk"] if want_wrk else ["nginx"]
    missing = [name for name in wanted if find_tool(name) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    nginx = find_tool("nginx")
    if nginx is None:
        sys.exit(
            "nginx is needed for the mock upstream: install it (apt-get install -y nginx wrk) "
            "or run this script as root so that it can."
        )
    wrk = find_tool("wrk") if want_wrk else None
    if want_wrk and wrk is None:
        print("wrk is not installed: skipping the throughput rows", file=sys.stderr)
    return nginx, wrk


def tool_version(argv: list[str]) -> str | None:
    """The first line a ``-v``/``--version`` style command prints."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else None


# -- the mock upstream --------------------------------------------------------------


@dataclass(frozen=True)
class MockPorts:
    """Where nginx answers: fixed JSON and a fixed SSE stream."""

    json: int
    sse: int


def nginx_config(template: str, run_dir: Path, ports: MockPorts) -> str:
    """The peers' nginx.conf with RUN, PORT_JSON and PORT_SSE filled in.

    ``daemon off`` keeps the master as our child, so it is stopped by its PID.
    """
    text = template.replace("PORT_JSON", str(ports.json)).replace("PORT_SSE", str(ports.sse))
    text = text.replace("RUN", str(run_dir)).replace("daemon on;", "daemon off;")
    if str(ports.json) not in text or str(ports.sse) not in text:
        msg = "nginx.conf template lacks PORT_JSON/PORT_SSE placeholders"
        raise ValueError(msg)
    return text


@contextmanager
def nginx_mock(nginx: str, peers_dir: Path, run_dir: Path) -> Iterator[MockPorts]:
    """Start nginx with the peers' mock config; stop it on the way out."""
    template = (peers_dir / "mock" / "nginx.conf").read_text()
    ports = MockPorts(json=free_port(), sse=free_port())
    for sub in ("body", "proxy", "fcgi", "uwsgi", "scgi"):
        (run_dir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    conf = run_dir / "nginx.conf"
    conf.write_text(nginx_config(template, run_dir, ports))
    argv = [nginx, "-c", str(conf), "-p", f"{run_dir}/", "-e", str(run_dir / "nginx-error.log")]
    with managed(ManagedProcess("nginx", argv, run_dir / "nginx.log")) as process:
        wait_http_ok(ports.json, CHAT_PATH, process, timeout=10)
        wait_http_ok(ports.sse, CHAT_PATH, process, timeout=10)
        yield ports


# -- sequential latency -------------------------------------------------------------


def chat_body(model: str, *, stream: bool) -> bytes:
    """The small chat request of the peers' wrk script."""
    tail = ',"stream":true' if stream else ""
    return (
        f'{{"model":"{model}","messages":[{{"role":"user","content":"{PROMPT}"}}],'
        f'"max_tokens":16{tail}}}'
    ).encode()


def headers_for(key: str) -> dict[str, str]:
    """The same headers for nginx (which ignores them) and Atrium."""
    return {"content-type": "application/json", "authorization": f"Bearer {key}"}


def check_answer(status: int, body: bytes, *, stream: bool) -> None:
    """Fail loudly on a wrong answer: a fast error is not a fast answer."""
    ok = status == 200 and (body.endswith(DONE_TAIL) if stream else b'"choices"' in body)
    if not ok:
        msg = f"unexpected answer: {status} {body[:300]!r}"
        raise RuntimeError(msg)


class KeepAliveClient:
    """Sequential requests to one target over one persistent ``http.client`` connection.

    The stdlib client has the lowest and steadiest overhead of the candidates (see
    the calibration in the results); the same client serves both targets, so its
    cost cancels out of the difference.
    """

    def __init__(self, port: int, body: bytes, headers: dict[str, str], *, stream: bool) -> None:
        self.port = port
        self.body = body
        self.headers = headers
        self.stream = stream
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
        except ConnectionError:
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


def sequential_httpx(port: int, body: bytes, headers: dict[str, str], n: int) -> list[float]:
    """The same loop with a sync ``httpx.Client`` (only to compare clients)."""
    samples: list[float] = []
    clock = time.perf_counter_ns
    with httpx.Client(base_url=f"http://{LOOPBACK}:{port}", headers=headers) as client:
        gc.disable()
        try:
            for _ in range(n):
                started = clock()
                response = client.post(CHAT_PATH, content=body)
                elapsed = clock() - started
                check_answer(response.status_code, response.content, stream=False)
                samples.append(elapsed / 1e6)
        finally:
            gc.enable()
    return samples


def calibrate_clients(ports: MockPorts, key: str, options: Options) -> JSONDict:
    """Each candidate client's latency direct to nginx: mostly its own overhead."""
    body, headers, n = chat_body("mock-gpt", stream=False), headers_for(key), options.calibration
    result: JSONDict = {"quiet": wait_for_quiet(**options.quiet)}
    client = KeepAliveClient(ports.json, body, headers, stream=False)
    try:
        client.warm(min(200, n))
        result["http.client"] = summary(client.timed(n))
    finally:
        client.close()
    result["httpx"] = summary(sequential_httpx(ports.json, body, headers, min(200, n) + n)[-n:])
    return result


def added(direct: JSONDict, through: JSONDict) -> JSONDict:
    """Through-minus-direct at each percentile (and the mean), in ms."""
    keys = ["mean", *(k for k in direct if k.startswith("p"))]
    return {k: round(through[k] - direct[k], 4) for k in keys}


def measure_sequential(
    ports: MockPorts, server: AtriumServer, options: Options, *, stream: bool
) -> JSONDict:
    """Direct and through Atrium in alternating blocks, then the difference.

    Blocks alternate which target goes first, and each starts once the machine is
    quiet, so that noise from other work lands on both samples alike.
    """
    model, upstream = ("mock-gpt-sse", ports.sse) if stream else ("mock-gpt", ports.json)
    body, headers = chat_body(model, stream=stream), headers_for(server.key)
    direct = KeepAliveClient(upstream, body, headers, stream=stream)
    through = KeepAliveClient(server.port, body, headers, stream=stream)
    per_block = math.ceil(options.requests / options.blocks)
    blocks: list[JSONDict] = []
    try:
        direct.warm(options.warmup)
        through.warm(options.warmup)
        for index in range(options.blocks):
            quiet = wait_for_quiet(**options.quiet)
            direct.warm(REWARM)
            through.warm(REWARM)
            meter = ForeignLoad().start()
            for client in (direct, through) if index % 2 == 0 else (through, direct):
                client.samples.extend(client.timed(per_block))
            blocks.append({**quiet, "foreign_cores_during": meter.stop()})
    finally:
        direct.close()
        through.close()
    direct_summary, through_summary = summary(direct.samples), summary(through.samples)
    return {
        "direct": direct_summary,
        "atrium": through_summary,
        "added": added(direct_summary, through_summary),
        "connections_opened": {
            "direct": direct.connections_opened,
            "atrium": through.connections_opened,
        },
        "blocks": blocks,
    }


# -- wrk ----------------------------------------------------------------------------


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        msg = f"unexpected wrk latency {text!r}"
        raise ValueError(msg)
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> JSONDict:
    """Requests/s, latency percentiles and errors from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    latency = {
        f"p{q}": round(_wrk_ms(v), 3)
        for q, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.MULTILINE)
    }
    return {
        "requests_per_s": float(rps.group(1)) if rps else None,
        "requests": int(total.group(1)) if total else None,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1).strip() if socket_errors else None,
        "latency_ms": latency,
    }


def run_wrk(wrk: str, lua: Path, port: int, model: str, key: str, options: Options) -> JSONDict:
    """One wrk run with the peers' chat.lua."""
    stream = model.endswith("-sse")
    env = {**os.environ, "MODEL": model, "AUTH": key, "STREAM": "1" if stream else "0"}
    argv = [
        wrk,
        f"-t{options.wrk_threads}",
        f"-c{options.wrk_connections}",
        f"-d{options.wrk_duration_s}s",
        "--latency",
        "-s",
        str(lua),
        f"http://{LOOPBACK}:{port}{CHAT_PATH}",
    ]
    quiet = wait_for_quiet(**options.quiet)
    meter = ForeignLoad().start()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=env,
        timeout=options.wrk_duration_s + 60,
        check=False,
    )
    if done.returncode != 0:
        msg = f"wrk failed ({done.returncode}): {done.stderr or done.stdout}"
        raise RuntimeError(msg)
    return {**parse_wrk(done.stdout), **quiet, "foreign_cores_during": meter.stop()}


def measure_wrk(
    wrk: str, lua: Path, ports: MockPorts, server: AtriumServer, options: Options
) -> JSONDict:
    """Throughput direct and through Atrium, non-streaming and streaming."""
    result: JSONDict = {}
    for kind, model, upstream in (
        ("non_streaming", "mock-gpt", ports.json),
        ("streaming", "mock-gpt-sse", ports.sse),
    ):
        print(f"wrk {kind} ...", flush=True)
        result[kind] = {
            "direct": run_wrk(wrk, lua, upstream, model, server.key, options),
            "atrium": run_wrk(wrk, lua, server.port, model, server.key, options),
        }
    return result


# -- report -------------------------------------------------------------------------


def latency_rows(sequential: JSONDict) -> list[list[str]]:
    """Direct, through and added rows for each kind of request."""
    rows = []
    for kind, label in (("non_streaming", "non-streaming"), ("streaming", "streaming")):
        if kind not in sequential:
            continue
        result = sequential[kind]
        for target, name in (
            ("direct", "direct to nginx"),
            ("atrium", "through Atrium"),
            ("added", "**added by Atrium**"),
        ):
            values = result[target]
            rows.append([label, name, *(ms(values[p], 3) for p in ("p50", "p95", "p99"))])
    return rows


def foreign_range(sequential: JSONDict) -> str:
    """The least and most foreign load seen during any block."""
    loads = [b["foreign_cores_during"] for r in sequential.values() for b in r["blocks"]]
    return f"{min(loads):.2f}-{max(loads):.2f}" if loads else "-"


def wrk_rows(wrk: JSONDict) -> list[list[str]]:
    """One row per wrk run."""
    rows = []
    for kind, label in (("non_streaming", "non-streaming"), ("streaming", "streaming")):
        for target, name in (("direct", "direct to nginx"), ("atrium", "through Atrium")):
            run = wrk[kind][target]
            lat = run["latency_ms"]
            errors = f"{run['non_2xx']} non-2xx" + (
                f", {run['socket_errors']}" if run["socket_errors"] else ""
            )
            rows.append(
                [
                    label,
                    name,
                    ms(run["requests_per_s"], 0),
                    ms(lat.get("p50")),
                    ms(lat.get("p99")),
                    errors,
                    ms(run["foreign_cores_during"]),
                ]
            )
    return rows


def render_markdown(data: JSONDict) -> str:
    """The results as Markdown tables."""
    settings, machine = data["settings"], data["machine"]
    commit = (machine["atrium"]["commit"] or "unknown")[:12]
    dirty = " (with local edits in atrium/)" if machine["atrium"]["atrium_dirty"] else ""
    parts = [
        f"Gateway overhead, {machine['timestamp_utc']}: {machine['cpu_model']}, "
        f"{machine['cpu_count']} cores, Python {machine['python']}, atrium {commit}{dirty}.",
        "",
        f"Sequential requests, one keep-alive connection per target (stdlib http.client): "
        f"{settings['requests']:,} timed per target after {settings['warmup']:,} warm-up, "
        f"in {settings['blocks']} blocks alternating direct and Atrium. Latency in ms; "
        "added = percentile through Atrium minus the same percentile direct.",
        "",
        markdown_table(
            ["request", "target", "p50", "p95", "p99"], latency_rows(data["sequential"])
        ),
    ]
    target = data["target"]
    verdict = "met" if target["met"] else "**missed**"
    parts += [
        "",
        f"Target: p50 added under {TARGET_P50_ADDED_MS:g} ms (non-streaming): "
        f"{target['p50_added_ms']:.3f} ms, {verdict}. Other work on the machine during "
        f"the blocks: {foreign_range(data['sequential'])} cores.",
    ]
    if data.get("wrk"):
        wrk = settings["wrk"]
        parts += [
            "",
            f"Throughput: `wrk -t{wrk['threads']} -c{wrk['connections']} "
            f"-d{wrk['duration_s']}s` with the peers' chat.lua (latency in ms).",
            "",
            markdown_table(
                ["request", "target", "requests/s", "p50", "p99", "errors", "other work, cores"],
                wrk_rows(data["wrk"]),
            ),
        ]
    return "\n".join(parts)


# -- main ---------------------------------------------------------------------------


def atrium_models(ports: MockPorts) -> JSONDict:
    """Only the mock models: the bundled ones would only slow startup."""
    return {
        "mock-gpt": {"backend": "openai_compat", "base_url": f"http://{LOOPBACK}:{ports.json}/v1"},
        "mock-gpt-sse": {
            "backend": "openai_compat",
            "base_url": f"http://{LOOPBACK}:{ports.sse}/v1",
        },
    }


def run(options: Options) -> JSONDict:
    """Everything, with every process stopped on the way out."""
    source = atrium_source(options.atrium_ref)
    nginx, wrk = ensure_tools(options.wrk)
    lua = options.peers_dir / "mock" / "chat.lua"
    run_dir = WORK_DIR / NAME
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        ports = stack.enter_context(nginx_mock(nginx, options.peers_dir, run_dir / "nginx"))
        print(f"nginx mock on {ports.json} (JSON) and {ports.sse} (SSE)", flush=True)
        server = AtriumServer(run_dir / "atrium", atrium_models(ports), source=source.path)
        stack.enter_context(atrium_server(server))
        print(f"atrium serve on {server.port} (pid {server.pid})", flush=True)
        process: JSONDict = {"rss_mib_ready": rss_mib(server.pid)}
        calibration = {}
        if options.calibration:
            print("comparing clients direct to nginx ...", flush=True)
            calibration = calibrate_clients(ports, server.key, options)
        sequential: JSONDict = {}
        for stream in (False, True):
            kind = "streaming" if stream else "non_streaming"
            print(f"sequential {kind} ...", flush=True)
            sequential[kind] = measure_sequential(ports, server, options, stream=stream)
        process["rss_mib_after_sequential"] = rss_mib(server.pid)
        wrk_results = measure_wrk(wrk, lua, ports, server, options) if wrk else None
        process["rss_mib_end"] = rss_mib(server.pid)
        process["threads_end"] = thread_count(server.pid)
        config = {k: v for k, v in server.config.items() if k != "data_dir"}
    p50_added = sequential["non_streaming"]["added"]["p50"]
    return {
        "benchmark": NAME,
        "machine": machine_facts(
            source,
            nginx=tool_version([nginx, "-v"]),
            wrk=tool_version([wrk, "-v"]) if wrk else None,
        ),
        "settings": {
            "peers_dir": str(options.peers_dir),
            "requests": options.requests,
            "warmup": options.warmup,
            "blocks": options.blocks,
            "rewarm_per_block": REWARM,
            "calibration_requests": options.calibration,
            "quiet": options.quiet,
            "client": CLIENT,
            "request_body": chat_body("mock-gpt", stream=False).decode(),
            "atrium_config": config,
            "auth": "bootstrap admin key via ATRIUM_AUTH__BOOTSTRAP_KEY (Bearer on every request)",
            "added_latency_method": (
                "percentile of the through-Atrium sample minus the same percentile of the "
                "direct sample (the two samples are independent, not paired per request)"
            ),
            "wrk": {
                "threads": options.wrk_threads,
                "connections": options.wrk_connections,
                "duration_s": options.wrk_duration_s,
                "script": str(lua),
            },
        },
        "client_calibration_direct_ms": calibration,
        "latency_unit": "ms",
        "sequential": sequential,
        "wrk": wrk_results,
        "atrium_process": process,
        "target": {
            "p50_added_ms_under": TARGET_P50_ADDED_MS,
            "p50_added_ms": p50_added,
            "met": p50_added < TARGET_P50_ADDED_MS,
        },
    }


def main() -> None:
    """Run the benchmark, write the results and print the table."""
    options = parse_options()
    if not (options.peers_dir / "mock" / "nginx.conf").is_file():
        sys.exit(f"no mock/nginx.conf under {options.peers_dir} (see --peers-dir)")
    data = run(options)
    markdown = render_markdown(data)
    json_path, md_path = write_results(NAME, data, markdown)
    print()
    print(markdown)
    print(f"\nwrote {json_path.relative_to(REPO)} and {md_path.relative_to(REPO)}")


if __name__ == "__main__":
    run_main(main)
