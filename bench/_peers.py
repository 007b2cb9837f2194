"""The peers' kit for the overhead benchmark: mock upstream, load tool and gateways.

Everything here follows ``<repo>/../shared/peers/README.md``:

- **Mock upstream**: nginx with the peers' ``mock/nginx.conf`` (fixed JSON on one port,
  a fixed SSE stream on another), run in the foreground as the bench's child.
- **Load**: ``wrk`` with the peers' ``mock/chat.lua`` (``MODEL``, ``STREAM``, ``AUTH``,
  ``PK_HOST``, ``STOP_AFTER``).
- **Gateways**, one adapter each with the same surface: install (peers only, into a
  throwaway folder under ``bench/.work/peers/``, reused when already there), start on
  127.0.0.1 as a child in its own session, the PID whose process tree holds its memory,
  and a :class:`Route` per kind of request (port, model, headers, chat.lua's environment):

  - Atrium: ``atrium serve`` (see :class:`_common.AtriumServer`);
  - Portkey gateway (npm ``@portkey-ai/gateway``): no gateway key; the provider and the
    mock's base URL travel in ``x-portkey-*`` headers on every request;
  - LiteLLM proxy (PyPI ``litellm``, in its own virtual environment): the peers'
    ``config.yaml`` with the mock's ports filled in, a fresh master key per run.

- **Per-key limits across replicas**: two Atrium replicas on a throwaway PostgreSQL
  database and one Redis; what the peers support instead, with the evidence.
"""

from __future__ import annotations

import abc
import asyncio
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _common import (
    LOOPBACK,
    NEVER_LIMITS,
    WORK_DIR,
    AtriumServer,
    ForeignLoad,
    JSONDict,
    ManagedProcess,
    atrium_server,
    command_version,
    free_port,
    log_tail,
    managed,
    tree_cpu_seconds,
    wait_for_quiet,
    wait_http_ok,
)

CHAT_PATH = "/v1/chat/completions"
PEERS_WORK = WORK_DIR / "peers"
PORTKEY_VERSION = "1.15.2"
LITELLM_VERSION = "1.110.2"
INSTALL_TIMEOUT_S = 1800


@dataclass(frozen=True)
class MockPorts:
    """Where nginx answers: fixed JSON and a fixed SSE stream."""

    json: int
    sse: int


@dataclass(frozen=True)
class Route:
    """Where and how to send one kind of chat request (to a gateway or to nginx)."""

    port: int
    model: str
    stream: bool
    key: str
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """Headers of every request: JSON body, bearer key, the gateway's own headers."""
        return {
            "content-type": "application/json",
            "authorization": f"Bearer {self.key}",
            **self.extra_headers,
        }

    @property
    def wrk_env(self) -> dict[str, str]:
        """The environment the peers' ``chat.lua`` reads (``PK_HOST`` only for Portkey)."""
        env = {"MODEL": self.model, "STREAM": "1" if self.stream else "0", "AUTH": self.key}
        if "x-portkey-custom-host" in self.extra_headers:
            env["PK_HOST"] = self.extra_headers["x-portkey-custom-host"]
        return env


def direct_route(ports: MockPorts, key: str, *, stream: bool) -> Route:
    """Straight to nginx, with the same body and bearer as through Atrium."""
    if stream:
        return Route(ports.sse, "mock-gpt-sse", True, key)
    return Route(ports.json, "mock-gpt", False, key)


