"""``atrium kb ...``: knowledge bases from the command line, through the server's API.

Every command talks to a running server (``--url`` / ``ATRIUM_URL``) with an API key
(``--api-key`` / ``ATRIUM_API_KEY``); managing needs an admin key, querying an inference
key in one of the knowledge base's access groups. Failures print one ``error:`` line on
stderr and exit with code 1.

This module does not import ``atrium.cli`` (which registers it): the two would import
each other, and ``python -m atrium.cli`` would load ``cli.py`` twice.
"""

# Typer commands take their options as parameters.

from __future__ import annotations

import fnmatch
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from atrium._cli import (
    ApiKeyOption,
    ConfigOption,
    UrlOption,
    connected,
    err,
    fail,
    out,
    print_table,
    text,
)
from atrium.kb_client import (
    QUERY_TIMEOUT_S,
    ApiError,
    KnowledgeClient,
    KnowledgeClientError,
    download,
)

kb_app = typer.Typer(help="Knowledge bases (RAG): create, ingest, query.", no_args_is_help=True)

#: URL schemes `kb ingest` hands to the server as an fsspec source.
_OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "file"})

KbArgument = Annotated[str, typer.Argument(help="The knowledge base (name or id).")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
GroupOption = Annotated[
    list[str] | None, typer.Option("--group", help="Access group (repeatable).")
]


class ChunkStrategy(StrEnum):
    """How documents are cut into chunks."""

    RECURSIVE = "recursive"
    PARENT_CHILD = "parent_child"


@contextmanager
def _client(api_key: str | None, url: str | None, config: Path | None) -> Iterator[KnowledgeClient]:
    with connected(KnowledgeClient, api_key, url, config) as client:
        yield client


# -- knowledge bases -------------------------------------------------------------------------


@kb_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Lower case letters, digits, '-' and '_'.")],
    description: Annotated[str, typer.Option(help="What the knowledge base holds.")] = "",
    embedder: Annotated[
        str | None, typer.Option(help="Embedding model (default: the bundled one).")
    ] = None,
    answer_model: Annotated[
        str | None, typer.Option(help="Chat model that writes answers.")
    ] = None,
    chunk_tokens: Annotated[
        int | None, typer.Option(min=16, help="Most tokens in a chunk.")
    ] = None,
    overlap_tokens: Annotated[
        int | None, typer.Option(min=0, help="Tokens shared by neighbouring chunks.")
    ] = None,
    strategy: Annotated[ChunkStrategy | None, typer.Option(help="Chunking strategy.")] = None,
    group: GroupOption = None,
    field_: Annotated[
        list[str] | None,
        typer.Option(
            "--field", help="Metadata field NAME:TYPE (string, int, float, bool, datetime)."
        ),
    ] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a knowledge base (needs an admin key)."""
    chunking = {
        key: value
        for key, value in (
            ("chunk_tokens", chunk_tokens),
            ("overlap_tokens", overlap_tokens),
            ("strategy", strategy.value if strategy else None),
        )
        if value is not None
    }
    body: dict[str, Any] = {"name": name, "description": description, "chunking": chunking}
    body["fields"] = _fields(field_ or [])
    body["access_groups"] = group or []
    body.update({k: v for k, v in (("embedder", embedder), ("answer_model", answer_model)) if v})
    with _client(api_key, url, config) as client:
        created = client.call("POST", json=body)
    out.print(f"created knowledge base {escape(created['name'])} ({created['id']})")


def _fields(specs: list[str]) -> dict[str, str]:
    fields = {}
    for spec in specs:
        name, colon, kind = spec.partition(":")
        if not colon or not name or not kind:
            raise typer.BadParameter(f"{spec!r} is not NAME:TYPE", param_hint="--field")
        fields[name.strip()] = kind.strip()
    return fields


@kb_app.command("list")
def list_all(
    api_key: ApiKeyOption = None, url: UrlOption = None, config: ConfigOption = None
) -> None:
    """List the knowledge bases."""
    with _client(api_key, url, config) as client:
        records = client.call("GET")["data"]
    table = Table("name", "description", "embedder", "created")
    table.add_column("id", no_wrap=True)
    for kb in records:
        table.add_row(
            text(kb["name"]), text(kb["description"]), text(kb["embedder"]),
            kb["created_at"][:19], kb["id"],
        )  # fmt: skip
    print_table(table)


@kb_app.command("show")
def show(
    kb: KbArgument, api_key: ApiKeyOption = None, url: UrlOption = None, config: ConfigOption = None
) -> None:
    """Show a knowledge base: settings, sources and counts."""
    with _client(api_key, url, config) as client:
        record = client.call("GET", kb)
    chunking = record["chunking"]
    rows = {
        "id": record["id"],
        "description": record["description"],
        "embedder": f"{record['embedder']} ({record['dimensions']} dimensions)",
        "answer model": record["answer_model"],
        "chunking": f"{chunking['strategy']}, {chunking['chunk_tokens']} tokens, "
        f"{chunking['overlap_tokens']} overlap",
        "fields": ", ".join(f"{k}:{v}" for k, v in record["fields"].items()) or "-",
        "access groups": ", ".join(record["access_groups"]) or "any inference key",
        "retrieval": f"{record['retrieval']['mode']}, top {record['retrieval']['top_k']}",
        "sources": ", ".join(s["name"] for s in record["sources"]) or "-",
        "documents": f"{record['documents']} ({record['failed_documents']} failed)",
        "chunks": record["chunks"],
    }
    table = Table(title=text(record["name"]), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows.items():
        table.add_row(label, text(value))
    print_table(table)


@kb_app.command("delete")
def delete(
    kb: KbArgument,
    yes: YesOption = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a knowledge base with its documents, chunks and sources."""
    if not yes:
        typer.confirm(f"Delete knowledge base {kb!r} and everything in it?", abort=True)
    with _client(api_key, url, config) as client:
        client.call("DELETE", kb)
    out.print(f"deleted knowledge base {escape(kb)}")


# -- ingest ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """One document to upload: what to call it on screen and on the server, and its bytes."""

    shown: str
    upload_name: str
    content: Path | bytes


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What became of one upload."""

    shown: str
    status: Literal["indexed", "unchanged", "failed"]
    chunks: int = 0
    reason: str = ""


@dataclass(slots=True)
class _Run:
    """An ingest run's outcomes, in order."""

    outcomes: list[_Outcome] = field(default_factory=list)
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    #: Why the run stopped before the last document (the server went away, the key...).
    stopped: str | None = None

    def count(self, status: str) -> int:
        """How many uploads ended with ``status``."""
        return sum(1 for outcome in self.outcomes if outcome.status == status)


class _RateColumn(ProgressColumn):
    """Average rate since the start: documents (completed steps) or a counted field."""

    def __init__(self, unit: str, counted: str | None = None) -> None:
        super().__init__()
        self._unit = unit
        self._counted = counted

    def render(self, task: Task) -> Text:
        """``12.5 docs/s``."""
        elapsed = task.elapsed or 0.0
        amount = task.completed if self._counted is None else task.fields.get(self._counted, 0)
        rate = amount / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.1f} {self._unit}/s", style="progress.data.speed")


