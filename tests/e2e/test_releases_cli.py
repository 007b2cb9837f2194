"""``atrium releases ...`` and ``atrium deployments ...`` against a running server: the
bundled GGUF released through the pipeline, its deployment inspected and scaled."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from atrium.runtime.backends.llamacpp import bundled_gguf
from tests.e2e.conftest import RemoteAtriumServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server_config() -> dict[str, Any]:
    return {
        "registry": {"source_roots": [str(bundled_gguf().parent)]},
        "releases": {
            "policies": {
                "smol": {
                    "public_name": "smol",
                    "gates": None,
                    "deployment": {"replicas": {"min": 1, "max": 2}, "context_length": 512},
                },
                "smollm2": {
                    "public_name": "smollm",
                    "gates": None,
                    "deployment": {"context_length": 512},
                },
            }
        },
    }


def test_release_then_inspect_and_scale(server: RemoteAtriumServer) -> None:
    key = server.api_key
    created = server.cli(
        "releases", "create", "smol", str(bundled_gguf()), "--release-id", "v1", "--wait",
        api_key=key,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "promoted (succeeded)" in created.stdout
    assert "detection to production:" in created.stdout
    listed = server.cli("releases", "list", api_key=key)
    assert listed.returncode == 0, listed.stderr
    release_id = created.stdout.split()[1]
    assert release_id.startswith("rel_")
    assert release_id in listed.stdout
    shown = server.cli("releases", "show", release_id, api_key=key)
    assert "gating (running)" in shown.stdout
    assert "smol version 1" in shown.stdout
    ended = server.cli("releases", "pause", release_id, api_key=key)
    assert ended.returncode == 1
    assert ended.stderr.startswith("error:")
    assert "has ended" in ended.stderr
    deployments = server.cli("deployments", "list", api_key=key)
    assert "smol-v1" in deployments.stdout
    scaled = server.cli("deployments", "scale", "smol-v1", "2", api_key=key)
    assert scaled.returncode == 0, scaled.stderr
    assert "2 replicas (2 ready)" in scaled.stdout
    detail = server.cli("deployments", "show", "smol-v1", api_key=key)
    assert detail.stdout.count("ready") >= 2
    too_many = server.cli("deployments", "scale", "smol-v1", "3", api_key=key)
    assert too_many.returncode == 1
    assert "between 1 and 2" in too_many.stderr
    with server.get_client() as client:
        reply = client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    assert reply.choices[0].message.content is not None


README = Path(__file__).parents[2] / "README.md"


def test_the_readme_release_commands_run(server: RemoteAtriumServer) -> None:
    block = next(
        b
        for b in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)
        if "atrium releases" in b
    )
    release_id = None
    for line in block.splitlines():
        args = shlex.split(line.split("#", 1)[0])[1:]
        args = [str(bundled_gguf()) if a.endswith(".gguf") else a for a in args]
        if "rel_..." in args:
            assert release_id is not None
            args[args.index("rel_...")] = release_id
        run = server.cli(*args, api_key=server.api_key)
        assert run.returncode == 0, f"{args}: {run.stdout}{run.stderr}"
        if args[:2] == ["releases", "create"]:
            release_id = run.stdout.split()[1]
    assert release_id is not None