def _run_logged(argv: list[str], log: Path, *, cwd: Path, timeout: float) -> None:
    """Run an install step, appending its output to ``log``; fail with the log's end."""
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(
            argv,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    if done.returncode != 0:
        msg = f"{argv[0]} exited {done.returncode}; end of {log}:\n{log_tail(log, 25)}"
        raise RuntimeError(msg)


# -- tools and the mock upstream --------------------------------------------------------


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
        print("wrk is not installed: skipping throughput and memory soak", file=sys.stderr)
    return nginx, wrk


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
    total = re.search(r"(\d+) requests in ([\d.]+)([a-z]+)", output)
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


def run_wrk(
    wrk: str,
    lua: Path,
    route: Route,
    *,
    threads: int,
    connections: int,
    duration_s: int,
    quiet: JSONDict,
    stop_after: int = 0,
    watch_pid: int | None = None,
) -> JSONDict:
    """One wrk run with the peers' chat.lua.

    With ``stop_after`` each thread stops after that many answers (chat.lua's
    ``STOP_AFTER``, which leaves a flag file per thread); wrk itself only ends at
    ``-d``, so once every thread's flag is there it gets SIGINT and prints its totals.
    ``watch_pid``: a gateway whose process tree's CPU use (in cores) is recorded too.
    """
    env = {**os.environ, **route.wrk_env, "STOP_AFTER": str(stop_after)}
    flags = [Path(f"/tmp/wrk-stopflag.{tid}") for tid in range(1, threads + 1)]
    for flag in flags:
        flag.unlink(missing_ok=True)
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s"]
    argv += ["--latency", "-s", str(lua), f"http://{LOOPBACK}:{route.port}{CHAT_PATH}"]
    waited = wait_for_quiet(**quiet)
    meter = ForeignLoad().start()
    started = time.monotonic()
    cpu_before = tree_cpu_seconds(watch_pid) if watch_pid else 0.0
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            while stop_after and process.poll() is None:
                if all(flag.exists() for flag in flags):
                    process.send_signal(signal.SIGINT)
                    break
                time.sleep(0.1)
            stdout, stderr = process.communicate(timeout=duration_s + 60)
        except BaseException:
            process.kill()
            raise
    wall = time.monotonic() - started
    cpu = tree_cpu_seconds(watch_pid) - cpu_before if watch_pid else None
    if process.returncode != 0:
        msg = f"wrk failed ({process.returncode}): {stderr or stdout}"
        raise RuntimeError(msg)
    stopped_early = bool(stop_after) and all(flag.exists() for flag in flags)
    for flag in flags:
        flag.unlink(missing_ok=True)
    result = {**parse_wrk(stdout), **waited, "foreign_cores_during": meter.stop()}
    result |= {"connections": connections, "wall_s": round(wall, 1)}
    if cpu is not None:
        result["gateway_cores"] = round(cpu / wall, 2)
        if result["requests"]:
            result["gateway_cpu_ms_per_request"] = round(cpu / result["requests"] * 1000, 3)
    if stop_after:
        result["reached_stop_after"] = stopped_early
    return result


class Gateway(abc.ABC):
    """One gateway under test."""

    name: str
    label: str
    auth: str

    def __init__(self, run_dir: Path, ports: MockPorts) -> None:
        self.run_dir = run_dir
        self.ports = ports
        self.port = free_port()
        self.process: ManagedProcess | None = None
        # Each start runs in its own folder (config, data, log): run_dir / phase.
        self.phase = "run"

    @property
    def phase_dir(self) -> Path:
        """The folder of the current start."""
        return self.run_dir / self.phase

    def install(self) -> JSONDict:
        """Install into the gateway's throwaway folder (or reuse it); facts for the results."""
        return {}

    @abc.abstractmethod
    def start(self) -> None:
        """Start on 127.0.0.1:``port`` and wait until it answers."""

    @abc.abstractmethod
    def route(self, *, stream: bool) -> Route:
        """How to send a chat request of this kind through the gateway."""

    def facts(self) -> JSONDict:
        """Command line, configuration and version, for the results."""
        return {}

    @property
    def pid(self) -> int:
        """The PID at the top of the gateway's process tree."""
        assert self.process is not None, f"{self.name} is not started"
        return self.process.pid

    def stop(self) -> None:
        """Stop every process of the gateway."""
        if self.process is not None:
            self.process.stop()


class AtriumGateway(Gateway):
    """``atrium serve`` with only the mock models (key auth on, limits never reached)."""

    name, label = "atrium", "Atrium"
    auth = "Atrium API key (bootstrap admin key), rate limiter on with limits never reached"

    def __init__(self, run_dir: Path, ports: MockPorts, source: Path | None) -> None:
        super().__init__(run_dir, ports)
        self.source = source
        self.server = self._server()

    #: Settings sections beyond the defaults (a variant of Atrium).
    extra: JSONDict = {}

    def _server(self) -> AtriumServer:
        return AtriumServer(
            self.phase_dir, atrium_models(self.ports), source=self.source, port=self.port,
            extra=self.extra,
        )  # fmt: skip

    def start(self) -> None:
        """Start ``atrium serve`` (a fresh data folder) and wait for /readyz."""
        key = self.server.key
        self.server = self._server()
        self.server.key = key
        self.server.start()
        self.process = self.server.process

    def route(self, *, stream: bool) -> Route:
        """The mock models by their Atrium names, with the bootstrap key."""
        return Route(self.port, "mock-gpt-sse" if stream else "mock-gpt", stream, self.server.key)

    def facts(self) -> JSONDict:
        """The generated settings (the key travels in the environment)."""
        return {
            "argv": self.process.argv if self.process else None,
            "config": {k: v for k, v in self.server.config.items() if k != "data_dir"},
        }


class AtriumNoInferenceAuditGateway(AtriumGateway):
    """Atrium with ``audit.record_inference`` off: beside ``atrium``, what writing each
    request's audit entry (off the request, from its ``request.completed`` event) costs."""

    name, label = "atrium-noaudit", "Atrium, inference audit off"
    extra: JSONDict = {"audit": {"record_inference": False}}


def atrium_models(ports: MockPorts) -> JSONDict:
    """Only the mock models: the bundled ones would only slow startup."""
    return {
        "mock-gpt": {"backend": "openai_compat", "base_url": f"http://{LOOPBACK}:{ports.json}/v1"},
        "mock-gpt-sse": {
            "backend": "openai_compat",
            "base_url": f"http://{LOOPBACK}:{ports.sse}/v1",
        },
    }


class PortkeyGateway(Gateway):
    """The Portkey gateway from npm, with the peers' two preload files."""

    name, label = "portkey", "Portkey"
    auth = "none at the gateway (the bearer is forwarded to the upstream as its key)"

    def __init__(self, run_dir: Path, ports: MockPorts, peers_dir: Path) -> None:
        super().__init__(run_dir, ports)
        self.peers_dir = peers_dir
        self.folder = PEERS_WORK / "portkey"
        self.key = "sk-bench-" + secrets.token_hex(12)
        self.node_options = "--require ./force-loopback.cjs --require ./mutable-fetch.cjs"

    def installed_version(self) -> str | None:
        """The version under node_modules, if any."""
        manifest = self.folder / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
        try:
            version: str = json.loads(manifest.read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None
        return version

    def install(self) -> JSONDict:
        """``npm init -y && npm install @portkey-ai/gateway@VERSION``, then the .cjs files."""
        started = time.monotonic()
        reused = self.installed_version() == PORTKEY_VERSION
        if not reused:
            npm = shutil.which("npm")
            if npm is None:
                msg = "npm is not installed"
                raise RuntimeError(msg)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            log = self.folder / "install.log"
            _run_logged([npm, "init", "-y"], log, cwd=self.folder, timeout=120)
            _run_logged(
                [npm, "install", f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
                log,
                cwd=self.folder,
                timeout=INSTALL_TIMEOUT_S,
            )
        # Copied at every run, so that the peers' current files are the ones used.
        preloads = sorted((self.peers_dir / "portkey").glob("*.cjs"))
        if len(preloads) < 2:
            msg = f"expected the two preload .cjs files in {self.peers_dir / 'portkey'}"
            raise RuntimeError(msg)
        for preload in preloads:
            shutil.copyfile(preload, self.folder / preload.name)
        return {
            "package": f"@portkey-ai/gateway@{self.installed_version()}",
            "folder": str(self.folder),
            "reused_install": reused,
            "install_s": round(time.monotonic() - started, 1),
            "preloads": [p.name for p in preloads],
            "node": command_version(["node", "--version"]),
        }

    def start(self) -> None:
        """``npx --offline @portkey-ai/gateway --port=PORT --headless`` with the preloads."""
        npx = shutil.which("npx") or "npx"
        env = {**os.environ, "NODE_OPTIONS": self.node_options}
        argv = [npx, "--offline", "@portkey-ai/gateway", f"--port={self.port}", "--headless"]
        self.process = ManagedProcess(
            "portkey gateway", argv, self.phase_dir / "portkey.log", env=env, cwd=self.folder
        )
        self.process.start()
        wait_http_ok(self.port, "/", self.process, timeout=120)

    def route(self, *, stream: bool) -> Route:
        """Any model name; the provider and the mock's URL in Portkey's headers."""
        upstream = self.ports.sse if stream else self.ports.json
        headers = {
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": f"http://{LOOPBACK}:{upstream}/v1",
        }
        return Route(self.port, "mock-gpt", stream, self.key, headers)

    def facts(self) -> JSONDict:
        """Command line and NODE_OPTIONS."""
        return {
            "argv": self.process.argv if self.process else None,
            "NODE_OPTIONS": self.node_options,
            "cwd": str(self.folder),
        }


class LiteLLMGateway(Gateway):
    """The LiteLLM proxy from PyPI, in its own virtual environment."""

    name, label = "litellm", "LiteLLM"
    auth = "LiteLLM master key (no database: virtual keys are unavailable)"

    def __init__(self, run_dir: Path, ports: MockPorts, peers_dir: Path) -> None:
        super().__init__(run_dir, ports)
        self.peers_dir = peers_dir
        self.folder = PEERS_WORK / "litellm"
        self.venv = self.folder / ".venv"
        self.key = "sk-" + secrets.token_hex(12)

    @property
    def config_path(self) -> Path:
        """The filled-in config of the current start."""
        return self.phase_dir / "config.yaml"

    def installed_version(self) -> str | None:
        """litellm's version in the peer's environment, if installed."""
        python = self.venv / "bin" / "python"
        if not (self.venv / "bin" / "litellm").is_file() or not python.is_file():
            return None
        return command_version(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
        )

    def install(self) -> JSONDict:
        """``python3 -m venv`` and ``pip install litellm==VERSION -r proxy-requirements.txt``."""
        started = time.monotonic()
        requirements = self.peers_dir / "litellm" / "proxy-requirements.txt"
        if not requirements.is_file():
            msg = f"missing {requirements}"
            raise RuntimeError(msg)
        reused = self.installed_version() == LITELLM_VERSION
        if not reused:
            python = shutil.which("python3")
            if python is None:
                msg = "python3 is not on PATH"
                raise RuntimeError(msg)
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            log = self.folder / "install.log"
            _run_logged([python, "-m", "venv", str(self.venv)], log, cwd=self.folder, timeout=300)
            pip = [str(self.venv / "bin" / "pip"), "install", "--disable-pip-version-check"]
            _run_logged(
                [*pip, f"litellm=={LITELLM_VERSION}", "-r", str(requirements)],
                log,
                cwd=self.folder,
                timeout=INSTALL_TIMEOUT_S,
            )
        return {
            "package": f"litellm=={self.installed_version()}",
            "folder": str(self.folder),
            "reused_install": reused,
            "install_s": round(time.monotonic() - started, 1),
            "requirements": str(requirements),
            "python": command_version([str(self.venv / "bin" / "python"), "--version"]),
        }

    def write_config(self) -> str:
        """The peers' config.yaml with the mock's ports filled in."""
        template = (self.peers_dir / "litellm" / "config.yaml").read_text()
        text = template.replace("PORT_JSON", str(self.ports.json))
        text = text.replace("PORT_SSE", str(self.ports.sse))
        self.phase_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)
        return text

    def start(self) -> None:
        """``litellm --config config.yaml --host 127.0.0.1 --port PORT``."""
        self.write_config()
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env |= {"LITELLM_MASTER_KEY": self.key, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        argv = [
            str(self.venv / "bin" / "litellm"),
            "--config",
            str(self.config_path),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]
        self.process = ManagedProcess(
            "litellm proxy", argv, self.phase_dir / "litellm.log", env=env, cwd=self.phase_dir
        )
        self.process.start()
        wait_http_ok(self.port, "/health/liveliness", self.process, timeout=240)

    def route(self, *, stream: bool) -> Route:
        """The config's model names, with the master key."""
        return Route(self.port, "mock-gpt-stream" if stream else "mock-gpt", stream, self.key)

    def facts(self) -> JSONDict:
        """Command line and the config it ran with."""
        return {
            "argv": self.process.argv if self.process else None,
            "env": {"LITELLM_MASTER_KEY": "sk-<fresh>", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            "config": self.config_path.read_text() if self.config_path.is_file() else None,
        }

    def probe_key_limits(self, rpm: int) -> JSONDict:
        """Ask the running proxy for a key with an RPM limit, as a per-key test would.

        Without a database LiteLLM has nowhere to keep virtual keys; the answer (and the
        reason in its log) goes into the results.
        """
        body = json.dumps({"rpm_limit": rpm, "models": ["mock-gpt"]})
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        try:
            conn.request(
                "POST",
                "/key/generate",
                body,
                {"content-type": "application/json", "authorization": f"Bearer {self.key}"},
            )
            response = conn.getresponse()
            answer = response.read().decode(errors="replace")[:500]
        finally:
            conn.close()
        time.sleep(0.5)  # the log line follows the answer
        reason = None
        if self.process is not None and self.process.log_path.is_file():
            found = re.search(r"DB not connected[^'\"}]*", self.process.log_path.read_text())
            reason = found.group(0).strip() if found else None
        return {
            "request": "POST /key/generate " + body,
            "status": response.status,
            "answer": answer,
            "log_reason": reason,
        }


# What the per-key rate-limit test records for the peers that cannot run it.
PORTKEY_LIMITS = {
    "supported": False,
    "result": "not supported",
    "reason": (
        "the open-source Portkey gateway has no API keys of its own and no per-key rate "
        "limits (the bearer is forwarded to the provider); rate limits are a feature of "
        "Portkey's hosted/enterprise control plane"
    ),
}


def resolves(host: str) -> bool:
    """Whether ``host`` has an address (a download from it is possible at all)."""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def litellm_limits(probe: JSONDict | None, probe_error: str | None) -> JSONDict:
    """Why the two-proxy per-key test was skipped for LiteLLM, with the evidence."""
    return {
        "supported": False,
        "result": "skipped: needs a database",
        "reason": (
            "LiteLLM's per-key rpm_limit belongs to virtual keys made by POST /key/generate, "
            "which keeps them in PostgreSQL through Prisma (DATABASE_URL): the proxy answers "
            "'DB not connected' without one. The Prisma client is not part of the peers' "
            "install (it is litellm's 'extra_proxy' extra) and its query engine is "
            "downloaded from binaries.prisma.sh, which this machine cannot reach; Redis "
            "(router_settings redis_host/redis_port) only shares counters of limits that "
            "live on keys, so two proxies sharing Redis have no per-key limit to enforce."
        ),
        "probe": probe,
        "probe_error": probe_error,
        "binaries.prisma.sh_resolves": resolves("binaries.prisma.sh"),
    }


# -- per-key rate limits across two Atrium replicas ----------------------------------


def _pg_admin(server_url: str, statement: str) -> None:
    """One statement on the server's ``postgres`` database, outside a transaction."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def _forget_redis_prefix(redis_url: str, prefix: str) -> int:
    """Delete the buckets the run left in Redis (they also expire on their own)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def _create_key(server: AtriumServer, rpm: int) -> JSONDict:
    """``POST /v1/admin/keys`` with the bootstrap key: a key limited to ``rpm``."""
    response = httpx.post(
        f"http://{LOOPBACK}:{server.port}/v1/admin/keys",
        json={"name": f"bench-rpm-{rpm}", "rpm": rpm},
        headers={"authorization": f"Bearer {server.key}"},
        timeout=30,
    )
    if response.status_code != 201:
        msg = f"creating a key failed: {response.status_code} {response.text[:300]}"
        raise RuntimeError(msg)
    created: JSONDict = response.json()
    return created


async def _burst(routes: list[Route], count: int) -> tuple[list[tuple[int, int]], float]:
    """``count`` concurrent requests, request i to ``routes[i % len(routes)]``.

    Returns (route index, status) per request and the wall time of the whole burst.
    """
    clients = [
        httpx.AsyncClient(
            base_url=f"http://{LOOPBACK}:{route.port}",
            headers=route.headers,
            limits=httpx.Limits(max_connections=count, max_keepalive_connections=count),
            timeout=60,
        )
        for route in routes
    ]
    body = json.dumps(
        {"model": routes[0].model, "messages": [{"role": "user", "content": "limits"}]}
    )

    async def one(index: int) -> tuple[int, int]:
        which = index % len(routes)
        response = await clients[which].post(CHAT_PATH, content=body)
        return which, response.status_code

    started = time.perf_counter()
    try:
        statuses = await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()
    return list(statuses), time.perf_counter() - started


def atrium_replica_limits(
    run_dir: Path, ports: MockPorts, source: Path | None, rpm: int, pg_server: str, redis_url: str
) -> JSONDict:
    """Two ``atrium serve`` sharing a throwaway PostgreSQL database and one Redis.

    A key limited to ``rpm`` requests per minute gets ``3 * rpm`` concurrent requests,
    alternating between the replicas; a shared limit admits exactly ``rpm`` of them.
    """
    database = f"atrium_bench_{secrets.token_hex(4)}"
    prefix = f"atrium-bench-{database}:"
    limits: JSONDict = {"backend": "redis", "redis_prefix": prefix, **NEVER_LIMITS}
    count = 3 * rpm
    result: JSONDict = {
        "supported": True,
        "replicas": 2,
        "rpm": rpm,
        "requests": count,
        "spread": "request i to replica i % 2, all concurrent (httpx.AsyncClient per replica)",
        "store": f"{pg_server}/<throwaway database> (created and dropped by the bench)",
        "limits_config": limits,
    }
    _pg_admin(pg_server, f'CREATE DATABASE "{database}"')
    try:
        key = "atr-bench-" + secrets.token_hex(16)
        servers = [
            AtriumServer(
                run_dir / f"replica{i}",
                atrium_models(ports),
                limits=limits,
                key=key,
                source=source,
                store_url=f"{pg_server}/{database}",
            )
            for i in range(2)
        ]
        with ExitStack() as stack:
            for server in servers:  # one after the other: the first creates the tables
                stack.enter_context(atrium_server(server))
            created = _create_key(servers[0], rpm)
            result["key"] = {k: created.get(k) for k in ("id", "rpm", "tpm", "scopes")}
            routes = [Route(s.port, "mock-gpt", False, created["key"]) for s in servers]
            answers, duration = asyncio.run(_burst(routes, count))
    finally:
        _pg_admin(pg_server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        result["redis_keys_removed"] = _forget_redis_prefix(redis_url, prefix)
    statuses = [status for _, status in answers]
    admitted = statuses.count(200)
    result |= {
        "admitted": admitted,
        "refused_429": statuses.count(429),
        "other": {str(s): statuses.count(s) for s in sorted(set(statuses) - {200, 429})},
        "admitted_per_replica": [
            sum(1 for which, s in answers if which == i and s == 200) for i in range(2)
        ],
        "burst_s": round(duration, 3),
        "refill_during_burst": round(duration * rpm / 60, 3),
        "exact": admitted == rpm,
    }
    return result
