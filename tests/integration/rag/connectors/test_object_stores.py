"""Object-store sources on the wire: knowledge bases synced from S3 (moto) and Azure Blob
(Azurite) through the API.

The platform runs in process (SQLite, LanceDB, the bundled MiniLM embedder); the source
reads ``s3://atrium-kb/<prefix>`` or ``az://atrium-docs/<prefix>`` through obstore with
credentials from a secret, exactly as it would read AWS, MinIO or Azure. GCS uses the
same connector with other options; it has no official emulator, so obstore's own test
suite covers its wire format.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from obstore.store import AzureStore, S3Store

from atrium.app import build_app, build_platform
from atrium.core.settings import OnnxEmbeddingModel, Settings
from tests.integration.azurite import Azurite
from tests.integration.moto_s3 import MotoS3

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

ADMIN_KEY = "atr-" + "s" * 40
#: A PNG's first bytes: what a binary file posing as text looks like to the parser.
HTTP = {"allow_http": True}
NOT_TEXT = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


@dataclass
class Bucket:
    """A store with its writer, the source URL of this test's prefix and its options."""

    store: S3Store | AzureStore
    url: str
    prefix: str
    options: dict[str, object]
    wrong: dict[str, object]  # the same with a wrong secret

    async def put(self, key: str, data: bytes) -> None:
        await self.store.put_async(f"{self.prefix}/{key}", data)

    async def delete(self, key: str) -> None:
        await self.store.delete_async(f"{self.prefix}/{key}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("atrium"),
        auth={"bootstrap_key": ADMIN_KEY, "cache_ttl_seconds": 0},  # type: ignore[arg-type]
        models={"minilm": OnnxEmbeddingModel(aliases=["default-embedding"])},
        rag={"allowed_hosts": ["127.0.0.1"]},  # type: ignore[arg-type]
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    await platform.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(build_app(settings, platform)),
            base_url="http://atrium",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120,
        ) as client:
            yield client
    finally:
        await platform.close()


@pytest.fixture(params=["s3", "azure"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    prefix = f"t-{secrets.token_hex(4)}"
    if request.param == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        options = moto.options()
        store: S3Store | AzureStore = S3Store("atrium-kb", config=options, client_options=HTTP)  # type: ignore[arg-type]
        wrong = moto.options(secret_access_key="not-the-secret")
        return Bucket(store, f"s3://atrium-kb/{prefix}", prefix, options, wrong)
    azurite: Azurite = request.getfixturevalue("azurite")
    options = azurite.options()
    store = AzureStore("atrium-docs", config=options, client_options=HTTP)  # type: ignore[arg-type]
    wrong = azurite.options(account_key=base64.b64encode(b"not-the-key").decode())
    return Bucket(store, f"az://atrium-docs/{prefix}", prefix, options, wrong)


async def _source(
    admin: httpx.AsyncClient, kb: str, url: str, options: dict[str, Any]
) -> httpx.Response:
    secret = f"{kb}-options"
    put = await admin.put(f"/v1/admin/secrets/{secret}", json={"value": json.dumps(options)})
    assert put.status_code in (200, 201), put.text
    created = await admin.post("/v1/knowledge-bases", json={"name": kb})
    assert created.status_code == 201, created.text
    connector = {"kind": "fsspec", "url": url, "storage_options_secret": secret}
    return await admin.post(
        f"/v1/knowledge-bases/{kb}/sources", json={"name": "bucket", "connector": connector}
    )


async def _sync(admin: httpx.AsyncClient, kb: str) -> dict[str, Any]:
    response = await admin.post(f"/v1/knowledge-bases/{kb}/sources/bucket/sync")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_an_s3_prefix_syncs_incrementally(admin: httpx.AsyncClient, bucket: Bucket) -> None:
    await bucket.put("docs/guide.md", b"# Guide\n\nThe copper desk opens at nine.")
    await bucket.put("docs/sub/notes.md", b"# Notes\n\nNickel is quiet this week.")
    await bucket.put("docs/sub/picture.txt", NOT_TEXT)
    await bucket.put("elsewhere/outside.md", b"# Outside\n\nNot in the source.")
    url = f"{bucket.url}/docs"
    kb = f"docs-{bucket.prefix}"
    added = await _source(admin, kb, url, bucket.options)
    assert added.status_code == 201, added.text

    first = await _sync(admin, kb)
    assert (first["added"], first["error"]) == (2, None), first
    assert [f["key"] for f in first["failed"]] == ["sub/picture.txt"]
    assert first["failed"][0]["reason"]

    second = await _sync(admin, kb)
    assert (second["added"], second["updated"], second["unchanged"]) == (0, 0, 2), second

    await bucket.put("docs/guide.md", b"# Guide\n\nThe copper desk now opens at ten.")
    await bucket.delete("docs/sub/notes.md")
    third = await _sync(admin, kb)
    assert (third["updated"], third["deleted"], third["unchanged"]) == (1, 1, 0), third

    found = await admin.post(
        f"/v1/knowledge-bases/{kb}/search", json={"query": "when does the copper desk open"}
    )
    assert found.status_code == 200, found.text
    citations = found.json()["citations"]
    assert [c["title"] for c in citations] == ["Guide"]
    assert "ten" in citations[0]["snippet"]
    assert citations[0]["uri"] == f"{url}/guide.md"


async def test_wrong_credentials_fail_the_source_clearly(
    admin: httpx.AsyncClient, bucket: Bucket
) -> None:
    await bucket.put("a.md", b"# A")
    kb = f"wrong-{bucket.prefix}"
    added = await _source(admin, kb, bucket.url, bucket.wrong)
    assert added.status_code == 201, added.text
    report = await _sync(admin, kb)
    assert report["added"] == 0
    assert f"was refused; check the credentials in the secret '{kb}-options'" in report["error"]
    assert re.search(r"(SignatureDoesNotMatch|AuthorizationFailure)\b", report["error"])
    assert "not-the-secret" not in report["error"]


async def test_an_endpoint_on_a_blocked_network_is_refused(
    admin: httpx.AsyncClient, bucket: Bucket
) -> None:
    await bucket.put("a.md", b"# A")
    options = {**bucket.options, "endpoint": "http://10.0.0.7:9000"}
    kb = f"blocked-{bucket.prefix}"
    added = await _source(admin, kb, bucket.url, options)
    assert added.status_code == 201, added.text
    report = await _sync(admin, kb)
    assert report["error"] == (
        "the storage endpoint is not allowed: "
        "refused to connect to 10.0.0.7: 10.0.0.7 is a private address"
    ), report
