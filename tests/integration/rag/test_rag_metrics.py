"""The knowledge bases' metrics: retrievals and their latency by knowledge base and mode,
documents indexed and failed by knowledge base, read from the platform's registry."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from atrium.app import build_app, build_platform
from atrium.core.settings import LlamaCppModel, OnnxEmbeddingModel, Settings

pytestmark = pytest.mark.integration

KEY = "atr-" + "m" * 40
CREDIT = "issuer,rating,outlook\nAcme Corp,BBB,negative\nGlobex,A,stable\n"


async def test_retrievals_and_indexed_and_failed_documents_are_counted(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        auth={"bootstrap_key": KEY},
        workflows={"enabled": False},
        models={
            "smol": LlamaCppModel(n_ctx=2048, aliases=["default"]),
            "minilm": OnnxEmbeddingModel(aliases=["default-embedding"]),
        },
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://atrium",
            headers={"authorization": f"Bearer {KEY}"}, timeout=120,
        ) as admin:  # fmt: skip
            created = await admin.post("/v1/knowledge-bases", json={"name": "credit"})
            assert created.status_code == 201, created.text
            docs = "/v1/knowledge-bases/credit/documents"
            good = await admin.post(docs, files={"file": ("c.csv", CREDIT.encode())})
            assert good.status_code in (200, 201), good.text
            broken = await admin.post(docs, files={"file": ("b.pdf", b"not a pdf at all")})
            assert broken.status_code == 400, broken.text
            assert broken.json()["error"]["code"] == "document_failed"
            search = "/v1/knowledge-bases/credit/search"
            for body in (
                {"query": "Acme"},
                {"query": "Acme"},
                {"query": "Acme", "mode": "lexical"},
            ):
                found = await admin.post(search, json=body)
                assert found.status_code == 200, found.text
    finally:
        await platform.close()
    registry = platform.metrics.registry

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    kb = {"knowledge_base": "credit"}
    assert sample("atrium_rag_queries_total", **kb, mode="hybrid") == 2
    assert sample("atrium_rag_queries_total", **kb, mode="lexical") == 1
    assert sample("atrium_rag_retrieval_duration_seconds_count", **kb, mode="hybrid") == 2
    hybrid_seconds = sample("atrium_rag_retrieval_duration_seconds_sum", **kb, mode="hybrid")
    assert hybrid_seconds is not None
    assert hybrid_seconds > 0
    assert sample("atrium_rag_documents_indexed_total", **kb) == 1
    assert sample("atrium_rag_documents_failed_total", **kb) == 1
