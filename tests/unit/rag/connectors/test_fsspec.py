"""fsspec sources over memory:// and file://; object-store URLs up to the wire.

Syncs against a real S3 server (moto) are in tests/integration/rag/connectors.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.implementations.asyn_wrapper import (  # type: ignore[import-untyped]
    AsyncFileSystemWrapper,
)
from fsspec.implementations.memory import MemoryFileSystem  # type: ignore[import-untyped]
from pydantic import ValidationError

from atrium.core.netguard import NetworkPolicy
from atrium.rag.connectors import (
    ConnectorError,
    FolderConnector,
    FsspecConnector,
    FsspecSource,
    InvalidSourceError,
    ObjectStoreConnector,
    build_connector,
)
from atrium.rag.connectors.base import ConnectorContext
from atrium.store.secrets import SecretStore
from tests.unit.rag.connectors.conftest import LOOPBACK_ONLY, build, collect, split


@pytest.fixture
def bucket() -> Iterator[str]:
    """A fresh prefix in fsspec's process-wide memory filesystem, removed afterwards."""
    fs = MemoryFileSystem()
    prefix = f"/bucket-{random.token_hex(4)}"
    fs.pipe(
        {
            f"{prefix}/docs/guide.md": b"# Guide",
            f"{prefix}/docs/sub/notes.txt": b"notes",
            f"{prefix}/docs/sub/big.pdf": b"%PDF" + b"x" * 3000,
            f"{prefix}/elsewhere/secret.txt": b"not in the source",
        }
    )
    yield prefix
    fs.rm(prefix, recursive=True)


async def test_memory_files_become_documents(
    bucket: str, tmp_path: Path, secrets: SecretStore
) -> None:
    spec = FsspecSource(url=f"memory://{bucket}/docs")
    connector = build(spec, tmp_path, secrets, limit=2048)
    documents, failures = split(await collect(connector))
    assert failures == {"sub/big.pdf": "big.pdf is 2.9 KB, over the 2 KB limit"}
    assert list(documents) == ["guide.md", "sub/notes.txt"]
    guide = documents["guide.md"]
    assert guide.content_hash == hashlib.sha256(b"# Guide").hexdigest()
    assert guide.filename == "guide.md"
    assert guide.media_type == "text/markdown"
    assert guide.uri == f"memory://{bucket}/docs/guide.md"
    assert guide.created_at is not None


async def test_the_glob_selects_files(bucket: str, tmp_path: Path, secrets: SecretStore) -> None:
    for glob, keys in (("*.txt", ["sub/notes.txt"]), ("sub/**", ["sub/big.pdf", "sub/notes.txt"])):
        spec = FsspecSource(url=f"memory://{bucket}/docs/", glob=glob)
        documents, _ = split(await collect(build(spec, tmp_path, secrets)))
        assert list(documents) == keys


async def test_an_async_filesystem_is_used_through_its_coroutines(
    bucket: str, tmp_path: Path, secrets: SecretStore
) -> None:
    wrapped = AsyncFileSystemWrapper(MemoryFileSystem())
    assert wrapped.async_impl
    context = ConnectorContext(secrets, tmp_path, LOOPBACK_ONLY, 10_000, (tmp_path,))
    spec = FsspecSource(url=f"memory://{bucket}/docs")
    connector = FsspecConnector(spec, context, filesystem=wrapped)
    documents, _ = split(await collect(connector))
    assert sorted(documents) == ["guide.md", "sub/big.pdf", "sub/notes.txt"]
    assert documents["sub/notes.txt"].data == b"notes"


async def test_nothing_at_the_url_fails_the_source(tmp_path: Path, secrets: SecretStore) -> None:
    spec = FsspecSource(url="memory://no-such-bucket/docs")
    with pytest.raises(ConnectorError, match="there is nothing at memory://no-such-bucket"):
        await collect(build(spec, tmp_path, secrets))


