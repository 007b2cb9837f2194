"""The knowledge-base API end to end, in process: upload, sync, search, answer, feedback.

The platform runs on SQLite with the embedded LanceDB index, the bundled MiniLM embedder
and the bundled SmolLM2 answer model: every part is the real one.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest
import pytest_asyncio

from atrium.app import Platform, build_app, build_platform
from atrium.core.settings import LlamaCppModel, OnnxEmbeddingModel, Settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ADMIN_KEY = "atr-" + "k" * 40

RATES = """# Rates outlook

The desk expects the central bank to cut interest rates twice in 2027.

## Risks

Sticky services inflation above three percent could delay the first cut.
"""
ENERGY = "Brent crude rose five percent after the OPEC meeting in Vienna cut output quotas."
CREDIT = "issuer,rating,outlook\nAcme Corp,BBB,negative\nGlobex,A,stable\n"


@dataclass
class Running:
    platform: Platform
    admin: httpx.AsyncClient
    data_dir: Path

    async def key(self, *groups: str) -> httpx.AsyncClient:
        """A client with a new inference key in ``groups``."""
        created = await self.admin.post(
            "/v1/admin/keys", json={"name": "reader", "access_groups": list(groups)}
        )
        assert created.status_code == 201, created.text
        headers = {"authorization": f"Bearer {created.json()['key']}"}
        return httpx.AsyncClient(
            transport=self.admin._transport, base_url="http://atrium", headers=headers
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data_dir = tmp_path_factory.mktemp("atrium")
    settings = Settings(
        data_dir=data_dir,
        auth={"bootstrap_key": ADMIN_KEY, "cache_ttl_seconds": 0},  # type: ignore[arg-type]
        models={
            "smol": LlamaCppModel(n_ctx=2048, aliases=["default"]),
            "minilm": OnnxEmbeddingModel(aliases=["default-embedding"]),
        },
        rag={"max_upload_bytes": 200_000, "allowed_hosts": ["127.0.0.1"]},  # type: ignore[arg-type]
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app),
            base_url="http://atrium",
            headers=headers,
            timeout=120,
        ) as admin:
            yield Running(platform, admin, data_dir)
    finally:
        await platform.close()


async def _upload(client: httpx.AsyncClient, kb: str, name: str, data: bytes) -> httpx.Response:
    return await client.post(f"/v1/knowledge-bases/{kb}/documents", files={"file": (name, data)})


async def _kb(running: Running, name: str, **spec: object) -> str:
    created = await running.admin.post("/v1/knowledge-bases", json={"name": name, **spec})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _titles(client: httpx.AsyncClient, kb: str, query: str, **extra: object) -> list[str]:
    found = await client.post(f"/v1/knowledge-bases/{kb}/search", json={"query": query, **extra})
    assert found.status_code == 200, found.text
    return [citation["title"] for citation in found.json()["citations"]]


async def test_uploaded_documents_are_searched_and_answered_with_citations(
    running: Running,
) -> None:
    kb = await _kb(running, "markets")
    for name, data in (
        ("outlook.md", RATES.encode()),
        ("energy.txt", ENERGY.encode()),
        ("credit.csv", CREDIT.encode()),
    ):
        uploaded = await _upload(running.admin, "markets", name, data)
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["document"]["status"] == "indexed"

    assert (await _titles(running.admin, "markets", "when will rates be cut?"))[
        0
    ] == "Rates outlook"
    assert (await _titles(running.admin, kb, "oil price after OPEC"))[0] == "energy.txt"

    answered = await running.admin.post(
        "/v1/knowledge-bases/markets/query", json={"query": "What did Brent crude do?"}
    )
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["answer"].strip()
    assert body["query_id"].startswith("qry_")
    assert body["usage"]["completion_tokens"] > 0
    first = body["citations"][0]
    assert first["title"] == "energy.txt"
    assert first["snippet"] == ENERGY
    assert first["link"] == f"/v1/knowledge-bases/{kb}/documents/{first['document_id']}"
    assert [c["number"] for c in body["citations"]] == list(range(1, len(body["citations"]) + 1))
    assert body["context"][0]["text"] == f"energy.txt\n{ENERGY}"

    described = (await running.admin.get("/v1/knowledge-bases/markets")).json()
    assert described["documents"] == 3
    assert described["chunks"] >= 3


async def test_a_streamed_answer_sends_citations_deltas_and_the_query_id(running: Running) -> None:
    await _kb(running, "stream")
    await _upload(running.admin, "stream", "energy.txt", ENERGY.encode())
    async with running.admin.stream(
        "POST", "/v1/knowledge-bases/stream/query", json={"query": "Brent?", "stream": True}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = (await response.aread()).decode()
    events = [
        (block.split("\n")[0].removeprefix("event: "), json.loads(block.split("\n")[1][6:]))
        for block in raw.strip().split("\n\n")
    ]
    names = [name for name, _ in events]
    assert names[0] == "citations"
    assert names[-1] == "done"
    assert set(names[1:-1]) == {"delta"}
    text = "".join(payload["text"] for name, payload in events if name == "delta")
    assert events[-1][1]["answer"] == text
    assert events[-1][1]["query_id"].startswith("qry_")


async def test_bad_uploads_are_refused_and_failed_documents_listed(running: Running) -> None:
    await _kb(running, "uploads")
    unsupported = await _upload(running.admin, "uploads", "tool.exe", b"MZ\x90\x00")
    assert unsupported.status_code == 400
    assert unsupported.json()["error"]["code"] == "unsupported_file_type"

    binary = await _upload(running.admin, "uploads", "notes.txt", bytes(range(256)) * 8)
    assert binary.status_code == 400
    assert binary.json()["error"]["code"] == "document_failed"
    assert "binary" in binary.json()["error"]["message"]

    empty = await _upload(running.admin, "uploads", "empty.md", b"")
    assert empty.status_code == 400

    too_big = await _upload(running.admin, "uploads", "big.txt", b"a " * 150_000)
    assert too_big.status_code in (400, 413)

    escaped = await _upload(running.admin, "uploads", "../../escape.txt", b"outside?")
    assert escaped.status_code == 400
    assert not (running.data_dir / "escape.txt").exists()

    failed = await running.admin.get("/v1/knowledge-bases/uploads/documents?status=failed")
    reasons = {doc["key"]: doc["reason"] for doc in failed.json()["data"]}
    assert set(reasons) == {"notes.txt", "empty.md"}
    assert await _titles(running.admin, "uploads", "binary notes") == []

    not_multipart = await running.admin.post(
        "/v1/knowledge-bases/uploads/documents", json={"file": "x"}
    )
    assert not_multipart.status_code == 400


async def test_a_changed_upload_replaces_its_chunks(running: Running) -> None:
    await _kb(running, "versions")
    await _upload(running.admin, "versions", "memo.txt", b"The hedge ratio is seventy percent.")
    changed = await _upload(
        running.admin, "versions", "memo.txt", b"The desk closed the zinc position."
    )
    assert changed.json()["sync"]["updated"] == 1
    found = await running.admin.post(
        "/v1/knowledge-bases/versions/search", json={"query": "hedge ratio seventy", "top_k": 5}
    )
    snippets = [c["snippet"] for c in found.json()["citations"]]
    assert snippets == ["The desk closed the zinc position."]


async def test_folder_sources_sync_incrementally(running: Running) -> None:
    folder = running.data_dir / "research"
    folder.mkdir()
    for index in range(3):
        (folder / f"note{index}.md").write_text(f"# Note {index}\n\nCopper note number {index}.")
    await _kb(running, "folders")
    added = await running.admin.post(
        "/v1/knowledge-bases/folders/sources",
        json={"name": "research", "connector": {"kind": "folder", "path": str(folder)}},
    )
    assert added.status_code == 201, added.text

    async def sync() -> dict[str, object]:
        response = await running.admin.post("/v1/knowledge-bases/folders/sources/research/sync")
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert (await sync())["added"] == 3
    assert (await sync())["unchanged"] == 3
    (folder / "note1.md").write_text("# Note 1\n\nNickel instead.")
    (folder / "note2.md").unlink()
    report = await sync()
    assert (report["updated"], report["deleted"], report["unchanged"]) == (1, 1, 1)
    titles = await _titles(running.admin, "folders", "copper note")
    assert sorted(titles) == ["Note 0", "Note 1"]

    outside = await running.admin.post(
        "/v1/knowledge-bases/folders/sources",
        json={"name": "etc", "connector": {"kind": "folder", "path": "/etc"}},
    )
    assert outside.status_code == 400


async def test_access_groups_decide_what_a_key_sees(running: Running) -> None:
    await _kb(running, "restricted", access_groups=["risk"])
    desk = running.data_dir / "desk-a"
    desk.mkdir()
    (desk / "limits.md").write_text("# Desk A limits\n\nThe desk A copper limit is 40 lots.")
    await _upload(running.admin, "restricted", "policy.md", b"# Policy\n\nCopper limits apply.")
    await running.admin.post(
        "/v1/knowledge-bases/restricted/sources",
        json={
            "name": "desk-a",
            "connector": {"kind": "folder", "path": str(desk)},
            "access_groups": ["desk-a"],
        },
    )
    await running.admin.post("/v1/knowledge-bases/restricted/sources/desk-a/sync")

    outsider = await running.key()
    denied = await outsider.post("/v1/knowledge-bases/restricted/search", json={"query": "x"})
    assert denied.status_code == 403

    risk = await running.key("risk")
    assert await _titles(risk, "restricted", "copper limit") == ["Policy"]
    both = await running.key("risk", "desk-a")
    assert set(await _titles(both, "restricted", "copper limit")) == {"Policy", "Desk A limits"}
    assert set(await _titles(running.admin, "restricted", "copper limit")) == {
        "Policy",
        "Desk A limits",
    }
    manage = await risk.post("/v1/knowledge-bases", json={"name": "mine"})
    assert manage.status_code == 403

    # Outside the groups: not listed, not described; inside: no source configuration.
    listed = {kb["name"] for kb in (await outsider.get("/v1/knowledge-bases")).json()["data"]}
    assert "restricted" not in listed
    assert (await outsider.get("/v1/knowledge-bases/restricted")).status_code == 403
    assert (await outsider.get("/v1/knowledge-bases/restricted/documents")).status_code == 403
    shown = (await risk.get("/v1/knowledge-bases/restricted")).json()
    assert {s["name"] for s in shown["sources"]} == {"uploads", "desk-a"}
    assert all("connector" not in s for s in shown["sources"])
    assert (await risk.get("/v1/knowledge-bases/restricted/sources")).status_code == 403
    assert "restricted" in {
        kb["name"] for kb in (await risk.get("/v1/knowledge-bases")).json()["data"]
    }
    for client in (outsider, risk, both):
        await client.aclose()


async def test_filters_rules_and_bad_filters(running: Running) -> None:
    await _kb(
        running,
        "filtered",
        fields={"desk": "string"},
        rules={"boosts": [{"when": {"desk": "metals"}, "factor": 3.0}]},
    )
    for desk in ("rates", "metals"):
        folder = running.data_dir / f"filtered-{desk}"
        folder.mkdir()
        (folder / f"{desk}.md").write_text(f"# {desk} update\n\nWeekly market update for {desk}.")
        await running.admin.post(
            "/v1/knowledge-bases/filtered/sources",
            json={
                "name": desk,
                "connector": {"kind": "folder", "path": str(folder)},
                "metadata": {"desk": desk},
            },
        )
        await running.admin.post(f"/v1/knowledge-bases/filtered/sources/{desk}/sync")

    only_rates = await _titles(
        running.admin, "filtered", "weekly update", filter={"desk": {"$eq": "rates"}}
    )
    assert only_rates == ["rates update"]
    assert (await _titles(running.admin, "filtered", "weekly rates update"))[0] == "metals update"

    for bad in ({"desk": {"$gt": "a"}}, {"unknown": 1}, {"desk": {"$in": "rates"}}):
        refused = await running.admin.post(
            "/v1/knowledge-bases/filtered/search", json={"query": "x", "filter": bad}
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "filter"


async def test_feedback_moves_confirmed_chunks_up_for_similar_queries(running: Running) -> None:
    await _kb(running, "learning")
    await _upload(running.admin, "learning", "a.txt", b"Copper inventories fell in Shanghai.")
    await _upload(running.admin, "learning", "b.txt", b"Copper demand from grid investment.")
    query = {"query": "copper inventories in Shanghai", "top_k": 2}
    first = (await running.admin.post("/v1/knowledge-bases/learning/search", json=query)).json()
    assert [c["title"] for c in first["citations"]] == ["a.txt", "b.txt"]
    chunk_b = first["citations"][1]["chunk_id"]
    chunk_a = first["citations"][0]["chunk_id"]
    given = await running.admin.post(
        "/v1/knowledge-bases/learning/feedback",
        json={"query_id": first["query_id"], "useful": [chunk_b], "not_useful": [chunk_a]},
    )
    assert given.status_code == 201, given.text
    again = (await running.admin.post("/v1/knowledge-bases/learning/search", json=query)).json()
    assert [c["title"] for c in again["citations"]] == ["b.txt", "a.txt"]

    unknown_chunk = await running.admin.post(
        "/v1/knowledge-bases/learning/feedback",
        json={"query_id": first["query_id"], "useful": ["doc_x:0"]},
    )
    assert unknown_chunk.status_code == 400
    empty = await running.admin.post(
        "/v1/knowledge-bases/learning/feedback", json={"query_id": first["query_id"]}
    )
    assert empty.status_code == 400
    missing = await running.admin.post(
        "/v1/knowledge-bases/learning/feedback", json={"query_id": "qry_nope", "rating": "up"}
    )
    assert missing.status_code == 404


async def test_administrators_read_the_feedback_with_its_question(running: Running) -> None:
    await _kb(running, "rated")
    await _upload(running.admin, "rated", "a.txt", b"Nickel prices rose in March.")
    asked = await running.admin.post("/v1/knowledge-bases/rated/search", json={"query": "nickel"})
    query_id = asked.json()["query_id"]
    for rating, comment in (("up", None), ("down", "It missed the April figure.")):
        given = await running.admin.post(
            "/v1/knowledge-bases/rated/feedback",
            json={"query_id": query_id, "rating": rating, "comment": comment},
        )
        assert given.status_code == 201, given.text
    listed = await running.admin.get("/v1/knowledge-bases/rated/feedback", params={"limit": 5})
    assert listed.status_code == 200, listed.text
    newest, oldest = listed.json()["data"]
    assert (newest["rating"], newest["comment"]) == ("down", "It missed the April figure.")
    assert (oldest["rating"], oldest["comment"]) == ("up", None)
    assert newest["query"] == "nickel"
    assert newest["query_id"] == query_id

    reader = await running.key()
    assert (await reader.get("/v1/knowledge-bases/rated/feedback")).status_code == 403
    await reader.aclose()
    bad = await running.admin.get("/v1/knowledge-bases/rated/feedback", params={"limit": 0})
    assert bad.status_code == 400
    assert (await running.admin.get("/v1/knowledge-bases/nope/feedback")).status_code == 404


async def test_deleting_a_knowledge_base_removes_its_chunks(running: Running) -> None:
    kb = await _kb(running, "doomed")
    await _upload(running.admin, "doomed", "energy.txt", ENERGY.encode())
    assert await running.platform.index.count(kb) == 1
    deleted = await running.admin.delete("/v1/knowledge-bases/doomed")
    assert deleted.status_code == 200
    assert (await running.admin.get("/v1/knowledge-bases/doomed")).status_code == 404
    recreated = await _kb(running, "doomed")
    assert await running.platform.index.count(recreated) == 0
    assert not (running.data_dir / "uploads" / kb).exists()


async def test_bad_knowledge_base_specs_are_refused(running: Running) -> None:
    cases = [
        {"name": "Bad Name"},
        {"name": "ok", "fields": {"title": "string"}},
        {"name": "ok", "chunking": {"chunk_tokens": 100, "overlap_tokens": 100}},
        {"name": "ok", "embedder": "default"},
        {"name": "ok", "rules": {"recency": {"field": "desk", "half_life_days": 3}}},
    ]
    for body in cases:
        refused = await running.admin.post("/v1/knowledge-bases", json=body)
        assert refused.status_code in (400, 404), (body, refused.text)
        assert "error" in refused.json()
    await _kb(running, "taken")
    assert (
        await running.admin.post("/v1/knowledge-bases", json={"name": "taken"})
    ).status_code == 400


async def test_a_knowledge_base_answers_as_a_chat_model_with_citations(running: Running) -> None:
    await _kb(running, "chatty")
    await _upload(running.admin, "chatty", "energy.txt", ENERGY.encode())
    client = openai.AsyncOpenAI(
        api_key=ADMIN_KEY,
        base_url="http://atrium/v1",
        http_client=httpx.AsyncClient(transport=running.admin._transport, timeout=120),
    )
    messages: list[Any] = [{"role": "user", "content": "What did Brent crude do?"}]
    completion = await client.chat.completions.create(
        model="rag/chatty", messages=messages, max_tokens=40, temperature=0
    )
    assert completion.model == "rag/chatty"
    assert completion.choices[0].message.content
    extra = completion.model_extra or {}
    assert extra["citations"][0]["title"] == "energy.txt"
    assert extra["query_id"].startswith("qry_")

    stream = await client.chat.completions.create(
        model="rag/chatty", messages=messages, max_tokens=20, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert (chunks[0].model_extra or {})["citations"][0]["title"] == "energy.txt"
    [passage] = (chunks[0].model_extra or {})["context"]
    assert passage["number"] == 1
    assert "Brent" in passage["text"]  # the whole passage, for the UI to open
    assert {chunk.model for chunk in chunks} == {"rag/chatty"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="rag/missing", messages=messages)
    no_user: list[Any] = [{"role": "system", "content": "hi"}]
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="rag/chatty", messages=no_user)
    await client.close()


class _Reranker(http.server.BaseHTTPRequestHandler):
    """Cohere's /v1/rerank wire format: documents mentioning "zinc" score highest."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).requests.append({"auth": self.headers.get("authorization"), **body})
        scores = [
            1.0 if "zinc" in doc else 0.1 / (i + 1) for i, doc in enumerate(body["documents"])
        ]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[: body["top_n"]]
        payload = {
            "id": "rr-1",
            "results": [{"index": i, "relevance_score": scores[i]} for i in order],
            "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


async def test_a_configured_reranker_reorders_results(running: Running) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Reranker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        put = await running.admin.put("/v1/admin/secrets/rerank-key", json={"value": "rk-123"})
        assert put.status_code == 200
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/rerank"
        reranker = {"url": url, "model": "rerank-v3", "api_key_secret": "rerank-key"}
        await _kb(running, "reranked", retrieval={"reranker": reranker})
        await _upload(running.admin, "reranked", "copper.txt", b"Copper copper copper stocks.")
        await _upload(running.admin, "reranked", "zinc.txt", b"Zinc stocks, not much copper.")
        titles = await _titles(running.admin, "reranked", "copper stocks")
        assert titles[0] == "zinc.txt"
        sent = _Reranker.requests[-1]
        assert sent["auth"] == "Bearer rk-123"
        assert sent["query"] == "copper stocks"
        assert sent["model"] == "rerank-v3"
        listed = await running.admin.get("/v1/admin/secrets")
        assert listed.json()["data"] == [{"name": "rerank-key"}]
        assert "rk-123" not in listed.text
    finally:
        server.shutdown()
        server.server_close()


async def test_pinned_excluded_and_recency_rules(running: Running) -> None:
    await _kb(running, "ruled")
    folder = running.data_dir / "ruled"
    folder.mkdir()
    texts = {
        "old.md": "# Old memo\n\nNickel supply outlook for the quarter.",
        "new.md": "# New memo\n\nNickel supply outlook for the quarter!",
        "other.md": "# Other\n\nCocoa harvest in Ghana.",
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    year = 365 * 86_400
    os.utime(folder / "old.md", (time.time() - 3 * year, time.time() - 3 * year))
    await running.admin.post(
        "/v1/knowledge-bases/ruled/sources",
        json={"name": "memos", "connector": {"kind": "folder", "path": str(folder)}},
    )
    await running.admin.post("/v1/knowledge-bases/ruled/sources/memos/sync")
    ids = {
        d["key"]: d["id"]
        for d in (await running.admin.get("/v1/knowledge-bases/ruled/documents")).json()["data"]
    }

    recency = {"rules": {"recency": {"field": "updated_at", "half_life_days": 30, "weight": 1}}}
    assert (await running.admin.patch("/v1/knowledge-bases/ruled", json=recency)).status_code == 200
    # Three years at a 30-day half-life: the old memo sinks below even the unrelated one.
    assert await _titles(running.admin, "ruled", "nickel supply outlook") == [
        "New memo",
        "Other",
        "Old memo",
    ]

    rules = {"rules": {"pinned": [ids["other.md"]], "excluded": [ids["new.md"]]}}
    assert (await running.admin.patch("/v1/knowledge-bases/ruled", json=rules)).status_code == 200
    assert await _titles(running.admin, "ruled", "nickel supply outlook") == ["Other", "Old memo"]

    fixed = await running.admin.patch("/v1/knowledge-bases/ruled", json={"embedder": "x"})
    assert fixed.status_code == 400
    assert fixed.json()["error"]["param"] == "embedder"
    bad = await running.admin.patch("/v1/knowledge-bases/ruled", json={"retrieval": {"top_k": 0}})
    assert bad.status_code == 400


async def test_the_platform_runs_on_the_pgvector_index(
    pgvector_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("atrium-pg"),
        auth={"bootstrap_key": ADMIN_KEY, "cache_ttl_seconds": 0},  # type: ignore[arg-type]
        models={"minilm": OnnxEmbeddingModel(aliases=["default-embedding"])},
        rag={"index": "pgvector", "pgvector_url": pgvector_url},  # type: ignore[arg-type]
        # The module's first platform runs this process's workflow engine (one per process).
        workflows={"enabled": False},  # type: ignore[arg-type]
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium", headers=headers
        ) as admin:
            created = await admin.post("/v1/knowledge-bases", json={"name": "pg"})
            kb = created.json()["id"]
            for name, data in (("energy.txt", ENERGY), ("outlook.md", RATES)):
                uploaded = await _upload(admin, "pg", name, data.encode())
                assert uploaded.status_code == 201, uploaded.text
            assert (await _titles(admin, "pg", "Brent crude OPEC"))[0] == "energy.txt"
            assert (await _titles(admin, "pg", "rate cuts", mode="lexical"))[0] == "Rates outlook"
            assert await platform.index.count(kb) >= 2
            assert (await admin.delete("/v1/knowledge-bases/pg")).status_code == 200
    finally:
        await platform.close()


async def test_a_source_that_cannot_be_reached_fails_with_its_reason(running: Running) -> None:
    await _kb(running, "unreachable")
    await _upload(running.admin, "unreachable", "energy.txt", ENERGY.encode())
    sql = {
        "kind": "sql",
        "url": "postgresql://reader@127.0.0.1:1/nowhere",
        "query": "SELECT id, body FROM notes",
        "id_column": "id",
        "template": "{body}",
        "connect_timeout_seconds": 2,
    }
    added = await running.admin.post(
        "/v1/knowledge-bases/unreachable/sources", json={"name": "db", "connector": sql}
    )
    assert added.status_code == 201, added.text
    report = (await running.admin.post("/v1/knowledge-bases/unreachable/sources/db/sync")).json()
    assert report["error"]
    assert "127.0.0.1:1" in report["error"]
    sources = (await running.admin.get("/v1/knowledge-bases/unreachable/sources")).json()["data"]
    db = next(source for source in sources if source["name"] == "db")
    assert db["status"] == "failed"
    assert db["last_error"] == report["error"]
    # The other source's documents are untouched.
    assert await _titles(running.admin, "unreachable", "Brent crude") == ["energy.txt"]
