"""Document blocks: Analyze Document (summary or schema extraction) and Generate Report.

Analyze Document reads an uploaded file, a run artifact or plain text through the
platform's document reader (the RAG engine's parsers), cuts the text to ``max_chars``
(telling the model so) and asks for a summary, or for JSON that a schema validates with
the same repair rounds as the LLM block (:meth:`ModelSession.ask_json`).

Generate Report drafts each section with a model, one after the other, assembles
Markdown and renders it to HTML (markdown-it with raw HTML off and images off: nothing in
a model's answer becomes markup or a fetch) and to PDF (fpdf2, core fonts; characters
outside Latin-1 are replaced). Each format is stored as a run artifact.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import re
from typing import Any, Final, Literal

from fpdf import FPDF
from fpdf.errors import FPDFException
from markdown_it import MarkdownIt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atrium.core.errors import NotFoundError
from atrium.workflows.blocks._shared import checked_template, one_line, port_scope, render_optional
from atrium.workflows.blocks.base import Block, BlockConfig, BlockContext, BlockError, BlockResult
from atrium.workflows.blocks.llm import ModelConfig, ModelSession, chat_messages, valid_schema
from atrium.workflows.dsl import PortSpec
from atrium.workflows.expressions import render

MAX_DOCUMENT_BYTES: Final = 50 * 1024 * 1024
MAX_TEXT_OUTPUT: Final = 1_000_000
_ANALYST = "You read documents carefully and answer from their content only."
_SUMMARY_TASK = (
    "Summarise the document: its purpose, its main points, and the figures, dates and "
    "decisions it states."
)
_EXTRACT_TASK = "Extract the information that the JSON schema describes from the document."


# -- reading documents ------------------------------------------------------------------


def _section(text: str, title: Any = None, page: Any = None, kind: Any = "text") -> dict[str, Any]:
    return {"text": text, "title": title, "page": page, "kind": kind or "text"}


def _decode_base64(name: str, encoded: Any) -> bytes:
    if not isinstance(encoded, str):
        msg = "document.content_base64 must be a string"
        raise BlockError(msg)
    if len(encoded) * 3 // 4 > MAX_DOCUMENT_BYTES:
        msg = f"document {name!r} is over {MAX_DOCUMENT_BYTES} bytes"
        raise BlockError(msg)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        msg = f"document {name!r}: content_base64 is not valid base64"
        raise BlockError(msg) from None


async def _artifact_bytes(ctx: BlockContext, reference: Any) -> tuple[str, bytes]:
    if not isinstance(reference, dict) or not isinstance(reference.get("name"), str):
        msg = "document.artifact needs a name (and optionally the run_id that made it)"
        raise BlockError(msg)
    run_id = str(reference.get("run_id") or ctx.run_id)
    # A run reads its own artifacts and its child runs' (``<run>.<node>.<n>``), no one else's.
    root = ctx.run_id.split(".", 1)[0]
    if run_id != root and not run_id.startswith(root + "."):
        msg = f"artifact of run {run_id!r} is not this run's"
        raise BlockError(msg)
    try:
        data, _media_type = await ctx.services.artifacts.get(run_id, reference["name"])
    except NotFoundError as exc:
        raise BlockError(exc.message) from None
    return reference["name"], data


async def read_document(ctx: BlockContext, document: Any) -> tuple[str, list[dict[str, Any]]]:
    """The document's name and sections, from text, base64 content or a run artifact."""
    if not isinstance(document, dict):
        msg = "the document input must be an object: {text}, {name, content_base64} or {artifact}"
        raise BlockError(msg)
    name = str(document.get("name") or "document")
    if "text" in document:
        return name, [_section(str(document["text"]))]
    if "content_base64" in document:
        data = _decode_base64(name, document["content_base64"])
    elif "artifact" in document:
        name, data = await _artifact_bytes(ctx, document["artifact"])
    else:
        msg = "the document needs text, content_base64 (with a name) or artifact"
        raise BlockError(msg)
    sections = await ctx.services.documents.read(name, data)
    return name, [
        _section(s.get("text", ""), s.get("title"), s.get("page"), s.get("kind")) for s in sections
    ]


