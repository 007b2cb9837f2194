"""A model store rooted in a bucket: versions written to and read back from a real S3 API
(moto) and a real Azure Blob API (Azurite), through obstore, all or nothing."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import obstore
import pytest
from obstore.store import AzureStore, S3Store

from atrium.core.objectstore import ObjectStoreError
from atrium.registry import (
    ArtifactError,
    ModelCreate,
    ModelStore,
    RegistryService,
    SourcePolicy,
    VersionCreate,
    _files,
)
from atrium.store import Database
from atrium.store.registry import RegistryRepository
from atrium.store.tables import ModelVersionRow
from tests.integration.azurite import Azurite
from tests.integration.moto_s3 import MotoS3
from tests.integration.registry.conftest import tiny_gguf
from tests.integration.registry.test_service import _CommitFails, _count

pytestmark = pytest.mark.integration

HTTP: Any = {"allow_http": True}


@dataclass(frozen=True)
class Bucket:
    """A fresh prefix in a bucket, its root URL, the options to reach it, a reader."""

    root: str
    options: dict[str, Any]
    reader: S3Store | AzureStore
    prefix: str

    def keys(self) -> list[str]:
        found: list[str] = []
        for batch in obstore.list(self.reader, prefix=self.prefix + "/"):
            found.extend(str(meta["path"]) for meta in batch)
        return sorted(found)


@pytest.fixture(params=["s3", "azure"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    prefix = f"models-{secrets.token_hex(4)}"
    if request.param == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        options: dict[str, Any] = moto.options()
        reader: S3Store | AzureStore = S3Store(
            "atrium-releases", config=options, client_options=HTTP
        )
        return Bucket(f"s3://atrium-releases/{prefix}", options, reader, prefix)
    azurite: Azurite = request.getfixturevalue("azurite")
    options = azurite.options()
    reader = AzureStore("atrium-docs", config=options, client_options=HTTP)  # type: ignore[arg-type]
    return Bucket(f"az://atrium-docs/{prefix}", options, reader, prefix)


def _service(
    database: Database, bucket: Bucket, incoming: Path, repo: RegistryRepository | None = None
) -> RegistryService:
    store = ModelStore(bucket.root, max_artifact_bytes=1024 * 1024, options=bucket.options)
    policy = SourcePolicy(data_dir=incoming.parent, allowed_roots=(incoming,))
    return RegistryService(repo or RegistryRepository(database), store, sources=policy)


async def test_a_version_is_written_to_the_bucket_and_read_back(
    database: Database, bucket: Bucket, incoming: Path, tmp_path: Path
) -> None:
    registry = _service(database, bucket, incoming)
    source = tiny_gguf(incoming / "tiny.gguf")
    await registry.create_model(ModelCreate(name="smol"))
    body = VersionCreate(source=str(source), release_id="r1")
    first = await registry.register_version("smol", body)
    second = await registry.register_version("smol", VersionCreate(source=str(source)))

    scheme = bucket.root.split("://")[0]
    assert first.artifact_uri == f"{bucket.root}/models/smol/1/tiny.gguf"
    assert second.artifact_uri == f"{bucket.root}/models/smol/2/tiny.gguf"
    assert first.artifact_uri.startswith(f"{scheme}://")
    assert bucket.keys() == [
        f"{bucket.prefix}/models/smol/1/tiny.gguf",
        f"{bucket.prefix}/models/smol/2/tiny.gguf",
    ]  # nothing left in .staging
    stored = obstore.get(bucket.reader, f"{bucket.prefix}/models/smol/1/tiny.gguf").bytes()
    assert bytes(stored) == source.read_bytes()
    assert first.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert first.metadata["architecture"] == "llama"

    store = registry.store
    assert store.exists(first.artifact_uri)
    local = store.materialize(first.artifact_uri, tmp_path / "cache")
    assert local.read_bytes() == source.read_bytes()
    assert store.materialize(first.artifact_uri, tmp_path / "cache") == local  # cached
    assert store.staged_paths() == []


async def test_a_failed_registration_leaves_nothing_in_the_bucket(
    database: Database, bucket: Bucket, incoming: Path
) -> None:
    # The row cannot be written after the file was placed: the placed file goes too.
    failing = _service(database, bucket, incoming, repo=_CommitFails(database))
    await failing.create_model(ModelCreate(name="smol"))
    source = tiny_gguf(incoming / "a.gguf")
    with pytest.raises(OSError, match="went away"):
        await failing.register_version("smol", VersionCreate(source=str(source)))
    assert bucket.keys() == []
    assert await _count(database, ModelVersionRow) == 0

    # The file changes while it is copied: the staged upload is removed.
    store = failing.store
    located = store.locate(str(source))
    source.write_bytes(source.read_bytes() + b"more")
    with pytest.raises(ArtifactError, match="changed while it was copied"):
        store.stage(located)
    assert bucket.keys() == []


async def test_large_staged_files_are_streamed_to_their_place_on_s3(
    database: Database, moto_s3: MotoS3, incoming: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 copies at most 5 GiB in one request; past the limit the move streams the file.
    monkeypatch.setattr(_files, "S3_COPY_LIMIT", 16)
    prefix = f"models-{secrets.token_hex(4)}"
    options: dict[str, Any] = moto_s3.options()
    reader = S3Store("atrium-releases", config=options, client_options=HTTP)
    bucket = Bucket(f"s3://atrium-releases/{prefix}", options, reader, prefix)
    registry = _service(database, bucket, incoming)
    await registry.create_model(ModelCreate(name="smol"))
    source = tiny_gguf(incoming / "tiny.gguf")
    version = await registry.register_version("smol", VersionCreate(source=str(source)))
    assert bucket.keys() == [f"{prefix}/models/smol/1/tiny.gguf"]
    stored = obstore.get(reader, f"{prefix}/models/smol/1/tiny.gguf").bytes()
    assert hashlib.sha256(bytes(stored)).hexdigest() == version.sha256


def test_bucket_options_are_checked() -> None:
    with pytest.raises(ObjectStoreError, match="unknown s3 option 'metadata_endpoint'"):
        ModelStore(
            "s3://bucket/models",
            max_artifact_bytes=1,
            options={"metadata_endpoint": "http://169.254.169.254"},
        )
    with pytest.raises(ObjectStoreError, match="names no bucket"):
        ModelStore("gs://", max_artifact_bytes=1)
