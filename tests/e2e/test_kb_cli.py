"""``atrium kb ...`` as a user runs it, against a running server with the bundled models."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ATRIUM, CLI_TIMEOUT_S, RemoteAtriumServer, hermetic_env

pytestmark = pytest.mark.e2e

README = Path(__file__).parents[2] / "README.md"
SETTLEMENT = "# Settlement\n\nSwaps and bonds settle two business days after the trade (T+2).\n"
HOURS = "The credit desk opens at 07:30 and closes at 17:00.\n"
DESKS = "desk,head,opens\nrates,Ann Lee,07:00\ncredit,Bob Roy,07:30\n"
# Mostly control bytes and invalid UTF-8: the server refuses it as binary, not text.
BINARY = bytes(range(32)) * 8 + b"\xff\xfe\x00\x00"


def atrium(server: RemoteAtriumServer, *args: str) -> subprocess.CompletedProcess[str]:
    """``atrium ARGS`` with the admin key."""
    return server.cli(*args, api_key=server.api_key)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that must have succeeded."""
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def failed(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1 with an ``error:`` line naming each fragment; no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def documents(server: RemoteAtriumServer, kb: str) -> dict[str, dict[str, Any]]:
    """The knowledge base's documents by key, from the API."""
    with server.http() as http:
        resp = http.get(f"/v1/knowledge-bases/{kb}/documents")
    assert resp.status_code == 200, resp.text
    return {d["key"]: d for d in resp.json()["data"]}


def answer_and_citations(output: str) -> tuple[str, str]:
    """What ``kb query`` printed before its citations table, and the table."""
    parts = re.split(r"^citations *$", output, maxsplit=1, flags=re.MULTILINE)
    assert len(parts) == 2, output
    return parts[0], parts[1]


def cells(line: str) -> list[str]:
    """The cells of one line of a rich table (empty if it is a rule)."""
    return [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]


def row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in output.splitlines():
        if cells(line)[:1] == [first_cell]:
            return cells(line)
    pytest.fail(f"no row {first_cell!r} in:\n{output}")


def summary(output: str, first_header: str) -> dict[str, str]:
    """The first row of the table whose header starts with ``first_header``, by header."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if cells(line)[:1] == [first_header])
    values = next(cells(line) for line in lines[start + 1 :] if cells(line))
    return dict(zip(cells(lines[start]), values, strict=True))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three readable documents, one binary file posing as text, one unsupported file."""
    root = tmp_path_factory.mktemp("docs")
    (root / "settlement.md").write_text(SETTLEMENT)
    (root / "hours.txt").write_text(HOURS)
    (root / "desks.csv").write_text(DESKS)
    (root / "broken.txt").write_bytes(BINARY)
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return root


@pytest.fixture(scope="module")
def handbook(server: RemoteAtriumServer, folder: Path) -> subprocess.CompletedProcess[str]:
    """A knowledge base ``handbook`` with ``folder`` ingested: the ingest's result."""
    created = ok(atrium(server, "kb", "create", "handbook", "--field", "desk:string"))
    assert "created knowledge base handbook" in created
    return atrium(server, "kb", "ingest", str(folder), "--kb", "handbook")


@pytest.fixture(scope="module")
def extras(server: RemoteAtriumServer) -> str:
    """A second, empty knowledge base for the tests that add documents (made by the API)."""
    with server.http() as http:
        resp = http.post("/v1/knowledge-bases", json={"name": "extras"})
    assert resp.status_code == 201, resp.text
    return "extras"


def test_ingest_indexes_the_readable_files_and_names_the_failed_one(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str]
) -> None:
    failed(handbook, "1 of 4 documents failed")
    counts = summary(handbook.stdout, "indexed")
    assert (counts["indexed"], counts["unchanged"], counts["failed"]) == ("3", "0", "1")
    assert (counts["skipped"], counts["chunks indexed"]) == ("1", "3")
    assert row(handbook.stdout, "broken.txt")[1] == "the file holds binary data, not text"
    stored = documents(server, "handbook")
    assert {k: d["status"] for k, d in stored.items()} == {
        "settlement.md": "indexed",
        "hours.txt": "indexed",
        "desks.csv": "indexed",
        "broken.txt": "failed",
    }
    assert all(d["chunks"] >= 1 for k, d in stored.items() if k != "broken.txt")


def test_ingesting_again_changes_nothing(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str], folder: Path
) -> None:
    before = documents(server, "handbook")

    again = atrium(server, "kb", "ingest", str(folder), "--kb", "handbook", "--pattern", "*.md")

    counts = summary(ok(again), "indexed")
    assert (counts["indexed"], counts["unchanged"], counts["failed"]) == ("0", "1", "0")
    after = documents(server, "handbook")
    assert after["settlement.md"]["updated_at"] == before["settlement.md"]["updated_at"]


