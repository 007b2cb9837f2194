"""The Save Artifact block: text a run produced (a CSV, a report) stored as a run artifact."""

from __future__ import annotations

import mimetypes
import re
from typing import Any, Final

from pydantic import Field, field_validator

from atrium.workflows.blocks._shared import checked_template, port_scope
from atrium.workflows.blocks.base import Block, BlockConfig, BlockContext, BlockError, BlockResult
from atrium.workflows.dsl import PortSpec
from atrium.workflows.expressions import render

#: A plain file name, as the artifact store accepts it: no folders, no leading dot.
FILE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
MEDIA_TYPE: Final = r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*(; ?charset=[\w.-]+)?$"
_TEMPLATE_MARKS: Final = ("{{", "{%", "{#")
# Only Python's own table: the host's /etc/mime.types must not change what a run stores;
# it lacks a few text formats that reports are written in.
_TYPES: Final = mimetypes.MimeTypes(filenames=())
_TEXT_FORMATS: Final = {
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".jsonl": "application/jsonl",
}


def plain_file_name(name: str) -> str:
    """``name`` when it is a plain file name (no path, no ``..``); BlockError otherwise."""
    if not FILE_NAME.match(name) or ".." in name:
        msg = (
            f"{name!r} is not a plain file name (1-200 of A-Z a-z 0-9 _ . -, starting with "
            "a letter or digit, without '..')"
        )
        raise BlockError(msg)
    return name


def media_type_for(name: str) -> str:
    """The media type a file name's extension suggests; text is UTF-8, unknown is text."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    guessed = _TEXT_FORMATS.get(suffix) or _TYPES.guess_type(name, strict=True)[0]
    if guessed is None:
        return "text/plain; charset=utf-8"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


class SaveArtifactConfig(BlockConfig):
    """The artifact's file name (a template) and, optionally, its media type."""

    name: str = Field(
        min_length=1,
        max_length=500,
        description=(
            "The file name, a template: e.g. report-{{ inputs.date }}.csv. It must render to "
            "a plain file name (no folders)."
        ),
    )
    media_type: str | None = Field(
        None,
        pattern=MEDIA_TYPE,
        description="The media type; unset, it follows the extension (text/csv for .csv).",
    )

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        checked_template(value)
        if not any(mark in value for mark in _TEMPLATE_MARKS):
            try:
                plain_file_name(value)  # a literal name is checked when the workflow is saved
            except BlockError as exc:
                raise ValueError(str(exc)) from None
        return value


class SaveArtifactBlock(Block):
    """Store text as a file of the run, to download from the run's artifacts."""

    type = "save_artifact"
    title = "Save Artifact"
    description = "Store text (CSV, Markdown, JSON...) as a file of the run."
    category = "data"
    Config = SaveArtifactConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"content": PortSpec(type="string", description="The file's text (UTF-8).")}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "artifact": PortSpec(
                type="object", description="The stored file: name, media_type, bytes, url."
            )
        }

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, SaveArtifactConfig)
        scope = port_scope(ctx, self.inputs(config), inputs)
        name = plain_file_name(render(config.name, scope).strip())
        content = inputs.get("content")
        if not isinstance(content, str):
            msg = f"the content must be text, not {type(content).__name__}"
            raise BlockError(msg)
        media_type = config.media_type or media_type_for(name)
        artifact = await ctx.services.artifacts.put(ctx.run_id, name, content.encode(), media_type)
        return BlockResult({"artifact": artifact})


__all__ = ["SaveArtifactBlock", "SaveArtifactConfig", "media_type_for", "plain_file_name"]
