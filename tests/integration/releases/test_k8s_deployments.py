"""Deployments on Kubernetes chosen by settings: a registry version becomes Kubernetes
objects on a local server speaking the Kubernetes API, and the gateway routes its name to
the deployment's Service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from atrium.app import Platform, build_app, build_platform
from atrium.core.settings import Settings
from atrium.runtime.backends.openai_compat import OpenAICompatBackend
from tests.integration.registry.conftest import tiny_gguf
from tests.integration.runtime.fake_kubernetes import FakeKubernetes

KEY = "atr-" + "k" * 40
HEADERS = {"authorization": f"Bearer {KEY}"}
POOLS = [{"name": "cpu", "kind": "cpu", "cpus": 16, "memory_gib": 64}]


@pytest_asyncio.fixture
async def cluster() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(ready_delay=0.2)
    await server.start()
    yield server
    await server.close()


@pytest_asyncio.fixture
async def platform(
    tmp_path: Path, cluster: FakeKubernetes
) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    tiny_gguf(incoming / "smol.gguf")
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path / "data",
            "auth": {"bootstrap_key": KEY},
            "models": {},
            "workflows": {"enabled": False},
            "registry": {"source_roots": [str(incoming)]},
            "deployer": {
                "kind": "kubernetes",
                "kubernetes": {
                    "api_server": cluster.url,
                    "pools": POOLS,
                    "ready_timeout_seconds": 10,
                    "delete_timeout_seconds": 10,
                },
            },
        }
    )
    built = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, built)
    await built.start()
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://atrium", headers=HEADERS
    )
    try:
        yield built, http
    finally:
        await http.aclose()
        await built.close()


async def test_a_version_deployed_on_the_cluster_is_served_through_its_service(
    platform: tuple[Platform, httpx.AsyncClient], cluster: FakeKubernetes, tmp_path: Path
) -> None:
    built, http = platform
    assert (await http.post("/v1/registry/models", json={"name": "smol"})).status_code == 201
    source = str(tmp_path / "incoming" / "smol.gguf")
    version = await http.post("/v1/registry/models/smol/versions", json={"source": source})
    assert version.status_code == 201, version.text
    body = {"name": "smol-v1", "model": "smol", "version": 1, "replicas": {"min": 2, "max": 2}}
    created = await http.post("/v1/deployments", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["ready"] == 2
    assert [d["metadata"]["name"] for d in cluster.stored("deployments")] == ["smol-v1"]
    served = built.catalog.resolve("smol-v1").backend
    assert isinstance(served, OpenAICompatBackend)
    chat_url = served._urls["/chat/completions"]
    assert str(chat_url) == "http://smol-v1.default.svc.cluster.local/v1/chat/completions"
    listed = (await http.get("/v1/models")).json()["data"]
    assert "smol-v1" in [m["id"] for m in listed]
    lineage = [link.kind for link in await built.registry.lineage("smol", 1)]
    assert "deployment" in lineage
    deleted = await http.delete("/v1/deployments/smol-v1")
    assert deleted.status_code == 200
    assert cluster.stored("deployments") == []
    assert "smol-v1" not in built.catalog.names()


async def test_a_version_no_pool_can_hold_is_refused_with_the_reason(
    platform: tuple[Platform, httpx.AsyncClient], cluster: FakeKubernetes, tmp_path: Path
) -> None:
    _, http = platform
    await http.post("/v1/registry/models", json={"name": "smol"})
    source = str(tmp_path / "incoming" / "smol.gguf")
    await http.post("/v1/registry/models/smol/versions", json={"source": source})
    body = {
        "name": "smol-v1", "model": "smol", "version": 1,
        "replicas": {"min": 2, "max": 2}, "resources": {"cpus": 32},
    }  # fmt: skip
    refused = await http.post("/v1/deployments", json=body)
    assert refused.status_code == 400
    assert "no pool can hold 'smol-v1'" in refused.json()["error"]["message"]
    assert cluster.stored("deployments") == []
