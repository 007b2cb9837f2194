"""The template library end to end: every bundled template validates, and each one runs
through the API on the real platform with the bundled SmolLM2 model.

The model is tiny, so these tests check the shape of what a run produces (a non-empty
answer, citations, stored report files, a CSV with the table's rows), never its wording.
Feeds, status endpoints and webhooks are a real HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import http.server
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import docx
import httpx
import pytest
import pytest_asyncio
from fpdf import FPDF

from atrium.app import Platform
from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.core.settings import LlamaCppModel, OnnxEmbeddingModel
from atrium.workflows.templates import TemplateFileError, TemplateLibrary, parse_template
from tests.integration._gateway import running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ADMIN_KEY = "atr-" + "t" * 40
TERMINAL = {"succeeded", "failed", "cancelled"}

JSON_FEED = {
    "version": "https://jsonfeed.org/version/1.1",
    "title": "Markets",
    "items": [
        {"id": "1", "title": "Brent crude rises 5% after OPEC cuts output"},
        {"id": "2", "title": "Central bank holds rates, signals two cuts next year"},
        {"id": "3", "title": "Tech shares lead the index higher"},
    ],
}
RSS_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Desk news</title><link>http://127.0.0.1/</link>
<item><title>Gold hits a record &amp; silver follows</title></item>
<item><title><![CDATA[Yen weakens past 160 per dollar]]></title></item>
</channel></rss>
"""
METRICS = {
    "service": "order-router",
    "uptime_percent": 99.2,
    "orders_per_second": 412,
    "p99_latency_ms": 950,
    "errors_last_hour": 37,
}
SEARCH = {
    "results": [
        {"title": "Acme raises guidance", "snippet": "Acme now expects 16.5 billion in revenue."}
    ]
}