def test_query_prints_an_answer_and_numbered_citations(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str]
) -> None:
    result = atrium(
        server, "kb", "query", "handbook", "When do swaps settle?", "--no-stream",
        "--max-tokens", "8", "--top-k", "2",
    )  # fmt: skip

    output = ok(result)
    answer, citations = answer_and_citations(output)
    assert answer.strip()
    first = row(citations, "1")
    assert first[1] == "Settlement"
    assert 0 < float(first[2]) <= 1
    assert "T+2" in first[3]
    assert row(citations, "2")
    assert "│ 3 " not in citations


def test_query_streams_by_default(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str]
) -> None:
    result = atrium(server, "kb", "query", "handbook", "Who heads the rates desk?",
                    "--max-tokens", "8")  # fmt: skip

    answer, citations = answer_and_citations(ok(result))
    assert answer.strip()
    assert "Ann Lee" in citations


def test_search_only_applies_the_filter(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str]
) -> None:
    result = atrium(
        server, "kb", "query", "handbook", "When does the credit desk open?", "--search-only",
        "--filter", '{"doc_type": "text"}',
    )  # fmt: skip

    output = ok(result)
    assert row(output, "1")[1] == "hours.txt"
    assert "Settlement" not in output


def test_a_bad_filter_fails_readably(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str]
) -> None:
    unknown = atrium(server, "kb", "query", "handbook", "x", "--filter", '{"colour": "red"}')
    not_json = atrium(server, "kb", "query", "handbook", "x", "--filter", "{")

    failed(unknown, "400", "unknown field 'colour'")
    assert not_json.returncode == 2, not_json.stderr  # a usage error
    assert "--filter" in not_json.stderr


def test_sources_and_failed_documents(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str]
) -> None:
    sources = ok(atrium(server, "kb", "sources", "handbook"))
    failures = ok(atrium(server, "kb", "documents", "handbook", "--failed"))
    listing = ok(atrium(server, "kb", "list"))
    shown = ok(atrium(server, "kb", "show", "handbook"))

    uploads = row(sources, "uploads")
    assert uploads[1:2] == ["folder"]
    assert uploads[3:6] == ["ok", "3", "1"]  # status, documents, failed
    broken = row(failures, "broken.txt")
    assert broken[1] == "failed"
    assert "binary data" in broken[5]
    assert "settlement.md" not in failures
    assert row(listing, "handbook")
    assert row(shown, "documents")[1] == "4 (1 failed)"
    assert row(shown, "fields")[1] == "desk:string"


def test_an_http_url_is_downloaded_and_uploaded(
    server: RemoteAtriumServer, extras: str, web: str
) -> None:
    named = atrium(server, "kb", "ingest", f"{web}/download?id=7", "--kb", extras)
    typed = atrium(server, "kb", "ingest", f"{web}/pages/fees", "--kb", extras)
    missing = atrium(server, "kb", "ingest", f"{web}/nothing", "--kb", extras)

    assert summary(ok(named), "indexed")["indexed"] == "1"
    assert summary(ok(typed), "indexed")["indexed"] == "1"
    failed(missing, "cannot download", "HTTP 404")
    stored = documents(server, extras)
    assert stored["guide.md"]["doc_type"] == "markdown"  # the Content-Disposition name
    assert stored["fees.html"]["doc_type"] == "html"  # the extension from Content-Type


def test_a_file_url_becomes_a_synced_source(server: RemoteAtriumServer, extras: str) -> None:
    shared = server.data_dir / "shared"
    (shared / "deep").mkdir(parents=True)
    (shared / "repo.md").write_text("# Repo\n\nA repo is a loan secured by bonds.\n")
    (shared / "deep" / "margin.txt").write_text("Futures are margined daily.\n")

    result = atrium(server, "kb", "ingest", shared.as_uri(), "--kb", extras)
    created = re.search(r"created source (\S+); syncing it", result.stderr)
    assert created, result.stderr
    synced = atrium(server, "kb", "sync", extras, created.group(1))

    first = summary(ok(result), "documents seen")
    assert (first["documents seen"], first["added"], first["failed"]) == ("2", "2", "0")
    second = summary(ok(synced), "documents seen")
    assert (second["added"], second["unchanged"]) == ("0", "2")
    source = row(ok(atrium(server, "kb", "sources", extras)), created.group(1))
    assert source[1:3] == ["fsspec", shared.as_uri()]
    assert source[4] == "2"