def document_text(sections: list[dict[str, Any]]) -> str:
    """The sections as one text, each under its title when it has one."""
    parts = []
    for section in sections:
        title = section.get("title")
        parts.append(f"{title}\n{section['text']}" if title else str(section["text"]))
    return "\n\n".join(part.strip() for part in parts if part.strip())


def document_prompt(task: str, name: str, text: str, max_chars: int) -> str:
    """The user message: the task, a note when the text was cut, and the text."""
    note = ""
    if len(text) > max_chars:
        note = (
            f"The document is {len(text)} characters long; only its first {max_chars} "
            "characters are shown, so say nothing about the rest.\n"
        )
        text = text[:max_chars]
    return f"{task}\n\n{note}Document: {name}\n<document>\n{text}\n</document>"


# -- Analyze Document -----------------------------------------------------------------


class AnalyzeDocumentConfig(ModelConfig):
    """What to get out of the document: a summary, or data that a schema describes."""

    mode: Literal["summary", "extract"] = Field("summary", description="summary or extract.")
    json_schema: dict[str, Any] | None = Field(
        None, description="extract mode: a JSON Schema of the data to extract."
    )
    instructions: str | None = Field(
        None, description="The task, replacing the default one (a template)."
    )
    max_chars: int = Field(
        12_000, ge=500, le=1_000_000, description="Characters of the document the model sees."
    )
    repair_attempts: int = Field(2, ge=0, le=5, description="Rounds of fixing invalid JSON.")

    @field_validator("instructions")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return checked_template(value)

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return valid_schema(value)

    @model_validator(mode="after")
    def _schema_for_extract(self) -> AnalyzeDocumentConfig:
        if (self.mode == "extract") != (self.json_schema is not None):
            msg = "json_schema is required in extract mode, and only there"
            raise ValueError(msg)
        return self


class AnalyzeDocumentBlock(Block):
    """Summarise a document, or extract structured data from it."""

    type = "analyze_document"
    title = "Analyze Document"
    description = "Read a PDF, DOCX, HTML, Markdown, CSV or text file; summarise or extract."
    category = "documents"
    Config = AnalyzeDocumentConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "document": PortSpec(
                type="object",
                description=(
                    '{"name", "content_base64"}, {"artifact": {"run_id", "name"}} or {"text"}'
                ),
            )
        }

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        assert isinstance(config, AnalyzeDocumentConfig)
        ports = {
            "text": PortSpec(type="string", description="The document's text."),
            "sections": PortSpec(
                type="array[object]", description="{text, title, page, kind: text|table} each."
            ),
        }
        if config.mode == "extract":
            ports["data"] = PortSpec(type="any", description="The extracted data, validated.")
        else:
            ports["summary"] = PortSpec(type="string")
        return ports

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, AnalyzeDocumentConfig)
        name, sections = await read_document(ctx, inputs.get("document"))
        text = document_text(sections)
        if not text:
            msg = f"document {name!r} has no text"
            raise BlockError(msg)
        scope = port_scope(ctx, self.inputs(config), inputs)
        default_task = _EXTRACT_TASK if config.mode == "extract" else _SUMMARY_TASK
        task = render_optional(config.instructions, scope) or default_task
        messages = chat_messages(_ANALYST, document_prompt(task, name, text, config.max_chars))
        session = ModelSession(ctx, config)
        outputs: dict[str, Any] = {"text": text[:MAX_TEXT_OUTPUT], "sections": sections}
        if config.json_schema is not None:
            _answer, outputs["data"] = await session.ask_json(
                messages, config.json_schema, repair_attempts=config.repair_attempts
            )
        else:
            outputs["summary"] = (await session.ask(messages)).strip()
        return BlockResult(outputs, tokens=session.tokens, cost_usd=session.cost_usd)


# -- Generate Report ------------------------------------------------------------------