@kb_app.command("ingest")
def ingest(
    target: Annotated[
        str,
        typer.Argument(
            help="A file; a folder (walked: hidden files and unsupported types skipped, "
            "sub/name.md uploaded as sub__name.md); an http(s) URL (downloaded here); or an "
            "s3://, gs://, az:// or file:// URL (a source the server syncs)."
        ),
    ],
    kb: Annotated[str, typer.Option("--kb", help="The knowledge base (name or id).")],
    pattern: Annotated[
        str | None,
        typer.Option(
            help="Only files matching this glob: with a '/' the path below the folder, "
            "without one the file name."
        ),
    ] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Upload documents into a knowledge base; failed ones are listed with their reasons."""
    scheme = urlsplit(target).scheme.lower() if "://" in target else ""
    with _client(api_key, url, config) as client:
        client.call("GET", kb)  # a wrong name or key fails before any work
        if scheme in _OBJECT_STORE_SCHEMES:
            _sync_object_store(client, kb, target, pattern)
            return
        if scheme in ("http", "https"):
            fetched = download(target)
            items, skipped = [_Item(fetched.name, fetched.name, fetched.data)], 0
        elif scheme:
            raise KnowledgeClientError(
                f"cannot ingest {scheme}:// URLs (http, https, s3, gs, az, file)"
            )
        else:
            items, skipped = _local_items(Path(target), pattern)
        run = _upload_all(client, kb, items)
    run.skipped = skipped
    _print_run(run)
    if run.stopped:
        raise fail(f"stopped after {len(run.outcomes)} of {len(items)} documents: {run.stopped}")
    failed = run.count("failed")
    if failed:
        raise fail(f"{failed} of {len(run.outcomes)} documents failed to index (see above)")


def _local_items(path: Path, pattern: str | None) -> tuple[list[_Item], int]:
    """The files to upload below ``path`` and how many were skipped."""
    if path.is_file():
        return [_Item(path.name, path.name, path)], 0
    if not path.is_dir():
        raise KnowledgeClientError(f"{path}: no such file or folder")
    # parsers pulls in pypdf, python-docx and bs4 (a third of a second); only this needs it.
    from atrium.rag.parsers import SUPPORTED_EXTENSIONS

    items, skipped = [], 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path).as_posix()
        if any(part.startswith(".") for part in file.relative_to(path).parts):
            continue
        if pattern and not _matches(relative, pattern):
            continue
        if file.suffix.lower() not in SUPPORTED_EXTENSIONS:
            skipped += 1
            continue
        items.append(_Item(relative, relative.replace("/", "__"), file))
    if not items:
        matching = f" matching {pattern!r}" if pattern else ""
        msg = f"{path}: no supported files{matching} ({skipped} of unsupported types skipped)"
        raise KnowledgeClientError(msg)
    return items, skipped


def _matches(relative: str, pattern: str) -> bool:
    if "/" in pattern:
        return fnmatch.fnmatch(relative, pattern)
    return fnmatch.fnmatch(PurePosixPath(relative).name, pattern)


def _upload_all(client: KnowledgeClient, kb: str, items: list[_Item]) -> _Run:
    run = _Run()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn("docs"),
        _RateColumn("chunks", counted="chunks"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    chunks = 0
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("uploading", total=len(items), chunks=0)
        for item in items:
            progress.update(task, description=item.shown)
            try:
                outcome = _upload_one(client, kb, item)
            except KnowledgeClientError as exc:
                # Not about this file: the next would fail alike. Report what was done.
                run.stopped = exc.message
                break
            run.outcomes.append(outcome)
            chunks += outcome.chunks if outcome.status == "indexed" else 0
            progress.update(task, advance=1, chunks=chunks)
        progress.update(task, description="stopped" if run.stopped else "done")
    return run


def _upload_one(client: KnowledgeClient, kb: str, item: _Item) -> _Outcome:
    try:
        if isinstance(item.content, bytes):
            answer = client.upload(kb, item.upload_name, item.content)
        else:
            with item.content.open("rb") as content:
                answer = client.upload(kb, item.upload_name, content)
    except ApiError as exc:
        if not exc.concerns_one_file:
            raise
        return _Outcome(item.shown, "failed", reason=_own_reason(exc.detail, item.upload_name))
    except OSError as exc:
        return _Outcome(item.shown, "failed", reason=f"cannot read it: {exc.strerror}")
    document = answer.get("document")
    if document is None or document["status"] != "indexed":
        reason = document["reason"] if document else "the server kept no document for it"
        return _Outcome(item.shown, "failed", reason=str(reason))
    sync = answer["sync"]
    # Each upload syncs the uploads folder: nothing added or updated means this file was known.
    status: Literal["indexed", "unchanged"] = (
        "indexed" if sync["added"] + sync["updated"] else "unchanged"
    )
    return _Outcome(item.shown, status, int(document["chunks"]))


def _own_reason(message: str, name: str) -> str:
    """The server's reason without the file name it starts with (the table shows it)."""
    for prefix in (f"{name}: ", f"{name!r}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _print_run(run: _Run) -> None:
    table = Table("indexed", "unchanged", "failed", "skipped", "chunks indexed", "seconds")
    table.add_row(
        str(run.count("indexed")),
        str(run.count("unchanged")),
        str(run.count("failed")),
        str(run.skipped),
        str(sum(o.chunks for o in run.outcomes if o.status == "indexed")),
        f"{time.monotonic() - run.started:.1f}",
    )
    print_table(table)
    failures = [(o.shown, o.reason) for o in run.outcomes if o.status == "failed"]
    _print_failures(failures)


def _print_failures(failures: list[tuple[str, str]]) -> None:
    if not failures:
        return
    table = Table("document", "reason", title="failed documents", title_justify="left")
    for name, reason in failures:
        table.add_row(text(name), text(reason))
    print_table(table)


def _sync_object_store(client: KnowledgeClient, kb: str, url: str, pattern: str | None) -> None:
    """Create (or reuse) an fsspec source for ``url``, sync it, print the report."""
    name = _source_name(url)
    existing = {s["name"]: s for s in client.call("GET", kb, "sources")["data"]}
    if name in existing:
        connector = existing[name]["connector"]
        if connector.get("url") != url or (pattern and connector.get("glob") != pattern):
            msg = f"source {name!r} exists with other settings; remove it first"
            raise KnowledgeClientError(msg)
        err.print(f"syncing source {escape(name)}")
    else:
        spec = {"kind": "fsspec", "url": url, **({"glob": pattern} if pattern else {})}
        client.call("POST", kb, "sources", json={"name": name, "connector": spec})
        err.print(f"created source {escape(name)}; syncing it")
    _sync_and_report(client, kb, name)


def _source_name(url: str) -> str:
    """A source name for a URL: ``s3://bucket/docs/`` -> ``s3-bucket-docs``."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "-" for c in url)
    name = "-".join(part for part in cleaned.split("-") if part).strip(".")
    return name[:100] or "object-store"


def _sync_and_report(client: KnowledgeClient, kb: str, source: str) -> None:
    with err.status(f"syncing {escape(source)}…"):
        report = client.sync(kb, source)
    _print_report(report)
    if report["error"]:
        raise KnowledgeClientError(f"the sync of {source!r} failed: {report['error']}")
    if report["failed"]:
        failed = len(report["failed"])
        msg = f"{failed} of {report['documents_seen']} documents of {source!r} failed (see above)"
        raise KnowledgeClientError(msg)


def _print_report(report: dict[str, Any]) -> None:
    columns = ("documents_seen", "added", "updated", "unchanged", "deleted", "chunks_indexed")
    table = Table(*(c.replace("_", " ") for c in columns), "failed", "seconds")
    table.add_row(
        *(str(report[c]) for c in columns), str(len(report["failed"])), str(report["seconds"])
    )
    print_table(table)
    _print_failures([(f["key"], f["reason"]) for f in report["failed"]])


# -- queries ---------------------------------------------------------------------------------


class SearchMode(StrEnum):
    """Which searches a query runs."""

    HYBRID = "hybrid"
    DENSE = "dense"
    LEXICAL = "lexical"


@kb_app.command("query")
def query(
    kb: KbArgument,
    question: Annotated[str, typer.Argument(help="What to ask.")],
    top_k: Annotated[int | None, typer.Option(min=1, max=100, help="Passages to retrieve.")] = None,
    filter_: Annotated[
        str | None,
        typer.Option("--filter", help='Metadata filter as JSON, e.g. \'{"desk": "rates"}\'.'),
    ] = None,
    mode: Annotated[SearchMode | None, typer.Option(help="Searches to run.")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Most answer tokens.")] = None,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Wait for the whole answer.")
    ] = False,
    search_only: Annotated[
        bool, typer.Option("--search-only", help="Only retrieve passages; no answer.")
    ] = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Ask a knowledge base: the answer (streamed), then its numbered citations."""
    body: dict[str, Any] = {"query": question}
    optional = {"top_k": top_k, "mode": mode.value if mode else None, "max_tokens": max_tokens}
    body.update({k: v for k, v in optional.items() if v is not None})
    if filter_ is not None:
        body["filter"] = _json_object(filter_)
    with _client(api_key, url, config) as client:
        if search_only:
            found = client.call("POST", kb, "search", json=body, timeout=QUERY_TIMEOUT_S)
            citations = found["citations"]
        elif no_stream:
            answer = client.call("POST", kb, "query", json=body, timeout=QUERY_TIMEOUT_S)
            out.print(answer["answer"], markup=False, highlight=False, soft_wrap=True)
            citations = answer["citations"]
        else:
            citations = _stream_answer(client, kb, body)
    _print_citations(citations)


def _json_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--filter") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--filter")
    return value


def _stream_answer(client: KnowledgeClient, kb: str, body: dict[str, Any]) -> list[Any]:
    """Write the answer's text as it arrives; return the citations sent before it."""
    citations: list[Any] = []
    for event, data in client.answer_events(kb, body):
        if event == "citations":
            citations = data["citations"]
        elif event == "delta":
            sys.stdout.write(data["text"])
            sys.stdout.flush()
        elif event in ("error", "done"):
            sys.stdout.write("\n")
            if event == "error":
                raise KnowledgeClientError(data["error"]["message"])
            return citations
    sys.stdout.write("\n")
    raise KnowledgeClientError("the answer stream ended before it was done")


def _print_citations(citations: list[Any]) -> None:
    if not citations:
        out.print("no passage matched", style="dim")
        return
    table = Table("#", "title", "score", "snippet", title="citations", title_justify="left")
    for citation in citations:
        title = citation["title"] or citation["document_id"]
        if citation.get("section") and citation["section"] != title:
            title = f"{title} / {citation['section']}"
        if citation.get("page"):
            title = f"{title} (p. {citation['page']})"
        table.add_row(
            str(citation["number"]),
            text(title),
            f"{citation['score']:.3f}",
            text(citation["snippet"]),
        )
    print_table(table)


# -- sources and documents -------------------------------------------------------------------


@kb_app.command("sources")
def sources(
    kb: KbArgument, api_key: ApiKeyOption = None, url: UrlOption = None, config: ConfigOption = None
) -> None:
    """List a knowledge base's sources with their sync state."""
    with _client(api_key, url, config) as client:
        records = client.call("GET", kb, "sources")["data"]
    table = Table(
        "name", "kind", "location", "status", "documents", "failed", "last sync", "last error"
    )
    for source in records:
        connector = source["connector"]
        table.add_row(
            text(source["name"]),
            connector["kind"],
            text(_location(connector)),
            source["status"],
            str(source["documents"]),
            str(source["failed_documents"]),
            (source["last_sync_at"] or "never")[:19],
            text(source["last_error"] or ""),
        )
    print_table(table)


def _location(connector: dict[str, Any]) -> str:
    """Where a source reads from, for a table (secrets are masked by the server)."""
    for key in ("path", "url", "query"):
        if connector.get(key):
            return str(connector[key])
    return ""


@kb_app.command("sync")
def sync(
    kb: KbArgument,
    source: Annotated[str, typer.Argument(help="The source's name.")],
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Sync one source now and print what changed."""
    with _client(api_key, url, config) as client:
        _sync_and_report(client, kb, source)


@kb_app.command("delete-source")
def delete_source(
    kb: KbArgument,
    source: Annotated[str, typer.Argument(help="The source's name.")],
    yes: YesOption = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Remove a source with its documents and their chunks from every index."""
    if not yes:
        typer.confirm(f"Remove source {source!r} of {kb!r} and its documents?", abort=True)
    with _client(api_key, url, config) as client:
        client.call("DELETE", kb, "sources", source)
    out.print(f"deleted source {escape(source)}")


@kb_app.command("add-folder")
def add_folder(
    kb: KbArgument,
    source: Annotated[str, typer.Argument(help="A name for the source.")],
    path: Annotated[
        str,
        typer.Argument(help="A folder on the server: absolute, or below its data directory."),
    ],
    group: GroupOption = None,
    interval: Annotated[
        int | None, typer.Option(min=1, help="Re-sync every this many minutes.")
    ] = None,
    sync_now: Annotated[bool, typer.Option("--sync/--no-sync", help="Sync it at once.")] = True,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a folder on the server as a source (it must be in the allowed folders)."""
    body: dict[str, Any] = {"name": source, "connector": {"kind": "folder", "path": path}}
    if group:
        body["access_groups"] = group
    if interval:
        body["sync_interval_minutes"] = interval
    with _client(api_key, url, config) as client:
        client.call("POST", kb, "sources", json=body)
        out.print(f"added source {escape(source)}")
        if sync_now:
            _sync_and_report(client, kb, source)


@kb_app.command("documents")
def documents(
    kb: KbArgument,
    failed: Annotated[bool, typer.Option("--failed", help="Only documents that failed.")] = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """List a knowledge base's documents (and why failed ones failed)."""
    params = {"status": "failed"} if failed else {}
    with _client(api_key, url, config) as client:
        records = client.call("GET", kb, "documents", params=params)["data"]
    table = Table("document", "status", "type", "chunks", "updated", "reason")
    table.add_column("id", no_wrap=True)
    for document in records:
        table.add_row(
            text(document["key"]),
            document["status"],
            document["doc_type"] or "-",
            str(document["chunks"]),
            document["updated_at"][:19],
            text(document["reason"] or ""),
            document["id"],
        )
    print_table(table)


@kb_app.command("delete-document")
def delete_document(
    kb: KbArgument,
    document: Annotated[str, typer.Argument(help="The uploaded document: its name or id.")],
    yes: YesOption = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete an uploaded document (a failed one too) with its file and chunks."""
    with _client(api_key, url, config) as client:
        records = client.call("GET", kb, "documents")["data"]
        matches = [d for d in records if document in (d["id"], d["key"])]
        if not matches:
            raise fail(f"no document {document!r} in knowledge base {kb!r}")
        if len(matches) > 1:
            ids = ", ".join(d["id"] for d in matches)
            raise fail(f"{len(matches)} documents are named {document!r}; pass an id: {ids}")
        target = matches[0]
        if not yes:
            typer.confirm(f"Delete {target['key']!r} from {kb!r}?", abort=True)
        client.call("DELETE", kb, "documents", target["id"])
    out.print(f"deleted document {escape(target['key'])} ({target['status']})")
