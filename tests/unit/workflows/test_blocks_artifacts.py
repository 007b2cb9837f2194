"""The Save Artifact block, storing into the real FsspecArtifacts in a test folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.workflows.blocks.artifacts import SaveArtifactBlock, media_type_for
from atrium.workflows.blocks.base import BlockError
from tests.unit.workflows.block_doubles import make_context, make_services, run_block


async def test_the_content_is_stored_under_the_rendered_name(tmp_path: Path) -> None:
    services = make_services(tmp_path)
    ctx = make_context(services, workflow_inputs={"date": "2026-01-31"})
    config = {"name": "report-{{ inputs.date }}.csv"}
    result = await run_block(SaveArtifactBlock(), config, ctx, {"content": "a,b\n1,2\n"})
    assert result.outputs == {
        "artifact": {
            "name": "report-2026-01-31.csv",
            "media_type": "text/csv; charset=utf-8",
            "bytes": 8,
            "url": "/v1/workflows/runs/run-1/artifacts/report-2026-01-31.csv",
        }
    }
    data, _media_type = await services.artifacts.get("run-1", "report-2026-01-31.csv")
    assert data == b"a,b\n1,2\n"
    assert (tmp_path / "artifacts" / "run-1" / "report-2026-01-31.csv").read_bytes() == data


async def test_a_configured_media_type_wins(tmp_path: Path) -> None:
    ctx = make_context(make_services(tmp_path))
    config = {"name": "notes.txt", "media_type": "text/markdown; charset=utf-8"}
    result = await run_block(SaveArtifactBlock(), config, ctx, {"content": "# Hé"})
    assert result.outputs["artifact"]["media_type"] == "text/markdown; charset=utf-8"
    assert result.outputs["artifact"]["bytes"] == len("# Hé".encode())


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("a.csv", "text/csv; charset=utf-8"),
        ("a.md", "text/markdown; charset=utf-8"),
        ("a.YML", "application/yaml"),
        ("a.json", "application/json"),
        ("a.html", "text/html; charset=utf-8"),
        ("a.unknown-ext", "text/plain; charset=utf-8"),
        ("README", "text/plain; charset=utf-8"),
    ],
)
def test_the_media_type_follows_the_extension(name: str, media_type: str) -> None:
    assert media_type_for(name) == media_type


@pytest.mark.parametrize("name", ["../x", "a/b.txt", ".hidden", "x..y", "", "a b.txt"])
def test_a_literal_name_that_is_not_a_plain_file_name_is_refused_when_saved(name: str) -> None:
    with pytest.raises(ValidationError):
        SaveArtifactBlock().parse_config({"name": name})


async def test_a_rendered_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path) -> None:
    services = make_services(tmp_path)
    ctx = make_context(services, workflow_inputs={"name": "../x"})
    with pytest.raises(BlockError, match=r"'\.\./x' is not a plain file name"):
        await run_block(SaveArtifactBlock(), {"name": "{{ inputs.name }}"}, ctx, {"content": "x"})
    assert not (tmp_path / "artifacts").exists()


async def test_content_must_be_text(tmp_path: Path) -> None:
    ctx = make_context(make_services(tmp_path))
    with pytest.raises(BlockError, match="must be text, not dict"):
        await run_block(SaveArtifactBlock(), {"name": "a.json"}, ctx, {"content": {"a": 1}})


def test_invalid_config_is_refused() -> None:
    block = SaveArtifactBlock()
    with pytest.raises(ValidationError, match="invalid template"):
        block.parse_config({"name": "{{ unclosed"})
    with pytest.raises(ValidationError, match="String should match pattern"):
        block.parse_config({"name": "a.txt", "media_type": "text"})
    config = block.parse_config({"name": "a.txt"})
    assert block.inputs(config)["content"].required
    assert set(block.outputs(config)) == {"artifact"}
