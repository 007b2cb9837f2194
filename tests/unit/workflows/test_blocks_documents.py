"""Analyze Document and Generate Report: real parsers, real artifact store in a test folder."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.workflows.adapters import FsspecArtifacts
from atrium.workflows.blocks.base import BlockError
from atrium.workflows.blocks.documents import (
    AnalyzeDocumentBlock,
    GenerateReportBlock,
    clean_section,
    latin1,
)
from tests.unit.workflows.block_doubles import (
    ScriptedModels,
    make_context,
    make_services,
    run_block,
)

INVOICE = {
    "type": "object",
    "properties": {"number": {"type": "string"}, "total": {"type": "number"}},
    "required": ["number", "total"],
}
MARKDOWN_FILE = b"# Invoice 42\n\nTotal due: 99.50 EUR.\n\n## Terms\n\nPay within 30 days.\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- Analyze Document ---------------------------------------------------------------------


async def test_summary_of_plain_text(tmp_path: Path) -> None:
    models = ScriptedModels("  A short memo about lunch.  ", tokens=12)
    ctx = make_context(make_services(tmp_path, models=models))
    document = {"name": "memo.txt", "text": "Lunch is at noon on Friday."}
    result = await run_block(AnalyzeDocumentBlock(), {}, ctx, {"document": document})
    assert result.outputs == {
        "text": "Lunch is at noon on Friday.",
        "sections": [
            {"text": "Lunch is at noon on Friday.", "title": None, "page": None, "kind": "text"}
        ],
        "summary": "A short memo about lunch.",
    }
    assert result.tokens == 12
    prompt = models.user_message(0)
    assert prompt.startswith("Summarise the document")
    assert "Document: memo.txt\n<document>\nLunch is at noon on Friday.\n</document>" in prompt
    assert "only its first" not in prompt


async def test_an_uploaded_file_is_parsed_into_sections(tmp_path: Path) -> None:
    models = ScriptedModels("Invoice 42 for 99.50 EUR.")
    ctx = make_context(make_services(tmp_path, models=models))
    document = {"name": "invoice.md", "content_base64": _b64(MARKDOWN_FILE)}
    result = await run_block(AnalyzeDocumentBlock(), {}, ctx, {"document": document})
    titles = [s["title"] for s in result.outputs["sections"]]
    assert any(t and "Terms" in t for t in titles)
    assert "Total due: 99.50 EUR." in result.outputs["text"]
    assert "Pay within 30 days." in models.user_message(0)


async def test_long_documents_are_cut_and_the_prompt_says_so(tmp_path: Path) -> None:
    models = ScriptedModels("summary")
    text = "word " * 400  # 2,000 characters
    config = {"max_chars": 500, "instructions": "List the {{ vars.n }} key points."}
    ctx = make_context(make_services(tmp_path, models=models), variables={"n": 3})
    result = await run_block(AnalyzeDocumentBlock(), config, ctx, {"document": {"text": text}})
    prompt = models.user_message(0)
    assert prompt.startswith("List the 3 key points.")
    assert "The document is 1999 characters long; only its first 500 characters" in prompt
    shown = prompt.split("<document>\n", 1)[1].split("\n</document>", 1)[0]
    assert len(shown) == 500
    assert len(result.outputs["text"]) == 1999


async def test_extract_reads_an_artifact_and_repairs_invalid_json(tmp_path: Path) -> None:
    artifacts = FsspecArtifacts(str(tmp_path / "store"))
    await artifacts.put("run-1.child.0", "invoice.md", MARKDOWN_FILE, "text/markdown")
    models = ScriptedModels('{"number": "42"}', '```json\n{"number": "42", "total": 99.5}\n```')
    ctx = make_context(make_services(tmp_path, models=models, artifacts=artifacts))
    config = {"mode": "extract", "json_schema": INVOICE}
    document = {"artifact": {"run_id": "run-1.child.0", "name": "invoice.md"}}
    block = AnalyzeDocumentBlock()
    result = await run_block(block, config, ctx, {"document": document})
    assert result.outputs["data"] == {"number": "42", "total": 99.5}
    assert "summary" not in result.outputs
    assert set(block.outputs(block.parse_config(config))) == {"text", "sections", "data"}
    assert result.tokens == 20
    assert models.bodies[0]["response_format"]["json_schema"]["schema"] == INVOICE
    assert "'total' is a required property" in models.user_message(1)


async def test_another_runs_artifacts_are_out_of_reach(tmp_path: Path) -> None:
    artifacts = FsspecArtifacts(str(tmp_path / "store"))
    await artifacts.put("run-0", "secret.md", b"not yours", "text/markdown")
    ctx = make_context(make_services(tmp_path, models=ScriptedModels(), artifacts=artifacts))
    document = {"artifact": {"run_id": "run-0", "name": "secret.md"}}
    with pytest.raises(BlockError, match="is not this run's"):
        await run_block(AnalyzeDocumentBlock(), {}, ctx, {"document": document})


async def test_an_artifact_of_the_current_run_is_found_without_a_run_id(tmp_path: Path) -> None:
    artifacts = FsspecArtifacts(str(tmp_path / "store"))
    await artifacts.put("run-1", "notes.txt", b"Remember the milk.", "text/plain")
    models = ScriptedModels("Milk.")
    ctx = make_context(make_services(tmp_path, models=models, artifacts=artifacts))
    document = {"artifact": {"name": "notes.txt"}}
    result = await run_block(AnalyzeDocumentBlock(), {}, ctx, {"document": document})
    assert result.outputs["text"] == "Remember the milk."


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("just a string", "must be an object"),
        ({"name": "x.pdf"}, "needs text, content_base64"),
        ({"name": "x.md", "content_base64": "***"}, "not valid base64"),
        ({"name": "x.md", "content_base64": 5}, "must be a string"),
        ({"name": "x.exe", "content_base64": _b64(b"MZ\x00\x00binary")}, "cannot read 'x.exe'"),
        ({"artifact": {"name": "absent.md"}}, "has no artifact 'absent.md'"),
        ({"artifact": "absent.md"}, "needs a name"),
        ({"text": "   "}, "has no text"),
    ],
)
async def test_unreadable_documents_are_block_errors(
    document: object, problem: str, tmp_path: Path
) -> None:
    ctx = make_context(make_services(tmp_path))
    with pytest.raises(BlockError, match=problem):
        await run_block(AnalyzeDocumentBlock(), {}, ctx, {"document": document})


@pytest.mark.parametrize(
    "config",
    [
        {"mode": "extract"},
        {"mode": "summary", "json_schema": INVOICE},
        {"max_chars": 10},
        {"instructions": "{% import 'x' as y %}"},
    ],
)
def test_analyze_config_is_checked(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AnalyzeDocumentBlock().parse_config(config)


# -- Generate Report ----------------------------------------------------------------------

REPORT = {
    "model": "writer",
    "title": "Quarterly review for {{ inputs.team }}",
    "instructions": "Audience: {{ vars.audience }}.",
    "sections": [
        {"heading": "Summary", "prompt": "Summarise: {{ context }}"},
        {"heading": "Risks for {{ inputs.team }}", "prompt": "List risks in {{ data.area }}."},
    ],
}
SUMMARY_ANSWER = (
    "## Summary\n\nRevenue grew 12 % — “strongly” in 東京.\n\n"
    '<script>alert("x")</script>\n\n# Details\n\n```python\n# kept as is\n```'
)
# Markup inside a table cell: fpdf2 lays out cells as plain text only.
RISKS_ANSWER = "- Hiring ✓\n- Supply chain\n\n| Risk | Level |\n|---|---|\n| Hiring | **High** |"


async def test_generate_report_drafts_sections_and_stores_three_formats(tmp_path: Path) -> None:
    models = ScriptedModels(SUMMARY_ANSWER, RISKS_ANSWER, tokens=25)
    store = tmp_path / "artifacts"
    ctx = make_context(
        make_services(tmp_path, models=models, artifacts=FsspecArtifacts(str(store))),
        workflow_inputs={"team": "Platform"},
        variables={"audience": "executives"},
    )
    inputs = {"context": "Q3 numbers", "data": {"area": "operations"}}
    result = await run_block(GenerateReportBlock(), REPORT, ctx, inputs)
    markdown = result.outputs["markdown"]
    assert markdown.startswith("# Quarterly review for Platform\n\n## Summary\n\nRevenue grew")
    assert markdown.count("## Summary") == 1  # the model's repeated heading is dropped
    assert "### Details" in markdown
    assert "# kept as is" in markdown
    assert "## Risks for Platform\n\n- Hiring ✓" in markdown
    assert result.tokens == 50

    first, second = models.bodies
    assert first["model"] == "writer"
    assert 'report "Quarterly review for Platform"' in first["messages"][0]["content"]
    assert "- Risks for Platform" in first["messages"][0]["content"]
    assert "Audience: executives." in first["messages"][0]["content"]
    assert first["messages"][1]["content"] == "Summarise: Q3 numbers"
    assert second["messages"][1]["content"] == "List risks in operations."

    names = [a["name"] for a in result.outputs["artifacts"]]
    assert names == ["report.md", "report.html", "report.pdf"]
    assert [a["media_type"] for a in result.outputs["artifacts"]] == [
        "text/markdown; charset=utf-8",
        "text/html; charset=utf-8",
        "application/pdf",
    ]
    run_folder = store / "run-1"
    assert (run_folder / "report.md").read_text() == markdown

    page = (run_folder / "report.html").read_text()
    assert "<title>Quarterly review for Platform</title>" in page
    assert "<h1>Quarterly review for Platform</h1>" in page
    assert "<h2>Risks for Platform</h2>" in page
    assert "<h3>Details</h3>" in page
    assert "<table>" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page

    pdf = (run_folder / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert result.outputs["artifacts"][2]["bytes"] == len(pdf)


async def test_generate_report_stores_only_the_requested_formats(tmp_path: Path) -> None:
    models = ScriptedModels("Body with ![tracker](http://example.com/pixel.png) inside.")
    store = tmp_path / "artifacts"
    ctx = make_context(
        make_services(tmp_path, models=models, artifacts=FsspecArtifacts(str(store)))
    )
    config = {
        "sections": [{"heading": "Only", "prompt": "Write."}],
        "formats": ["html"],
        "file_name": "weekly",
    }
    result = await run_block(GenerateReportBlock(), config, ctx)
    assert [a["name"] for a in result.outputs["artifacts"]] == ["weekly.html"]
    assert sorted(p.name for p in (store / "run-1").iterdir()) == ["weekly.html"]
    page = (store / "run-1" / "weekly.html").read_text()
    assert "<img" not in page  # images are off: a report never fetches anything


@pytest.mark.parametrize(
    "config",
    [
        {"sections": []},
        {"sections": [{"heading": "a", "prompt": "b"}], "formats": []},
        {"sections": [{"heading": "a", "prompt": "b"}], "formats": ["pdf", "pdf"]},
        {"sections": [{"heading": "a", "prompt": "b"}], "formats": ["docx"]},
        {"sections": [{"heading": "a", "prompt": "b"}], "file_name": "../escape"},
        {"sections": [{"heading": "{{ a", "prompt": "b"}]},
    ],
)
def test_report_config_is_checked(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerateReportBlock().parse_config(config)


def test_clean_section_demotes_headings_outside_code() -> None:
    body = "**Summary:**\n# Top\n## Sub\n###### Deep\n```\n# comment\n```\n#hashtag"
    assert clean_section(body, "Summary") == (
        "### Top\n#### Sub\n###### Deep\n```\n# comment\n```\n#hashtag"
    )


def test_latin1_keeps_what_core_fonts_show() -> None:
    assert latin1("“Café” — 5 € … 東") == '"Café" - 5 ? ... ?'
