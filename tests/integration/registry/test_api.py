"""``/v1/registry/models`` in process: the router with real key checks over the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from atrium.api.errors import install_error_handlers
from atrium.api.registry import registry_router
from atrium.gateway.auth import KeyAuthenticator
from atrium.registry import RegistryService
from atrium.runtime.backends.llamacpp import bundled_gguf
from atrium.store import ApiKeyRepository, Database, Scope
from tests.integration.registry.conftest import tiny_gguf

pytestmark = pytest.mark.integration


@dataclass
class Clients:
    admin: httpx.AsyncClient
    reader: httpx.AsyncClient


@pytest_asyncio.fixture
async def clients(database: Database, registry: RegistryService) -> AsyncIterator[Clients]:
    keys = ApiKeyRepository(database)
    admin = await keys.create(name="admin", scopes={Scope.ADMIN, Scope.INFERENCE})
    reader = await keys.create(name="reader")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(registry_router(registry, KeyAuthenticator(keys, ttl=0)))
    transport = httpx.ASGITransport(app)

    def client(secret: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=transport,
            base_url="http://atrium",
            headers={"authorization": f"Bearer {secret}"},
        )

    async with client(admin.secret) as admin_http, client(reader.secret) as reader_http:
        yield Clients(admin_http, reader_http)


async def test_register_list_alias_and_archive(clients: Clients) -> None:
    admin, reader = clients.admin, clients.reader
    created = await admin.post("/v1/registry/models", json={"name": "smol"})
    assert created.status_code == 201, created.text
    assert created.json()["id"].startswith("mdl_")
    registered = await admin.post(
        "/v1/registry/models/smol/versions",
        json={
            "source": str(bundled_gguf()),
            "tags": ["q4"],
            "source_name": "huggingface",
            "release_id": "HuggingFaceTB/SmolLM2-135M-Instruct@main",
        },
    )
    assert registered.status_code == 201, registered.text
    version = registered.json()
    assert version["id"].startswith("mv_")
    assert version["version"] == 1
    assert version["metadata"]["architecture"] == "llama"
    assert version["metadata"]["context_length"] == 8192

    moved = await admin.put("/v1/registry/models/smol/aliases/production", json={"version": 1})
    assert moved.status_code == 200, moved.text
    assert moved.json()["version"] == 1

    listed = await reader.get("/v1/registry/models")
    assert [m["name"] for m in listed.json()["data"]] == ["smol"]
    model = (await reader.get("/v1/registry/models/smol")).json()
    assert model["aliases"] == {"production": 1}
    assert [v["version"] for v in model["versions"]] == [1]
    detail = (await reader.get("/v1/registry/models/smol/versions/1")).json()
    assert detail["aliases"] == ["production"]
    assert [(x["kind"], x["ref"]) for x in detail["lineage"]] == [
        ("release", "HuggingFaceTB/SmolLM2-135M-Instruct@main")
    ]
    resolved = await reader.get("/v1/registry/models/smol/aliases/production")
    assert resolved.json()["version"] == 1

    refused = await admin.post("/v1/registry/models/smol/versions/1/archive")
    assert refused.status_code == 409
    assert "'production'" in refused.json()["error"]["message"]
    assert refused.json()["error"]["code"] == "version_aliased"
    deleted = await admin.delete("/v1/registry/models/smol/aliases/production")
    assert deleted.status_code == 200
    archived = await admin.post("/v1/registry/models/smol/versions/1/archive")
    assert archived.json()["status"] == "archived"


async def test_tags_and_lineage_over_the_api(clients: Clients, incoming: Path) -> None:
    admin = clients.admin
    await admin.post("/v1/registry/models", json={"name": "tiny"})
    source = tiny_gguf(incoming / "tiny.gguf")
    await admin.post("/v1/registry/models/tiny/versions", json={"source": str(source)})
    tagged = await admin.post(
        "/v1/registry/models/tiny/versions/1/tags", json={"add": ["eval", "fast"]}
    )
    assert tagged.json()["tags"] == ["eval", "fast"]
    gate = await admin.post(
        "/v1/registry/models/tiny/versions/1/lineage",
        json={"kind": "gate", "ref": "safety", "detail": {"passed": False}},
    )
    assert gate.status_code == 201, gate.text
    bad_kind = await admin.post(
        "/v1/registry/models/tiny/versions/1/lineage", json={"kind": "party", "ref": "x"}
    )
    assert bad_kind.status_code == 400


async def test_errors_are_openai_shaped(clients: Clients, incoming: Path) -> None:
    admin, reader = clients.admin, clients.reader
    await admin.post("/v1/registry/models", json={"name": "smol"})

    forbidden = await reader.post("/v1/registry/models", json={"name": "other"})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["type"] == "permission_error"
    no_key = await reader.get("/v1/registry/models", headers={"authorization": ""})
    assert no_key.status_code == 401

    outside = await admin.post("/v1/registry/models/smol/versions", json={"source": "/etc/passwd"})
    assert outside.status_code == 400
    assert outside.json()["error"]["code"] == "source_not_allowed"
    junk = incoming / "junk.bin"
    junk.write_bytes(b"\x00" * 100)
    unknown = await admin.post("/v1/registry/models/smol/versions", json={"source": str(junk)})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "unknown_model_format"
    cut = incoming / "cut.gguf"
    cut.write_bytes(tiny_gguf(incoming / "t.gguf").read_bytes()[:-1])
    corrupt = await admin.post("/v1/registry/models/smol/versions", json={"source": str(cut)})
    assert corrupt.status_code == 400
    assert "truncated" in corrupt.json()["error"]["message"]

    duplicate = await admin.post("/v1/registry/models", json={"name": "smol"})
    assert duplicate.status_code == 409
    bad_name = await admin.post("/v1/registry/models", json={"name": "../etc"})
    assert bad_name.status_code == 400
    missing = await reader.get("/v1/registry/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    no_version = await reader.get("/v1/registry/models/smol/versions/7")
    assert no_version.status_code == 404
    bad_alias = await admin.put("/v1/registry/models/smol/aliases/7up", json={"version": 1})
    assert bad_alias.status_code == 400
    assert (await reader.get("/v1/registry/models/smol/versions")).json()["data"] == []
