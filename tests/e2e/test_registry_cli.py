"""``atrium models register|versions|show|alias`` against a running server: the bundled
SmolLM2 GGUF registered as a model version, its metadata read from the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atrium.runtime.backends.llamacpp import bundled_gguf
from tests.e2e.conftest import RemoteAtriumServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    return {"registry": {"source_roots": [str(bundled_gguf().parent)]}}


def test_register_a_gguf_and_move_an_alias(server: RemoteAtriumServer) -> None:
    source = str(bundled_gguf())
    registered = server.cli(
        "models", "register", "smol", source, "--tag", "bundled", api_key=server.api_key
    )
    assert registered.returncode == 0, registered.stderr
    again = server.cli("models", "register", "smol", source, api_key=server.api_key)
    assert again.returncode == 0, again.stderr
    aliased = server.cli("models", "alias", "smol", "production", "1", api_key=server.api_key)
    assert aliased.returncode == 0, aliased.stderr
    versions = server.cli("models", "versions", "smol", api_key=server.api_key)
    assert versions.returncode == 0, versions.stderr
    assert "production" in versions.stdout
    with server.http() as http:
        shown = http.get("/v1/registry/models/smol/versions/1").json()
    assert shown["metadata"]["architecture"] == "llama"
    assert shown["metadata"]["quantization"] == "Q4_1"
    assert "production" in json.dumps(shown)
    outside = server.cli("models", "register", "smol", "/etc/hostname", api_key=server.api_key)
    assert outside.returncode == 1
    assert outside.stderr.startswith("error:")
    assert not Path(server.data_dir / "registry" / "models" / "smol" / "3").exists()
