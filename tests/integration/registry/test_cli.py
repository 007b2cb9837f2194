"""``atrium models register|versions|show|alias`` against the registry API on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import typer
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from atrium.api.errors import install_error_handlers
from atrium.api.registry import registry_router
from atrium.cli_models import add_registry_commands
from atrium.gateway.auth import KeyAuthenticator
from atrium.registry import ModelStore, RegistryService, SourcePolicy
from atrium.store import ApiKeyRepository, Database, Scope
from atrium.store.registry import RegistryRepository
from tests.integration.registry.conftest import tiny_gguf

pytestmark = pytest.mark.integration

SECRET = "atr-" + "m" * 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _app(tmp_path: Path, incoming: Path) -> FastAPI:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atrium.db'}")
    keys = ApiKeyRepository(db)
    store = ModelStore(str(tmp_path / "store"), max_artifact_bytes=1024 * 1024)
    policy = SourcePolicy(data_dir=tmp_path / "data", allowed_roots=(incoming,))
    service = RegistryService(RegistryRepository(db), store, sources=policy)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await db.migrate()
        await keys.create(name="admin", scopes={Scope.ADMIN, Scope.INFERENCE}, secret=SECRET)
        yield
        await db.close()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(registry_router(service, KeyAuthenticator(keys, ttl=0)))
    return app


@pytest.fixture
def server_url(tmp_path: Path, incoming: Path) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        _app(tmp_path, incoming), host="127.0.0.1", port=port, log_level="warning", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    models = typer.Typer()
    add_registry_commands(models)
    app.add_typer(models, name="models")
    return app


def _run(cli: typer.Typer, url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["models", *args, "--api-key", SECRET, "--url", url])
    return result.exit_code, result.stdout, result.stderr


def test_register_versions_show_alias(cli: typer.Typer, server_url: str, incoming: Path) -> None:
    first = tiny_gguf(incoming / "first.gguf", context_length=1024)
    code, out, err = _run(
        cli, server_url, "register", "tiny", str(first), "--tag", "q", "--alias", "production"
    )
    assert code == 0, (out, err)
    assert "registered tiny version 1: gguf, llama" in out
    assert "alias production -> version 1" in out
    second = tiny_gguf(incoming / "second.gguf", context_length=2048)
    code, out, err = _run(cli, server_url, "register", "tiny", str(second))
    assert code == 0, (out, err)
    assert "version 2" in out

    code, out, _ = _run(cli, server_url, "versions", "tiny")
    assert code == 0
    assert "production" in out
    assert "1024" in out
    assert "2048" in out

    code, out, _ = _run(cli, server_url, "alias", "tiny", "production", "2")
    assert code == 0
    assert "production -> version 2" in out
    code, out, _ = _run(cli, server_url, "show", "tiny", "--alias", "production")
    assert code == 0
    assert "2048" in out
    assert "second.gguf" in out
    code, out, _ = _run(cli, server_url, "show", "tiny", "--version", "1")
    assert code == 0
    assert "first.gguf" in out
    code, out, _ = _run(cli, server_url, "show", "tiny")
    assert code == 0
    assert "second.gguf" in out


def test_failures_are_one_error_line(cli: typer.Typer, server_url: str, incoming: Path) -> None:
    junk = incoming / "junk.bin"
    junk.write_bytes(b"\x00" * 64)
    code, _, err = _run(cli, server_url, "register", "tiny", str(junk))
    assert code == 1
    assert "error: 400: unknown model format" in err
    code, _, err = _run(cli, server_url, "show", "nope")
    assert code == 1
    assert "error: 404: no model 'nope'" in err
    code, _, err = _run(cli, "http://127.0.0.1:9", "versions", "tiny")
    assert code == 1
    assert "cannot reach Atrium" in err
