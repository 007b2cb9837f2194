"""The default block library: every block registered once, each described for the builder."""

from __future__ import annotations

import json
from typing import Any

import pytest

from atrium.workflows.blocks.base import BlockRegistry
from atrium.workflows.blocks.core import core_blocks
from atrium.workflows.blocks.library import default_blocks

ADDED = {
    "llm",
    "classifier",
    "retrieve",
    "http_request",
    "notify",
    "analyze_document",
    "generate_report",
    "agent",
    "save_artifact",
}


def test_default_blocks_are_the_core_blocks_and_the_library() -> None:
    registry = BlockRegistry(default_blocks())
    core = {block.type for block in core_blocks()}
    assert set(registry.types()) == core | ADDED
    assert len(registry.types()) == len(default_blocks())


@pytest.mark.parametrize("block_type", sorted(ADDED))
def test_library_blocks_are_described_steps(block_type: str) -> None:
    block = BlockRegistry(default_blocks()).get(block_type)
    assert block is not None
    assert block.kind == "step"
    assert block.__doc__
    described = block.describe()
    json.dumps(described)
    assert described["title"]
    assert described["description"]
    assert _undocumented(described["config_schema"]) == []


@pytest.mark.parametrize("block", core_blocks(), ids=lambda b: b.type)
def test_core_blocks_are_described_too(block: Any) -> None:
    described = block.describe()
    assert described["title"]
    assert described["description"]
    assert _undocumented(described["config_schema"]) == []


def _undocumented(schema: dict[str, Any]) -> list[str]:
    """Config fields (nested models included) that have no description."""
    missing = []
    for model in [schema, *schema.get("$defs", {}).values()]:
        for name, field in model.get("properties", {}).items():
            if not field.get("description"):
                missing.append(f"{model.get('title')}.{name}")
    return missing
