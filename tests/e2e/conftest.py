"""End-to-end fixtures: ``atrium serve`` as a subprocess, driven by real clients.

Follows vLLM's ``RemoteOpenAIServer`` (``tests/utils.py``): a context manager that
starts the server on a free port, waits until it is ready, hands out clients and
stops it with SIGTERM. Each test module gets one server (module scope) and may
override ``server_env`` or ``server_config`` to start it with other settings.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import openai
import pytest
import yaml

ATRIUM = Path(sys.executable).with_name("atrium")
STARTUP_TIMEOUT_S = 90.0
START_ATTEMPTS = 3
SHUTDOWN_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.1
# Generous per-request limit: a hung server fails the test, it does not stall the suite.
REQUEST_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def new_secret() -> str:
    """A fresh key in Atrium's format (longer than the 40 characters asked of a bootstrap key)."""
    return "atr-e2e-" + secrets.token_urlsafe(32)


def hermetic_env(**extra: str) -> dict[str, str]:
    """This process's environment minus every ATRIUM_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRIUM_")}
    env.update(extra)
    return env


def poll_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


class WaitUntil(Protocol):
    """The type of the ``wait_until`` fixture."""

    def __call__(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""


class RemoteAtriumServer:
    """``atrium serve`` in a subprocess with its own data directory and port."""

    def __init__(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.api_key = new_secret()
        self.host = "127.0.0.1"
        overrides = {
            "ATRIUM_DATA_DIR": str(self.data_dir),
            "ATRIUM_SERVER__HOST": self.host,
            "ATRIUM_SERVER__PORT": str(self.port),
            "ATRIUM_AUTH__BOOTSTRAP_KEY": self.api_key,
            # Never read an atrium.yaml from the working directory by accident.
            "ATRIUM_CONFIG": str(workdir / "atrium.yaml"),
            **(env or {}),
        }
        if config is not None:
            (workdir / "atrium.yaml").write_text(yaml.safe_dump(dict(config)))
        self.env = hermetic_env(**overrides)
        self.stdout_path = workdir / "server.stdout"
        self.stderr_path = workdir / "server.stderr"
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        for _ in range(START_ATTEMPTS):
            self._start()
            try:
                if self._wait_ready():
                    return self
            except BaseException:
                self.stop()
                raise
            # Another process took the port between our check and the server's bind.
            self.port = free_port()
            self.env["ATRIUM_SERVER__PORT"] = str(self.port)
        pytest.fail(f"atrium serve found no free port in {START_ATTEMPTS} attempts")

    def _start(self) -> None:
        self.returncode = None
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                [str(ATRIUM), "serve"], cwd=self.workdir, env=self.env, stdout=out, stderr=err
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> bool:
        """True once ready; False if the port was taken; fails the test otherwise."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with httpx.Client(timeout=5.0) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self.returncode = self.process.returncode
                    if "address already in use" in self.stderr().lower():
                        return False
                    pytest.fail(
                        f"atrium serve exited with {self.returncode} before it was "
                        f"ready; stderr:\n{self.stderr()}"
                    )
                if self._answers_as_ours(http):
                    return True
                time.sleep(POLL_INTERVAL_S)
        pytest.fail(f"atrium serve not ready after {STARTUP_TIMEOUT_S}s; stderr:\n{self.stderr()}")

    def _answers_as_ours(self, http: httpx.Client) -> bool:
        # Ready, and knows our bootstrap key: not some other server on a reused port.
        auth = {"authorization": f"Bearer {self.api_key}"}
        try:
            return (
                http.get(self.url_for("readyz")).status_code == 200
                and http.get(self.url_for("v1", "models"), headers=auth).status_code == 200
            )
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """SIGTERM, wait for a graceful exit, kill after a timeout."""
        proc = self._proc
        if proc is None or self.returncode is not None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        self.returncode = proc.returncode

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The server process (after ``__enter__``)."""
        assert self._proc is not None, "the server was not started"
        return self._proc

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    # -- clients ------------------------------------------------------------------------

    @property
    def url_root(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    def url_for(self, *parts: str) -> str:
        """An absolute URL on the server: ``url_for("v1", "models")``."""
        return "/".join([self.url_root, *(p.strip("/") for p in parts)])

    def get_client(self, api_key: str | None = None, **kwargs: Any) -> openai.OpenAI:
        """The official client; no retries, so every error reaches the test as it came."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return openai.OpenAI(base_url=self.url_for("v1"), api_key=api_key or self.api_key, **kwargs)

    def get_async_client(self, api_key: str | None = None, **kwargs: Any) -> openai.AsyncOpenAI:
        """The official async client; no retries."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return openai.AsyncOpenAI(
            base_url=self.url_for("v1"), api_key=api_key or self.api_key, **kwargs
        )

    def http(self, api_key: str | None = None, **kwargs: Any) -> httpx.Client:
        """A raw HTTP client on the server root, sending ``api_key`` (the admin key by default).

        Pass ``api_key=""`` for a client that sends no Authorization header.
        """
        key = self.api_key if api_key is None else api_key
        headers = {"authorization": f"Bearer {key}"} if key else {}
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return httpx.Client(base_url=self.url_root, headers=headers, **kwargs)

    # -- command line -------------------------------------------------------------------

    def cli(
        self, *args: str, api_key: str | None = None, url: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``atrium ARGS`` as a user would in a shell: on this server's data directory,
        with ``ATRIUM_URL`` pointing at it (or at ``url``) and ``ATRIUM_API_KEY`` if given.
        """
        env = hermetic_env(
            ATRIUM_DATA_DIR=str(self.data_dir),
            ATRIUM_CONFIG=self.env["ATRIUM_CONFIG"],
            ATRIUM_URL=url or self.url_root,
        )
        env.pop("COLUMNS", None)  # not a terminal: rich's default width of 80
        if api_key is not None:
            env["ATRIUM_API_KEY"] = api_key
        return subprocess.run(  # noqa: PLW1510 - callers check returncode themselves
            [str(ATRIUM), *args],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    # -- admin API ----------------------------------------------------------------------

    def create_key(self, **fields: Any) -> dict[str, Any]:
        """``POST /v1/admin/keys`` with the bootstrap key; the record plus its ``key``."""
        fields.setdefault("name", f"e2e-{secrets.token_hex(4)}")
        with self.http() as http:
            resp = http.post("/v1/admin/keys", json=fields)
        assert resp.status_code == 201, resp.text
        created: dict[str, Any] = resp.json()
        return created

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """``DELETE /v1/admin/keys/{id}`` with the bootstrap key."""
        with self.http() as http:
            resp = http.delete(f"/v1/admin/keys/{key_id}")
        assert resp.status_code == 200, resp.text
        revoked: dict[str, Any] = resp.json()
        return revoked

    def list_keys(self) -> list[dict[str, Any]]:
        """``GET /v1/admin/keys`` with the bootstrap key."""
        with self.http() as http:
            resp = http.get("/v1/admin/keys")
        assert resp.status_code == 200, resp.text
        keys: list[dict[str, Any]] = resp.json()["data"]
        return keys


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """Extra ATRIUM_* variables for this module's server; override in a module."""
    return {}


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any] | None:
    """A YAML settings tree for this module's server (``ATRIUM_CONFIG``); override to set."""
    return None


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    server_env: dict[str, str],
    server_config: dict[str, Any] | None,
) -> Iterator[RemoteAtriumServer]:
    """One running ``atrium serve`` per test module; it must stop cleanly on SIGTERM."""
    workdir = tmp_path_factory.mktemp("atrium-e2e")
    with RemoteAtriumServer(workdir, env=server_env, config=server_config) as remote:
        yield remote
    stderr = remote.stderr()
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -SIGTERM is a clean exit too.
    assert remote.returncode in (0, -signal.SIGTERM), f"exit {remote.returncode}:\n{stderr}"
    assert "Application shutdown complete" in stderr, stderr