async def test_file_urls_read_like_folders_inside_the_allowed_roots(
    tmp_path: Path, secrets: SecretStore
) -> None:
    docs = tmp_path / "data" / "docs"
    docs.mkdir(parents=True)
    (docs / "a.md").write_bytes(b"# A")
    (docs / "b.txt").write_bytes(b"B")
    spec = FsspecSource(url=f"file://{docs}", glob="*.md")
    connector = build(spec, tmp_path / "data", secrets)
    assert isinstance(connector, FolderConnector)
    documents, _ = split(await collect(connector))
    assert list(documents) == ["a.md"]
    with pytest.raises(InvalidSourceError, match="outside"):
        build(FsspecSource(url="file:///etc"), tmp_path / "data", secrets)


async def test_object_store_urls_are_read_through_obstore(
    tmp_path: Path, secrets: SecretStore
) -> None:
    for url in ("s3://bucket/prefix", "gs://bucket", "az://container/docs"):
        assert isinstance(build(FsspecSource(url=url), tmp_path, secrets), ObjectStoreConnector)
    with pytest.raises(ConnectorError, match="names no bucket"):
        await collect(build(FsspecSource(url="s3:///prefix"), tmp_path, secrets))


async def test_storage_options_come_from_a_json_secret(
    tmp_path: Path, secrets: SecretStore
) -> None:
    await secrets.put("s3-options", "not json")
    spec = FsspecSource(url="s3://bucket/prefix", storage_options_secret="s3-options")
    with pytest.raises(ConnectorError, match="must hold a JSON object"):
        await collect(build(spec, tmp_path, secrets))
    await secrets.put("s3-options", '{"metadata_endpoint": "http://10.0.0.1/"}')
    with pytest.raises(ConnectorError, match="unknown s3 option 'metadata_endpoint'"):
        await collect(build(spec, tmp_path, secrets))


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("s3://bucket/prefix", {"endpoint": "http://169.254.169.254/"}),
        ("s3://bucket/prefix", {"endpoint_url": "http://169.254.169.254/"}),
        ("s3://bucket/prefix", {"client_kwargs": {"endpoint_url": "http://169.254.169.254"}}),
        ("gs://bucket/prefix", {"base_url": "http://169.254.169.254/storage"}),
        (
            "gs://bucket/prefix",
            {"service_account_key": {"gcs_base_url": "http://169.254.169.254/"}},
        ),
        ("az://container", {"endpoint": "http://169.254.169.254/account"}),
    ],
)
async def test_a_custom_endpoint_is_vetted_against_the_network_policy(
    url: str, options: dict[str, object], tmp_path: Path, secrets: SecretStore
) -> None:
    await secrets.put("options", json.dumps(options))
    spec = FsspecSource(url=url, storage_options_secret="options")
    with pytest.raises(ConnectorError, match=r"endpoint is not allowed.*cloud metadata"):
        await collect(build(spec, tmp_path, secrets))


async def test_the_azure_emulator_is_a_loopback_endpoint(
    tmp_path: Path, secrets: SecretStore
) -> None:
    await secrets.put("azurite", '{"use_emulator": true, "account_name": "devstoreaccount1"}')
    spec = FsspecSource(url="az://container", storage_options_secret="azurite")
    policy = NetworkPolicy()  # the default: no private or loopback hosts
    with pytest.raises(ConnectorError, match=r"endpoint is not allowed"):
        await collect(build(spec, tmp_path, secrets, policy=policy))


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://example.test/files", "must start with one of"),
        ("ftp://example.test/files", "must start with one of"),
        ("/plain/path", "must start with one of"),
        ("zip://a.txt::s3://bucket/x.zip", "chained"),
    ],
)
def test_unsafe_protocols_are_refused(url: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        FsspecSource(url=url)


def test_build_connector_defaults_the_allowed_roots_to_the_data_dir(
    tmp_path: Path, secrets: SecretStore
) -> None:
    (tmp_path / "docs").mkdir()
    spec = FsspecSource(url=f"file://{tmp_path}/docs")
    connector = build_connector(
        spec, secrets=secrets, data_dir=tmp_path, policy=LOOPBACK_ONLY, max_document_bytes=10
    )
    assert isinstance(connector, FolderConnector)
