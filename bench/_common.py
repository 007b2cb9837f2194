"""Shared pieces of the benchmarks.

Starting and stopping ``atrium serve`` (and any other helper process) as a
subprocess, machine facts, percentile math and writing results as JSON plus a
Markdown table (also spliced into ``bench/README.md``).

Every process started here is started in its own session and stopped by its
own PID, on success, on error, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import http.client
import io
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "bench"
WORK_DIR = BENCH_DIR / ".work"
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"

LOOPBACK = "127.0.0.1"
# Limits high enough never to trigger, so the limiter runs but never refuses.
NEVER_LIMITS: dict[str, int] = {"default_rpm": 100_000_000, "default_tpm": 1_000_000_000}

JSONDict = dict[str, Any]


# -- signals and processes ----------------------------------------------------------


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def exit_cleanly_on_signals() -> None:
    """Turn SIGTERM (and SIGINT, even if inherited as ignored) into KeyboardInterrupt.

    Every ``finally`` then runs and stops the processes the bench started.
    """
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_main(main: Callable[[], None]) -> None:
    """Run a benchmark's ``main``; on Ctrl-C or SIGTERM, say so and exit 130."""
    exit_cleanly_on_signals()
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: every process the bench started is stopped", file=sys.stderr)
        sys.exit(130)


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, for error messages."""
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


_VARYING = re.compile(r"\b[0-9a-f]{8,}\b|\d+")


def log_summary(path: Path, top: int = 3) -> JSONDict:
    """How many lines a log has and its most frequent lines (numbers and ids masked as #).

    A gateway that logs a line per request, or a warning per request, shows here.
    """
    counts: collections.Counter[str] = collections.Counter()
    lines = 0
    if path.is_file():
        with path.open(errors="replace") as log:
            for line in log:
                lines += 1
                if text := _VARYING.sub("#", line.strip())[:240]:
                    counts[text] += 1
    return {
        "path": str(path),
        "lines": lines,
        "most_common": [{"count": n, "line": text} for text, n in counts.most_common(top)],
    }


@dataclass
class ManagedProcess:
    """A child process in its own session, logging to a file, stopped by its PID."""

    name: str
    argv: list[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (stdout and stderr go to ``log_path``)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # A new session: Ctrl-C in the terminal reaches only the bench, which then
            # stops its children in order instead of racing them.
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The child's PID (after ``start``)."""
        if self.process is None:
            msg = f"{self.name} is not started"
            raise RuntimeError(msg)
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def fail(self, why: str) -> RuntimeError:
        """An error that carries the end of the process's log."""
        return RuntimeError(
            f"{self.name} {why}; end of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL its process group.

        Children that outlive the leader (a launcher such as ``npx`` that forwards the
        signal to the server it started) get SIGTERM too, then SIGKILL after ``grace``.
        """
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if _signal_group(proc.pid, signal.SIGTERM):
            deadline = time.monotonic() + grace
            while _signal_group(proc.pid, 0) and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal_group(proc.pid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> bool:
    """Signal the process group ``pgid`` (ours: a child started in its own session).

    False when no process is left in it.
    """
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@contextlib.contextmanager
def managed(process: ManagedProcess) -> Iterator[ManagedProcess]:
    """Start ``process`` and stop it on the way out, whatever happens."""
    try:
        process.start()
        yield process
    finally:
        process.stop()


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (Linux), or None."""
    return _proc_status_kib(pid, "VmRSS", scale=1 / 1024)


def tree_rss(pid: int) -> JSONDict:
    """Resident memory of ``pid`` and every process below it, in MiB (Linux).

    ``total_mib`` is their sum (shared pages counted once per process, as ``ps`` does);
    ``processes`` lists each, largest first, with its command name.
    """
    found: list[tuple[float, int, str]] = []
    for member in sorted(_descendants(pid)):
        rss = rss_mib(member)
        if rss is None:
            continue
        try:
            name = Path(f"/proc/{member}/comm").read_text().strip()
        except OSError:
            name = "?"
        found.append((rss, member, name))
    found.sort(reverse=True)
    return {
        "total_mib": round(sum(rss for rss, _, _ in found), 1) if found else None,
        "processes": [{"pid": p, "name": n, "rss_mib": rss} for rss, p, n in found],
    }


def thread_count(pid: int) -> int | None:
    """Threads of a process (Linux), or None."""
    value = _proc_status_kib(pid, "Threads", scale=1)
    return int(value) if value is not None else None


def _proc_status_kib(pid: int, field_name: str, *, scale: float) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+)", text, re.MULTILINE)
    return round(int(match.group(1)) * scale, 1) if match else None


# -- CPU accounting: how busy the machine was with work that is not ours -----------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of a live process, all its threads."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(root: int) -> float:
    """User plus system CPU seconds of ``root`` and its live descendants (their threads)."""
    return sum(process_cpu_seconds(pid) or 0.0 for pid in _descendants(root))


def _descendants(root: int) -> set[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def _system_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine, from ``/proc/stat``."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _our_ticks() -> float:
    """CPU ticks used by this process, its live descendants and its reaped children."""
    live = tree_cpu_seconds(os.getpid())
    reaped = os.times()
    return (live + reaped.children_user + reaped.children_system) * CLOCK_TICKS


@dataclass
class ForeignLoad:
    """Measures how many cores, on average, ran work that is not this bench's.

    Other people's test runs on a shared machine show up here; a result measured
    while this is well above zero is a noisy result.
    """

    busy: int = 0
    total: int = 0
    ours: float = 0.0

    def start(self) -> ForeignLoad:
        """Open the window."""
        self.busy, self.total = _system_ticks()
        self.ours = _our_ticks()
        return self

    def stop(self) -> float:
        """Average foreign cores busy since ``start``."""
        busy, total = _system_ticks()
        ours = _our_ticks()
        if total <= self.total:
            return 0.0
        foreign = (busy - self.busy) - (ours - self.ours)
        cores = os.cpu_count() or 1
        return round(max(0.0, foreign / (total - self.total) * cores), 3)


def wait_for_quiet(
    max_foreign_cores: float = 0.25, window_s: float = 0.5, timeout_s: float = 60.0
) -> JSONDict:
    """Wait until other work uses under ``max_foreign_cores`` (or give up after a while)."""
    started = time.monotonic()
    while True:
        meter = ForeignLoad().start()
        time.sleep(window_s)
        foreign = meter.stop()
        waited = time.monotonic() - started
        if foreign < max_foreign_cores or waited >= timeout_s:
            return {"waited_s": round(waited, 2), "foreign_cores": foreign}


# -- HTTP on loopback ---------------------------------------------------------------


def connect(port: int, timeout: float = 30.0) -> http.client.HTTPConnection:
    """A persistent HTTP/1.1 connection to loopback, with Nagle off."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    conn.connect()
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def wait_http_ok(port: int, path: str, process: ManagedProcess, timeout: float) -> None:
    """Poll ``GET path`` until it answers 200; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not process.alive():
            raise process.fail("exited before it was ready")
        try:
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200:
                return
            last = f"{response.status} {body[:300]!r}"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise process.fail(f"was not ready after {timeout:.0f}s (last {path}: {last})")


# -- atrium serve -------------------------------------------------------------------


def atrium_argv() -> list[str]:
    """``atrium serve`` from the environment running the bench."""
    script = Path(sys.executable).with_name("atrium")
    if script.is_file():
        return [str(script), "serve"]
    return [sys.executable, "-m", "atrium.cli", "serve"]


@dataclass
class AtriumServer:
    """``atrium serve`` as a subprocess, configured by a YAML file (``ATRIUM_CONFIG``).

    Key auth is on (a fresh bootstrap key per run) and the limits are on with
    :data:`NEVER_LIMITS` unless ``limits`` says otherwise.
    """

    run_dir: Path
    models: JSONDict
    limits: JSONDict = field(default_factory=lambda: dict(NEVER_LIMITS))
    port: int = field(default_factory=free_port)
    key: str = field(default_factory=lambda: "atr-bench-" + secrets.token_hex(16))
    ready_timeout: float = 120.0
    # A tree holding an ``atrium`` package to run instead of the installed one.
    source: Path | None = None
    # SQLAlchemy URL of the store; None: SQLite in the run folder (one process only).
    store_url: str | None = None
    # More settings sections, as in the YAML file (a variant of the defaults).
    extra: JSONDict = field(default_factory=dict)
    process: ManagedProcess | None = None

    @property
    def config(self) -> JSONDict:
        """The settings written to the YAML file (the key travels in the environment)."""
        config: JSONDict = {
            "data_dir": str(self.run_dir / "data"),
            "server": {"host": LOOPBACK, "port": self.port},
            "limits": self.limits,
            "models": self.models,
        }
        if self.store_url is not None:
            config["store"] = {"url": self.store_url}
        return config | self.extra

    @property
    def config_path(self) -> Path:
        """Where the YAML settings are written."""
        return self.run_dir / "atrium.yaml"

    @property
    def pid(self) -> int:
        """The server's PID."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Write the config into a fresh run folder, start the server, wait for /readyz."""
        shutil.rmtree(self.run_dir / "data", ignore_errors=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        # Only our settings: stray ATRIUM_* variables from the caller would change the run.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
        env["ATRIUM_CONFIG"] = str(self.config_path)
        env["ATRIUM_AUTH__BOOTSTRAP_KEY"] = self.key
        if self.source is not None:
            # Ahead of the editable install, whose finder comes after sys.path.
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.source), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        self.process = ManagedProcess(
            "atrium serve", atrium_argv(), self.run_dir / "atrium.log", env=env, cwd=self.run_dir
        )
        self.process.start()
        wait_http_ok(self.port, "/readyz", self.process, self.ready_timeout)

    def stop(self) -> None:
        """Stop the server (graceful, then by force)."""
        if self.process is not None:
            self.process.stop()


@contextlib.contextmanager
def atrium_server(server: AtriumServer) -> Iterator[AtriumServer]:
    """Run ``server`` for the duration of the block."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- statistics ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation (numpy's default)."""
    if not values:
        msg = "percentile of no values"
        raise ValueError(msg)
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


SUMMARY_PERCENTILES = (1, 10, 25, 50, 75, 90, 95, 99, 99.9)


def summary(values: Sequence[float], digits: int = 4) -> JSONDict:
    """Count, mean, stdev, min, max and the percentiles in :data:`SUMMARY_PERCENTILES`."""
    result: JSONDict = {
        "n": len(values),
        "mean": round(statistics.fmean(values), digits),
        "stdev": round(statistics.stdev(values), digits) if len(values) > 1 else 0.0,
        "min": round(min(values), digits),
    }
    for q in SUMMARY_PERCENTILES:
        result[f"p{q:g}"] = round(percentile(values, q), digits)
    result["max"] = round(max(values), digits)
    return result


# -- machine facts ------------------------------------------------------------------


def _run_text(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).strip()
    return text or None


def command_version(argv: list[str]) -> str | None:
    """The first line a ``--version`` style command prints, or None."""
    text = _run_text(argv)
    return text.splitlines()[0] if text else None


def cpu_model() -> str:
    """The CPU's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total_mib() -> int | None:
    """Physical memory in MiB (Linux)."""
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def atrium_commit() -> JSONDict:
    """The git commit of the tree under test, and whether ``atrium/`` has local edits."""
    commit = _run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = _run_text(["git", "-C", str(REPO), "status", "--porcelain", "--", "atrium"])
    return {"commit": commit, "atrium_dirty": bool(dirty), "atrium_changes": dirty or ""}


@dataclass(frozen=True)
class AtriumSource:
    """Which Atrium the server runs: the working tree, or ``atrium/`` of a git commit."""

    ref: str | None = None
    commit: str | None = None
    path: Path | None = None

    def facts(self) -> JSONDict:
        """For the results: the commit and whether uncommitted edits were measured."""
        if self.path is None:
            return {"source": "working tree (installed editable)", **atrium_commit()}
        return {
            "source": f"git archive {self.ref} -- atrium (working tree edits not measured)",
            "commit": self.commit,
            "atrium_dirty": False,
            "atrium_changes": "",
        }


def atrium_source(ref: str | None) -> AtriumSource:
    """The working tree (``ref`` None) or ``atrium/`` of ``ref`` exported under .work/.

    Others may be editing the tree while a benchmark runs; a ref pins what is measured.
    """
    if ref is None:
        return AtriumSource()
    commit = _run_text(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"])
    if commit is None or not re.fullmatch(r"[0-9a-f]{40}", commit):
        msg = f"not a commit: {ref!r}"
        raise ValueError(msg)
    dest = WORK_DIR / "trees" / commit[:12]
    if not (dest / "atrium" / "__init__.py").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit, "atrium"],
            capture_output=True,
            check=True,
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
    return AtriumSource(ref=ref, commit=commit, path=dest)


def package_version(name: str) -> str | None:
    """An installed distribution's version, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_facts(source: AtriumSource, **extra: Any) -> JSONDict:
    """Facts that make a result comparable: CPU, cores, memory, Python, commit, load."""
    return {
        "timestamp_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_total_mib": memory_total_mib(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "atrium": {"version": package_version("atrium"), **source.facts()},
        "packages": {
            name: package_version(name)
            for name in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "httpx")
        },
        **extra,
    }


# -- results ------------------------------------------------------------------------


def ms(value: float | None, digits: int = 2) -> str:
    """A number for a table (``-`` when missing)."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: JSONDict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md`` and refresh the README."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS_DIR / f"{name}.json"
    md_path = RESULTS_DIR / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    update_readme(name, markdown)
    return json_path, md_path


def update_readme(name: str, markdown: str) -> bool:
    """Replace the README's section between ``<!-- results:name -->`` markers, if any."""
    if not README.is_file():
        return False
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    text = README.read_text()
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        return False
    new = text[: start + len(begin)] + "\n" + markdown.strip() + "\n" + text[stop:]
    README.write_text(new)
    return True
