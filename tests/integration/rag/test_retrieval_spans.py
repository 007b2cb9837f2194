"""Retrieval is traced (embed, search under retrieve) and a sync announces its outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from atrium.app import build_app, build_platform
from atrium.bus.events import KnowledgeSynced
from atrium.core.settings import LlamaCppModel, OnnxEmbeddingModel, Settings

pytestmark = pytest.mark.integration

KEY = "atr-" + "r" * 40
CREDIT = "issuer,rating,outlook\nAcme Corp,BBB,negative\nGlobex,A,stable\n"


async def test_a_search_is_traced_and_an_upload_announces_its_sync(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        auth={"bootstrap_key": KEY},
        tracing={"enabled": True},
        models={
            "smol": LlamaCppModel(n_ctx=2048, aliases=["default"]),
            "minilm": OnnxEmbeddingModel(aliases=["default-embedding"]),
        },
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    assert platform.tracing is not None
    exporter = InMemorySpanExporter()
    platform.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_app(settings, platform)
    synced: list[KnowledgeSynced] = []

    async def on_sync(event: KnowledgeSynced) -> None:
        synced.append(event)

    await platform.start()
    try:
        await platform.bus.subscribe(KnowledgeSynced, "test", "t1", on_sync)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium",
            headers={"authorization": f"Bearer {KEY}"}, timeout=120,
        ) as admin:  # fmt: skip
            created = await admin.post("/v1/knowledge-bases", json={"name": "credit"})
            assert created.status_code == 201, created.text
            upload = await admin.post(
                "/v1/knowledge-bases/credit/documents", files={"file": ("c.csv", CREDIT.encode())}
            )
            assert upload.status_code in (200, 201), upload.text
            found = await admin.post("/v1/knowledge-bases/credit/search", json={"query": "Acme"})
            assert found.status_code == 200, found.text
        for _ in range(400):
            if synced:
                break
            await asyncio.sleep(0.025)
    finally:
        await platform.close()
    [event] = synced
    assert (event.knowledge_base, event.status, event.failed_documents) == ("credit", "ok", 0)
    assert event.added == 1
    spans = {s.name: s for s in exporter.get_finished_spans()}
    retrieve = spans["rag.retrieve"]
    assert (retrieve.attributes or {})["rag.knowledge_base"] == "credit"
    for child in ("rag.embed", "rag.search"):
        parent = spans[child].parent
        assert parent is not None
        assert parent.span_id == retrieve.context.span_id
    [http] = [
        s for s in spans.values() if s.name.startswith("POST ") and s.name.endswith("/search")
    ]
    assert retrieve.parent is not None
    assert retrieve.parent.span_id == http.context.span_id