def test_a_folder_source_on_the_server(server: RemoteAtriumServer, extras: str) -> None:
    (server.data_dir / "policies").mkdir()
    (server.data_dir / "policies" / "travel.md").write_text("# Travel\n\nBook economy.\n")

    added = atrium(server, "kb", "add-folder", extras, "policies", "policies", "--group", "hr")
    outside = atrium(server, "kb", "add-folder", extras, "etc", "/etc")

    assert "added source policies" in ok(added)
    assert summary(added.stdout, "documents seen")["added"] == "1"
    failed(outside, "400", "outside the folders sources may read")


def test_wrong_names_and_keys_fail_readably(
    server: RemoteAtriumServer, handbook: subprocess.CompletedProcess[str], folder: Path
) -> None:
    failed(atrium(server, "kb", "ingest", str(folder), "--kb", "nowhere"), "404", "nowhere")
    failed(atrium(server, "kb", "create", "handbook"), "400", "exists")
    failed(atrium(server, "kb", "ingest", str(folder / "absent"), "--kb", "handbook"), "absent")
    no_key = server.cli("kb", "list")
    failed(no_key, "API key")
    wrong = server.cli("kb", "list", api_key="atr-wrong-key-000000000000")
    failed(wrong, "401")


def test_delete_removes_the_knowledge_base(server: RemoteAtriumServer) -> None:
    ok(atrium(server, "kb", "create", "scratch"))

    refused = atrium(server, "kb", "delete", "scratch")  # asks; no terminal answers
    deleted = atrium(server, "kb", "delete", "scratch", "--yes")

    assert refused.returncode == 1
    assert "deleted knowledge base scratch" in ok(deleted)
    failed(atrium(server, "kb", "show", "scratch"), "404")


def test_a_failed_upload_and_a_source_can_be_removed(
    server: RemoteAtriumServer, tmp_path: Path
) -> None:
    (tmp_path / "hours.txt").write_text(HOURS)
    (tmp_path / "broken.txt").write_bytes(BINARY)
    ok(atrium(server, "kb", "create", "cleanup"))
    atrium(server, "kb", "ingest", str(tmp_path), "--kb", "cleanup")  # exits 1: one failed
    assert documents(server, "cleanup")["broken.txt"]["status"] == "failed"

    refused = atrium(server, "kb", "delete-document", "cleanup", "broken.txt")  # asks
    deleted = ok(atrium(server, "kb", "delete-document", "cleanup", "broken.txt", "--yes"))
    missing = atrium(server, "kb", "delete-document", "cleanup", "broken.txt", "--yes")

    assert refused.returncode == 1
    assert "deleted document broken.txt (failed)" in deleted
    failed(missing, "no document 'broken.txt'")
    assert set(documents(server, "cleanup")) == {"hours.txt"}

    ok(atrium(server, "kb", "delete-source", "cleanup", "uploads", "--yes"))
    assert documents(server, "cleanup") == {}
    failed(atrium(server, "kb", "delete-source", "cleanup", "nowhere", "--yes"), "404")


def test_the_readme_example_runs(server: RemoteAtriumServer, tmp_path: Path) -> None:
    section = README.read_text().split("## Knowledge bases (RAG)", 1)[1].split("\n## ", 1)[0]
    script = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)[0]
    script = script.replace(".venv/bin/atrium", str(ATRIUM))
    script = script.replace("http://127.0.0.1:8080", server.url_root)
    env = hermetic_env(
        ATRIUM_API_KEY=server.api_key,
        ATRIUM_URL=server.url_root,
        ATRIUM_CONFIG=server.env["ATRIUM_CONFIG"],
    )
    run = subprocess.run(  # noqa: PLW1510 - checked below
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )  # fmt: skip

    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    assert "created knowledge base desk-notes" in run.stdout
    assert "Settlement" in answer_and_citations(run.stdout)[1]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["answer"].strip()
    assert answer["citations"][0]["title"] == "desks.csv"


# -- a web server to download from -----------------------------------------------------------


class _Pages(BaseHTTPRequestHandler):
    """``/download?id=7``: a named attachment; ``/pages/fees``: HTML with no extension."""

    def do_GET(self) -> None:
        if self.path.startswith("/download"):
            body, headers = (
                b"# Guide\n\nRead the settlement guide first.\n",
                {
                    "content-type": "application/octet-stream",
                    "content-disposition": 'attachment; filename="guide.md"',
                },
            )
        elif self.path == "/pages/fees":
            body = b"<html><body><h1>Fees</h1><p>Clearing costs 2 bp.</p></body></html>"
            headers = {"content-type": "text/html; charset=utf-8"}
        else:
            self.send_error(404)
            return
        self.send_response(200)
        for name, value in {**headers, "content-length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request on stderr."""


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """A loopback web server with pages to download."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
