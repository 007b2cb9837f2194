"""A bucket watched for new model files on a real S3 API (moto), read back by the registry."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest
from obstore.store import S3Store
from pydantic import ValidationError

from atrium.registry.store import ModelStore
from atrium.releases.watchers import FolderWatcher, FolderWatcherConfig
from tests.integration.moto_s3 import REGION, MotoS3

pytestmark = pytest.mark.integration

BUCKET = "atrium-releases"


async def test_a_bucket_release_is_reported_when_settled_and_again_when_replaced(
    moto_s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"drop-{secrets.token_hex(4)}"
    writer = S3Store(BUCKET, config=moto_s3.options(), client_options={"allow_http": True})  # type: ignore[arg-type]
    await writer.put_async(f"{prefix}/smollm2.gguf", b"GGUF-partial")
    await writer.put_async(f"{prefix}/README.md", b"not a model")
    config = FolderWatcherConfig(
        name="bucket", url=f"s3://{BUCKET}/{prefix}", storage_options=moto_s3.options()
    )
    watcher = FolderWatcher(config)

    (seen,) = await watcher.poll()
    assert not seen.ready  # just appeared: maybe still being written
    (first,) = await watcher.poll()
    assert first.ready
    assert first.uri == f"s3://{BUCKET}/{prefix}/smollm2.gguf"
    assert first.metadata["file_version"] == hashlib.md5(b"GGUF-partial").hexdigest()

    await writer.put_async(f"{prefix}/smollm2.gguf", b"GGUF-complete-and-different")
    (changed,) = await watcher.poll()
    assert not changed.ready
    (second,) = await watcher.poll()
    assert second.ready
    assert second.key != first.key
    assert second.metadata["size"] == 27

    # The registry reads the detected file with the server's own credentials.
    for name, value in (
        ("AWS_ENDPOINT", moto_s3.endpoint),
        ("AWS_ACCESS_KEY_ID", moto_s3.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", moto_s3.secret_access_key),
        ("AWS_REGION", REGION),
        ("AWS_ALLOW_HTTP", "true"),
    ):
        monkeypatch.setenv(name, value)
    store = ModelStore(str(tmp_path / "registry"), max_artifact_bytes=1000)
    source = store.locate(second.uri)
    assert source.size == 27
    staged = store.stage(source)
    assert staged.sha256 == hashlib.sha256(b"GGUF-complete-and-different").hexdigest()
    store.discard(staged)


def test_bucket_options_are_checked_with_the_settings() -> None:
    with pytest.raises(ValidationError, match="unknown s3 option 'metadata_endpoint'"):
        FolderWatcherConfig(
            name="bucket",
            url="s3://bucket/models",
            storage_options={"metadata_endpoint": "http://10.0.0.1"},
        )
    local = FolderWatcherConfig(name="local", url="/srv/models", storage_options={"x": 1})
    assert local.storage_options == {"x": 1}  # fsspec's own options: not checked here