@pytest.fixture(autouse=True)
def _server_logs_no_unhandled_error(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test during which the server logged a traceback (a 500 or worse).

    The server logs an unhandled error before it answers, so by the time a test has
    its answer the log holds the traceback.
    """
    if "server" not in request.fixturenames:
        yield
        return
    remote: RemoteAtriumServer = request.getfixturevalue("server")
    start = remote.stderr_path.stat().st_size
    yield
    with remote.stderr_path.open("rb") as log:
        log.seek(start)
        new = log.read().decode(errors="replace")
    if "Traceback" in new:
        unhandled = [line for line in new.splitlines() if "unhandled error" in line]
        last_line = [line for line in new.splitlines() if line.strip()][-1]
        pytest.fail(
            f"the server logged an unhandled error during this test: {unhandled}; "
            f"last line: {last_line!r}; full log: {remote.stderr_path}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def client(server: RemoteAtriumServer) -> Iterator[openai.OpenAI]:
    """The official OpenAI client with the bootstrap (admin + inference) key."""
    with server.get_client() as openai_client:
        yield openai_client


@pytest.fixture(scope="module")
def http(server: RemoteAtriumServer) -> Iterator[httpx.Client]:
    """A raw httpx client with the bootstrap key."""
    with server.http() as raw:
        yield raw


@pytest.fixture
def wait_until() -> WaitUntil:
    """Polls a condition with a deadline (never a fixed sleep to synchronise)."""
    return poll_until