Format = Literal["markdown", "html", "pdf"]
ALL_FORMATS: Final[tuple[Format, ...]] = ("markdown", "html", "pdf")
_MEDIA_TYPES: Final = {
    "markdown": ("md", "text/markdown; charset=utf-8"),
    "html": ("html", "text/html; charset=utf-8"),
    "pdf": ("pdf", "application/pdf"),
}
_ATX_HEADING: Final = re.compile(r"^(#{1,6})(?=\s|$)")
_FENCE_LINE: Final = re.compile(r"^\s{0,3}(```|~~~)")
_TABLE_CELL: Final = re.compile(r"(<t[dh](?:\s[^>]*)?>)(.*?)(</t[dh]>)", re.DOTALL)
_TAG: Final = re.compile(r"<[^>]*>")
_TYPOGRAPHY: Final = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"',
        "\u201e": '"', "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2022": "-",
        "\u2026": "...", "\u00a0": " ", "\u200b": "",
    }
)  # fmt: skip
_PAGE_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;"
    "line-height:1.5;padding:0 1rem}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.25rem .5rem}pre{overflow:auto}"
)


class ReportSection(BaseModel):
    """One section: its heading and the prompt that drafts it."""

    model_config = ConfigDict(extra="forbid")

    heading: str = Field(min_length=1, max_length=300, description="The heading (a template).")
    prompt: str = Field(min_length=1, description="What to write here (a template).")

    @field_validator("heading", "prompt")
    @classmethod
    def _templates(cls, value: str) -> str:
        checked_template(value)
        return value


class GenerateReportConfig(ModelConfig):
    """The report's title, sections and formats."""

    title: str = Field("Report", min_length=1, description="The title (a template).")
    instructions: str | None = Field(
        None, description="Guidance for every section, e.g. audience and tone (a template)."
    )
    sections: list[ReportSection] = Field(
        min_length=1, max_length=50, description="The sections, drafted in this order."
    )
    formats: list[Format] = Field(
        default_factory=lambda: list(ALL_FORMATS),
        min_length=1,
        description="Artifacts to store: markdown, html, pdf.",
    )
    file_name: str = Field(
        "report",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$",
        description="Artifact base name (report.md, report.html, report.pdf).",
    )

    @field_validator("title", "instructions")
    @classmethod
    def _templates(cls, value: str | None) -> str | None:
        return checked_template(value)

    @field_validator("formats")
    @classmethod
    def _unique(cls, value: list[Format]) -> list[Format]:
        if len(set(value)) != len(value):
            msg = "each format may be listed once"
            raise ValueError(msg)
        return value


def section_messages(
    title: str, headings: list[str], heading: str, prompt: str, instructions: str | None
) -> list[dict[str, Any]]:
    """The messages that draft one section."""
    outline = "\n".join(f"- {h}" for h in headings)
    system = (
        f'You are writing the report "{title}", whose sections are:\n{outline}\n'
        f'Write the body of the section "{heading}" in Markdown: no heading of its own, '
        "no preamble, no closing remarks."
    )
    if instructions:
        system += f"\n{instructions}"
    return chat_messages(system, prompt)


def clean_section(body: str, heading: str) -> str:
    """A drafted body with a repeated heading dropped and its own headings demoted.

    The report's title is ``#`` and its sections ``##``; a heading the model writes
    becomes at least ``###`` so the outline stays the report's. Code blocks are left as
    they are (a ``#`` there is a comment).
    """
    lines = body.strip().splitlines()
    if lines and lines[0].lstrip("#*_ ").rstrip("*_: ").casefold() == heading.casefold():
        lines = lines[1:]
    in_code = False
    for index, line in enumerate(lines):
        if _FENCE_LINE.match(line):
            in_code = not in_code
        elif not in_code:
            match = _ATX_HEADING.match(line)
            if match is not None:
                level = min(6, len(match.group(1)) + 2)
                lines[index] = "#" * level + line[match.end() :]
    return "\n".join(lines).strip()


def assemble_markdown(title: str, headings: list[str], bodies: list[str]) -> str:
    """The report in Markdown: ``# title``, then ``## heading`` and body per section."""
    parts = [f"# {title}"]
    for heading, body in zip(headings, bodies, strict=True):
        parts.append(f"## {heading}\n\n{body}" if body else f"## {heading}")
    return "\n\n".join(parts) + "\n"