class _Loopback(http.server.BaseHTTPRequestHandler):
    """Feeds and a status endpoint to GET; webhooks that record what is POSTed to them."""

    posts: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    gets: ClassVar[list[str]] = []
    pages: ClassVar[dict[str, tuple[str, bytes]]] = {
        "/feed.json": ("application/feed+json", json.dumps(JSON_FEED).encode()),
        "/feed.rss": ("application/rss+xml", RSS_FEED.encode()),
        "/metrics.json": ("application/json", json.dumps(METRICS).encode()),
        "/search": ("application/json", json.dumps(SEARCH).encode()),
    }

    def do_GET(self) -> None:
        self.gets.append(self.path)
        page = self.pages.get(self.path.split("?", 1)[0])
        if page is None:
            self.send_error(404)
            return
        self._answer(200, page[0], page[1])

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.posts.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
        self._answer(200, "application/json", b"{}")

    def _answer(self, status: int, media_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", media_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is not the place for an access log."""


@pytest.fixture(scope="module")
def loopback() -> Iterator[str]:
    """The loopback server's base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Loopback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Running:
    platform: Platform
    admin: httpx.AsyncClient


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    config = {
        "auth": {"cache_ttl_seconds": 0},
        "models": {
            "smol": LlamaCppModel(n_ctx=2048, aliases=["default"]),
            "minilm": OnnxEmbeddingModel(aliases=["default-embedding"]),
        },
        "workflows": {"allowed_hosts": ["127.0.0.1"], "sync_timeout_seconds": 240},
    }
    data_dir = tmp_path_factory.mktemp("atrium")
    gateway = running_gateway(data_dir, ADMIN_KEY, config, request_timeout_s=300)
    async with gateway as (platform, admin):
        yield Running(platform, admin)


async def _instantiate(running: Running, template: str, name: str, **body: Any) -> dict[str, Any]:
    created = await running.admin.post(
        f"/v1/workflows/templates/{template}/instantiate",
        json={"name": name, "publish": True, **body},
    )
    assert created.status_code == 201, created.text
    workflow: dict[str, Any] = created.json()
    assert workflow["published_version"] == 1
    return workflow


async def _run(running: Running, workflow: str, inputs: dict[str, Any]) -> dict[str, Any]:
    answered = await running.admin.post(
        f"/v1/workflows/{workflow}/runs", json={"inputs": inputs, "timeout_seconds": 240}
    )
    assert answered.status_code in (200, 202), answered.text
    run: dict[str, Any] = answered.json()
    return run


async def _until(
    admin: httpx.AsyncClient, run_id: str, statuses: set[str], within: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        run: dict[str, Any] = (await admin.get(f"/v1/workflows/runs/{run_id}")).json()
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} is still {run['status']}"
        await asyncio.sleep(0.1)


async def _artifact(running: Running, run_id: str, name: str) -> httpx.Response:
    got = await running.admin.get(f"/v1/workflows/runs/{run_id}/artifacts/{name}")
    assert got.status_code == 200, got.text
    return got


async def _check_report(running: Running, run: dict[str, Any], base: str) -> None:
    """A report run: Markdown with the title, and all three files downloadable."""
    markdown = run["outputs"]["markdown"]
    assert markdown.startswith("# ")
    names = [a["name"] for a in run["outputs"]["artifacts"]]
    assert names == [f"{base}.md", f"{base}.html", f"{base}.pdf"]
    assert (await _artifact(running, run["id"], f"{base}.md")).text == markdown
    assert "<h1>" in (await _artifact(running, run["id"], f"{base}.html")).text
    assert (await _artifact(running, run["id"], f"{base}.pdf")).content.startswith(b"%PDF")


# -- the library ------------------------------------------------------------------------


async def test_every_template_instantiates_with_its_defaults_and_validates(
    running: Running,
) -> None:
    library = TemplateLibrary.bundled()
    templates = library.list()
    assert len(templates) >= 8
    for template in templates:
        definition = library.instantiate(template.id, f"check-{template.id}")
        spec = running.platform.workflows.validate(definition)
        assert f"template:{template.id}" in spec.tags
        assert template.meta.category in {"trading", "risk", "research", "operations"}


async def test_parameters_are_substituted_checked_and_named_in_errors() -> None:
    template = parse_template(
        """
template:
  id: tiny
  title: Tiny
  description: A transform and a parameter.
  category: operations
  parameters:
    greeting: {description: What to say.}
    times: {description: How often., default: 2}
workflow:
  inputs: {who: {type: string}}
  nodes:
    - {id: start, type: start}
    - id: say
      type: transform
      config:
        language: jinja
        expressions: {text: "'${greeting}, ' ~ data", count: "${times}"}
  edges:
    - {source: start, source_handle: who, target: say, target_handle: data}
""",
        "tiny.yaml",
    )
    library = TemplateLibrary([template])
    definition = library.instantiate("tiny", "hello", {"greeting": "Hi", "times": "3"})
    config = definition["nodes"][1]["config"]
    assert config["expressions"] == {"text": "'Hi, ' ~ data", "count": "3"}
    assert definition["name"] == "hello"
    with pytest.raises(NotFoundError, match="no workflow template 'nope'"):
        library.instantiate("nope", "x")
    with pytest.raises(InvalidRequestError, match="needs parameter 'greeting'"):
        library.instantiate("tiny", "x")
    with pytest.raises(InvalidRequestError, match="unknown parameter 'colour'"):
        library.instantiate("tiny", "x", {"greeting": "Hi", "colour": "red"})
    with pytest.raises(InvalidRequestError, match="template delimiters"):
        library.instantiate("tiny", "x", {"greeting": "{{ vars }}"})
    with pytest.raises(TemplateFileError, match="undeclared parameters"):
        parse_template(
            "template: {id: t, title: T, description: D, category: risk}\n"
            "workflow: {nodes: [{id: start, type: start, name: '${who}'}]}\n",
            "t.yaml",
        )


async def test_the_catalogue_and_instantiation_over_the_api(running: Running) -> None:
    admin = running.admin
    created = await admin.post("/v1/admin/keys", json={"name": "template-reader"})
    user = httpx.AsyncClient(
        transport=admin._transport,
        base_url="http://atrium",
        headers={"authorization": f"Bearer {created.json()['key']}"},
    )
    listed = await user.get("/v1/workflows/templates")
    assert listed.status_code == 200, listed.text
    by_id = {t["id"]: t for t in listed.json()["data"]}
    assert {"document-qa", "risk-alert-triage", "daily-report"} <= set(by_id)
    assert by_id["document-qa"]["parameters"]["knowledge_base"]["default"] == "docs"
    assert by_id["daily-report"]["schedule"]["cron"] == "0 7 * * 1-5"
    # What a gallery card shows: the blocks each template uses (not start and end).
    assert by_id["document-qa"]["blocks"] == ["retrieve", "llm"]
    for template in by_id.values():
        assert template["blocks"], template["id"]
        assert not {"start", "end"} & set(template["blocks"])
    detail = (await user.get("/v1/workflows/templates/document-qa")).json()
    assert detail["definition"]["nodes"][1]["config"]["knowledge_base"] == "${knowledge_base}"
    assert (await user.get("/v1/workflows/templates/nope")).status_code == 404
    path = "/v1/workflows/templates/document-qa/instantiate"
    assert (await user.post(path, json={"name": "mine"})).status_code == 403
    unknown = await admin.post(path, json={"name": "qa-x", "parameters": {"kb": "docs"}})
    assert unknown.status_code == 400
    assert "unknown parameter 'kb'" in unknown.json()["error"]["message"]
    no_schedule = await admin.post(path, json={"name": "qa-x", "schedule": True})
    assert no_schedule.status_code == 400
    assert (await admin.get("/v1/workflows/qa-x")).status_code == 404  # nothing was saved
    draft = await admin.post(path, json={"name": "qa-draft"})
    assert draft.status_code == 201, draft.text
    assert draft.json()["published_version"] is None
    assert draft.json()["draft"]["tags"] == ["template:document-qa"]
    again = await admin.post(path, json={"name": "qa-draft"})
    assert again.status_code == 409
    await user.aclose()


# -- each template, run end to end ------------------------------------------------------

RATES = """# Rates outlook

The desk expects the central bank to cut interest rates twice in 2027, starting in March.

## Risks

Sticky services inflation above three percent could delay the first cut.
"""
ENERGY = "Brent crude rose five percent after the OPEC meeting in Vienna cut output quotas."


async def test_document_qa_answers_from_a_knowledge_base_with_citations(
    running: Running,
) -> None:
    admin = running.admin
    created = await admin.post("/v1/knowledge-bases", json={"name": "desk-notes"})
    assert created.status_code == 201, created.text
    for name, text in (("outlook.md", RATES), ("energy.txt", ENERGY)):
        uploaded = await admin.post(
            "/v1/knowledge-bases/desk-notes/documents", files={"file": (name, text.encode())}
        )
        assert uploaded.status_code == 201, uploaded.text
    await _instantiate(
        running,
        "document-qa",
        "desk-qa",
        parameters={"knowledge_base": "desk-notes", "top_k": 2, "max_tokens": 64},
    )
    run = await _run(running, "desk-qa", {"question": "When will the central bank cut rates?"})
    assert run["status"] == "succeeded", run["error"]
    assert isinstance(run["outputs"]["answer"], str)
    assert run["outputs"]["answer"].strip()
    citations = run["outputs"]["citations"]
    assert 1 <= len(citations) <= 2
    assert citations[0]["title"] == "Rates outlook"
    assert "cut interest rates" in citations[0]["text"]


EARNINGS_CALL = """Operator: Welcome to Acme Corp's third-quarter 2026 earnings call.
CEO: Revenue grew 12 percent to 4.2 billion dollars, driven by cloud subscriptions.
CFO: Operating margin improved to 18 percent. We raise full-year revenue guidance to
16.5 billion dollars. We will buy back 500 million dollars of shares next quarter.
CEO: Supply constraints in Asia remain a risk for hardware deliveries in the fourth quarter.
"""


async def test_research_report_extracts_key_points_and_stores_the_report(
    running: Running,
) -> None:
    await _instantiate(running, "research-report", "acme-call", parameters={"max_tokens": 48})
    run = await _run(
        running,
        "acme-call",
        {
            "text": EARNINGS_CALL,
            "document_type": "earnings call transcript",
            "title": "Acme Q3 2026 call",
        },
    )
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["markdown"].startswith("# Acme Q3 2026 call\n")
    assert "## Key points" in run["outputs"]["markdown"]
    assert isinstance(run["outputs"]["extracted"]["key_points"], list)
    await _check_report(running, run, "research-summary")


async def test_risk_alert_triage_takes_a_branch_and_high_alerts_wait_for_approval(
    running: Running, loopback: str
) -> None:
    admin = running.admin
    await _instantiate(
        running,
        "risk-alert-triage",
        "triage",
        parameters={
            "escalation_webhook": f"{loopback}/hooks/escalations",
            "desk_webhook": f"{loopback}/hooks/desk",
        },
    )
    alerts = [
        "Counterparty Lehman Brothers has defaulted; our exposure of 2 billion dollars is lost.",
        "Fraud detected: a trader hid 800 million dollars of losses and breached every limit.",
        "The exchange is down; no orders can be placed and positions cannot be hedged.",
        "The weekly risk newsletter was published on time.",
    ]
    seen: dict[str, str] = {}
    for alert in alerts:
        started = await admin.post(
            "/v1/workflows/triage/runs", json={"inputs": {"alert": alert}, "mode": "async"}
        )
        assert started.status_code == 202, started.text
        run = await _until(admin, started.json()["id"], TERMINAL | {"waiting"})
        if run["status"] == "waiting":
            decided = await admin.post(
                f"/v1/workflows/runs/{run['id']}/approvals/approval",
                json={"approved": True, "comment": "escalate"},
            )
            assert decided.status_code == 202, decided.text
            run = await _until(admin, run["id"], TERMINAL)
        assert run["status"] == "succeeded", run["error"]
        severity, action = run["outputs"]["severity"], run["outputs"]["action"]
        seen[severity] = action
        expected = {"high": "escalated", "medium": "notified", "low": "recorded"}[severity]
        assert action == expected
        if action in ("escalated", "notified"):
            path = "/hooks/escalations" if action == "escalated" else "/hooks/desk"
            assert (path, alert) in [(p, body["data"]) for p, body in _Loopback.posts]
    assert "high" in seen, f"no alert was rated high: {seen}"


async def test_market_news_digest_reads_json_and_rss_feeds(running: Running, loopback: str) -> None:
    await _instantiate(
        running,
        "market-news-digest",
        "digest",
        parameters={"feed_url": f"{loopback}/feed.json", "max_tokens": 64},
    )
    run = await _run(running, "digest", {})
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["headlines"] == [item["title"] for item in JSON_FEED["items"]]
    assert run["outputs"]["digest"].strip()
    assert "/feed.json" in _Loopback.gets
    rss = await _run(running, "digest", {"feed_url": f"{loopback}/feed.rss", "max_headlines": 5})
    assert rss["status"] == "succeeded", rss["error"]
    assert rss["outputs"]["headlines"] == [
        "Gold hits a record & silver follows",
        "Yen weakens past 160 per dollar",
    ]
    assert rss["outputs"]["digest"].strip()


POLICY = """# Fund factsheet

The annual management fee is 0.75 percent of assets, charged monthly.
The fund is managed by Jane Doe, head of European equities.
"""


async def test_compliance_check_gives_findings_and_counts(running: Running) -> None:
    await _instantiate(
        running, "compliance-check", "factsheet-check", parameters={"max_tokens": 160}
    )
    rules = ["The document states the fees.", "The document names the fund manager."]
    for document in (
        {"text": POLICY},
        {"name": "factsheet.md", "content_base64": base64.b64encode(POLICY.encode()).decode()},
    ):
        run = await _run(running, "factsheet-check", {"document": document, "rules": rules})
        assert run["status"] == "succeeded", run["error"]
        outputs = run["outputs"]
        assert isinstance(outputs["findings"], list)
        for finding in outputs["findings"]:
            assert set(finding) == {"rule", "compliant", "evidence"}
        assert outputs["checked"] == len(outputs["findings"])
        assert outputs["compliant"] + outputs["non_compliant"] == outputs["checked"]
        assert isinstance(outputs["all_compliant"], bool)


async def test_daily_report_is_scheduled_and_reports_on_its_endpoint(
    running: Running, loopback: str
) -> None:
    admin = running.admin
    await _instantiate(
        running,
        "daily-report",
        "ops-daily",
        parameters={
            "metrics_url": f"{loopback}/metrics.json",
            "title": "Order router",
            "max_tokens": 48,
        },
        publish=False,
        schedule=True,
    )
    triggers = (await admin.get("/v1/workflows/ops-daily/triggers")).json()["data"]
    assert len(triggers) == 1
    trigger = triggers[0]
    assert trigger["kind"] == "schedule"
    assert trigger["config"]["cron"] == "0 7 * * 1-5"
    assert trigger["config"]["timezone"] == "UTC"
    # The schedule's next tick, fired now: the run has no inputs, as a scheduled one.
    tick = datetime.fromisoformat(trigger["next_fire_at"]) + timedelta(seconds=1)
    (run_id,) = await running.platform.triggers.fire_due(tick)
    run = await _until(admin, run_id, TERMINAL)
    assert run["status"] == "succeeded", run["error"]
    assert run["trigger"] == "schedule"
    assert run["outputs"]["status"] == 200
    assert run["outputs"]["markdown"].startswith("# Order router\n")
    await _check_report(running, run, "daily-report")
    assert "/metrics.json" in _Loopback.gets


def _docx_with_a_table(rows: list[list[str]]) -> bytes:
    document = docx.Document()
    document.add_heading("Credit watch list", level=1)
    document.add_paragraph("Ratings and outlooks as of June 2026.")
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for cells, row in zip(table.rows, rows, strict=True):
        for cell, text in zip(cells.cells, row, strict=True):
            cell.text = text
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def _pdf_with_a_table(rows: list[list[str]]) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.cell(text="Credit watch list", new_x="LMARGIN", new_y="NEXT")
    with pdf.table() as table:
        for row in rows:
            cells = table.row()
            for text in row:
                cells.cell(text)
    return bytes(pdf.output())


async def test_table_to_csv_converts_a_parsed_table_and_reads_a_pdf_with_the_model(
    running: Running,
) -> None:
    rows = [
        ["Issuer", "Rating", "Outlook"],
        ["Acme, Inc.", "BBB", "negative"],
        ['Globex "GX"', "A", "stable"],
    ]
    await _instantiate(running, "table-to-csv", "tables", parameters={"max_tokens": 96})
    word = {
        "name": "watch-list.docx",
        "content_base64": base64.b64encode(_docx_with_a_table(rows)).decode(),
    }
    run = await _run(running, "tables", {"document": word, "csv_name": "watch-list.csv"})
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["source"] == "parser"
    assert run["outputs"]["artifact"]["name"] == "watch-list.csv"
    stored = await _artifact(running, run["id"], "watch-list.csv")
    assert stored.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(stored.text))) == rows
    assert stored.text == run["outputs"]["csv"]
    # A PDF's text has no table structure: the model reads the rows (whatever a tiny
    # model makes of them, the run ends with a CSV file).
    pdf = {
        "name": "watch-list.pdf",
        "content_base64": base64.b64encode(_pdf_with_a_table(rows)).decode(),
    }
    run = await _run(running, "tables", {"document": pdf})
    assert run["status"] == "succeeded", run["error"]
    assert run["outputs"]["source"] == "model"
    assert run["outputs"]["tables"] == []
    stored = await _artifact(running, run["id"], "table.csv")
    assert all(isinstance(row, list) for row in csv.reader(io.StringIO(stored.text)))


async def test_research_agent_searches_with_tools_and_cites(
    running: Running, loopback: str
) -> None:
    admin = running.admin
    created = await admin.post("/v1/knowledge-bases", json={"name": "agent-notes"})
    assert created.status_code == 201, created.text
    for name, text in (("outlook.md", RATES), ("energy.txt", ENERGY)):
        uploaded = await admin.post(
            "/v1/knowledge-bases/agent-notes/documents", files={"file": (name, text.encode())}
        )
        assert uploaded.status_code == 201, uploaded.text
    await _instantiate(
        running,
        "research-agent",
        "analyst",
        parameters={
            "knowledge_base": "agent-notes",
            "search_url": f"{loopback}/search",
            "max_steps": 2,
            "max_tokens": 96,
        },
    )
    run = await _run(running, "analyst", {"question": "What did Brent crude do after OPEC met?"})
    assert run["status"] == "succeeded", run["error"]
    outputs = run["outputs"]
    assert isinstance(outputs["answer"], str)
    assert outputs["answer"].strip()
    assert isinstance(outputs["citations"], list)
    steps = outputs["steps"]
    assert 1 <= len(steps) <= 2
    actions = {step["action"] for step in steps}
    assert actions <= {"search_documents", "web_search", "final_answer", "invalid"}
    if "search_documents" in actions:
        assert outputs["citations"]
        assert {c["title"] for c in outputs["citations"]} <= {"Rates outlook", "energy.txt"}
