"""A real Azure Blob API on loopback: Azurite, Microsoft's official emulator (npm).

Installed once with npm at a pinned version under ``$XDG_CACHE_HOME/atrium-test``
(``~/.cache``) and started as a subprocess on a free port, in memory. Azurite checks
Shared Key signatures with its well-known development account, so a wrong key is
refused as Azure refuses it. Containers are made with a signed ``PUT ?restype=container``
(obstore cannot make containers).

An emulator that cannot be installed (no npm registry) fails the test loudly.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

AZURITE_VERSION = "3.37.0"
#: Azurite's development account, public and the same everywhere.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service."""

    endpoint: str  # http://127.0.0.1:<port>/devstoreaccount1

    def options(self, **overrides: object) -> dict[str, object]:
        """obstore Azure options for this emulator (``overrides`` replace or add keys)."""
        base: dict[str, object] = {
            "account_name": ACCOUNT,
            "account_key": ACCOUNT_KEY,
            "endpoint": self.endpoint,
        }
        return {**base, **overrides}


def azurite_bin() -> Path:
    """The ``azurite-blob`` launcher, installed with npm on first use."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atrium-test"
    home = cache / f"azurite-{AZURITE_VERSION}"
    launcher = home / "node_modules" / ".bin" / "azurite-blob"
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("the Azure tests need npm (Node.js 20+) to install Azurite", pytrace=False)
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "azurite.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / ".installed").exists():
            home.mkdir(exist_ok=True)
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", f"azurite@{AZURITE_VERSION}"],
                cwd=home,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 or not launcher.exists():
                pytest.fail(
                    f"could not install azurite@{AZURITE_VERSION} into {home} (the Azure "
                    f"tests need the npm registry once): {done.stderr[-2000:]}",
                    pytrace=False,
                )
            (home / ".installed").write_text(AZURITE_VERSION)
    return launcher


@contextlib.contextmanager
def running_azurite(containers: tuple[str, ...], log: Path) -> Iterator[Azurite]:
    """Azurite's blob service on a free loopback port with ``containers``; stopped on exit."""
    launcher = azurite_bin()
    port = _free_port()
    command = [
        str(launcher),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--disableTelemetry",
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(port, server, log)
            azurite = Azurite(f"http://127.0.0.1:{port}/{ACCOUNT}")
            for container in containers:
                _create_container(azurite, container)
            yield azurite
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _create_container(azurite: Azurite, container: str) -> None:
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
    canonical = "".join(f"{name}:{value}\n" for name, value in sorted(headers.items()))
    # Shared Key: the verb, eleven empty standard headers, x-ms-* headers, the resource.
    to_sign = f"PUT\n{chr(10) * 11}{canonical}/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
    digest = hmac.new(base64.b64decode(ACCOUNT_KEY), to_sign.encode(), hashlib.sha256).digest()
    headers["authorization"] = f"SharedKey {ACCOUNT}:{base64.b64encode(digest).decode()}"
    made = httpx.put(
        f"{azurite.endpoint}/{container}", params={"restype": "container"}, headers=headers
    )
    if made.status_code != 201:
        pytest.fail(f"Azurite refused the container {container}: {made.text}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120  # node starts slowly on a busy machine
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"Azurite exited: {log.read_text(errors='replace')[-2000:]}", pytrace=False)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    pytest.fail(f"Azurite did not listen on {port} within 120 s", pytrace=False)


__all__ = ["ACCOUNT", "ACCOUNT_KEY", "AZURITE_VERSION", "Azurite", "running_azurite"]