def _markdown_renderer() -> MarkdownIt:
    # Raw HTML off: a model's "<script>" is text. Images off: no fetch of anything.
    return MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")


def render_html_body(markdown: str) -> str:
    """The Markdown as an HTML fragment (no raw HTML, no images)."""
    rendered: str = _markdown_renderer().render(markdown)
    return rendered


def html_page(title: str, body: str) -> str:
    """A standalone HTML document around a rendered body."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_PAGE_STYLE}</style>\n"
        f"</head>\n<body>\n{body}</body>\n</html>\n"
    )


def latin1(text: str) -> str:
    """``text`` in what PDF core fonts can show: typography simplified, the rest ``?``."""
    return text.translate(_TYPOGRAPHY).encode("latin-1", "replace").decode("latin-1")


def _plain_cells(body: str) -> str:
    # fpdf2 lays out table cells as plain text only (bold or code inside a cell raises);
    # markdown-it escapes every "<" in text, so any tag inside a cell is its own markup.
    return _TABLE_CELL.sub(lambda m: m[1] + _TAG.sub("", m[2]) + m[3], body)


def render_pdf(title: str, body: str) -> bytes:
    """A PDF of a rendered HTML body, in a core font; BlockError if fpdf2 cannot lay it out."""
    pdf = FPDF()
    pdf.set_title(latin1(title))
    pdf.set_creator("Atrium")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    try:
        pdf.write_html(latin1(_plain_cells(body)))
        return bytes(pdf.output())
    except (FPDFException, NotImplementedError) as exc:
        msg = f"the report cannot be laid out as a PDF: {exc}"
        raise BlockError(msg) from None


async def store_report(
    ctx: BlockContext, config: GenerateReportConfig, title: str, markdown: str
) -> list[dict[str, Any]]:
    """Render each requested format and store it as an artifact of the run."""
    body = render_html_body(markdown)
    rendered: dict[str, bytes] = {}
    if "markdown" in config.formats:
        rendered["markdown"] = markdown.encode()
    if "html" in config.formats:
        rendered["html"] = html_page(title, body).encode()
    if "pdf" in config.formats:
        rendered["pdf"] = await asyncio.to_thread(render_pdf, title, body)
    artifacts = []
    for fmt in config.formats:
        suffix, media_type = _MEDIA_TYPES[fmt]
        name = f"{config.file_name}.{suffix}"
        artifacts.append(
            await ctx.services.artifacts.put(ctx.run_id, name, rendered[fmt], media_type)
        )
    return artifacts


class GenerateReportBlock(Block):
    """Draft a report section by section with a model; store Markdown, HTML and PDF."""

    type = "generate_report"
    title = "Generate Report"
    description = "Draft a report with a model, section by section; Markdown, HTML and PDF."
    category = "documents"
    Config = GenerateReportConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "context": PortSpec(type="any", required=False, description="For the templates."),
            "data": PortSpec(type="any", required=False, description="For the templates."),
        }

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "markdown": PortSpec(type="string"),
            "artifacts": PortSpec(
                type="array[object]", description="{name, media_type, bytes, url} each."
            ),
        }

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, GenerateReportConfig)
        scope = port_scope(ctx, self.inputs(config), inputs)
        title = one_line(render(config.title, scope))
        headings = [one_line(render(s.heading, scope)) for s in config.sections]
        instructions = render_optional(config.instructions, scope)
        session = ModelSession(ctx, config)
        bodies = []
        for section, heading in zip(config.sections, headings, strict=True):
            messages = section_messages(
                title, headings, heading, render(section.prompt, scope), instructions
            )
            bodies.append(clean_section(await session.ask(messages), heading))
        markdown = assemble_markdown(title, headings, bodies)
        artifacts = await store_report(ctx, config, title, markdown)
        return BlockResult(
            {"markdown": markdown, "artifacts": artifacts},
            tokens=session.tokens,
            cost_usd=session.cost_usd,
        )


__all__ = [
    "AnalyzeDocumentBlock",
    "AnalyzeDocumentConfig",
    "GenerateReportBlock",
    "GenerateReportConfig",
    "read_document",
]
