"""Folder and /v1/models watchers on their own: what each poll sees, and when it is ready."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atrium.core.netguard import BlockedDestinationError
from atrium.releases.watchers import (
    Detection,
    FolderWatcher,
    FolderWatcherConfig,
    HuggingFaceWatcherConfig,
    OpenAIModelsWatcher,
    OpenAIModelsWatcherConfig,
    ReleaseSourceError,
    WatcherConfig,
    name_matcher,
    registry_model_name,
    release_id_for,
)
from tests.integration.providers.loopback import LoopbackServer

API_KEY = "sk-provider-" + "p" * 24


# -- a folder ---------------------------------------------------------------------------


def folder_watcher(url: str, **fields: Any) -> FolderWatcher:
    return FolderWatcher(FolderWatcherConfig.model_validate({"name": "drop", "url": url} | fields))


def ready(detections: list[Detection]) -> list[str]:
    return [Path(d.uri).name for d in detections if d.ready]


def write(path: Path, data: bytes, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


async def test_a_new_file_is_ready_once_unchanged_across_two_polls(tmp_path: Path) -> None:
    watcher = folder_watcher(str(tmp_path))
    assert await watcher.poll() == []
    write(tmp_path / "tiny.gguf", b"GGUF" + b"\0" * 60, 1_000.0)

    first = await watcher.poll()
    second = await watcher.poll()

    assert [d.ready for d in first] == [False]
    assert ready(second) == ["tiny.gguf"]
    (detection,) = second
    assert detection.uri == str(tmp_path / "tiny.gguf")
    assert detection.key == f"{tmp_path / 'tiny.gguf'}|64|1000.0"
    assert (detection.source, detection.model) == ("folder", "tiny")
    assert detection.metadata == {"filename": "tiny.gguf", "size": 64, "file_version": "1000.0"}


async def test_a_file_still_being_written_waits(tmp_path: Path) -> None:
    watcher = folder_watcher(str(tmp_path), model="smollm2")
    target = tmp_path / "growing.gguf"
    write(target, b"GGUF", 1_000.0)
    assert ready(await watcher.poll()) == []
    write(target, b"GGUF" + b"\1" * 100, 1_001.0)  # more arrived since
    assert ready(await watcher.poll()) == []
    (detection,) = await watcher.poll()  # unchanged since the last poll: complete
    assert detection.ready
    assert (detection.model, detection.metadata["size"]) == ("smollm2", 104)


async def test_an_empty_file_is_not_a_release(tmp_path: Path) -> None:
    watcher = folder_watcher(str(tmp_path))
    write(tmp_path / "empty.gguf", b"", 1_000.0)
    assert await watcher.poll() == []
    assert await watcher.poll() == []


async def test_an_old_enough_file_is_ready_at_once(tmp_path: Path) -> None:
    now = 10_000.0
    watcher = FolderWatcher(
        FolderWatcherConfig(name="drop", url=str(tmp_path), min_age_seconds=60),
        clock=lambda: now,
    )
    write(tmp_path / "old.gguf", b"GGUF-old", now - 61)
    write(tmp_path / "new.gguf", b"GGUF-new", now - 5)
    assert ready(await watcher.poll()) == ["old.gguf"]


async def test_a_replaced_file_is_a_new_release(tmp_path: Path) -> None:
    watcher = folder_watcher(str(tmp_path))
    target = tmp_path / "model.gguf"
    write(target, b"GGUF-version-1", 1_000.0)
    await watcher.poll()
    (before,) = await watcher.poll()
    write(target, b"GGUF-version-2", 2_000.0)  # same size, written again

    settling = await watcher.poll()
    (after,) = await watcher.poll()

    assert [d.ready for d in settling] == [False]
    assert after.ready
    assert after.uri == before.uri
    assert after.key != before.key


async def test_only_files_matching_the_pattern_are_seen(tmp_path: Path) -> None:
    for name in ("a.gguf", "b.safetensors", "notes.txt", "nested/c.gguf"):
        write(tmp_path / name, b"data", 1_000.0)
    top = folder_watcher(str(tmp_path))
    deep = folder_watcher(str(tmp_path), pattern="**/*.gguf")
    for watcher in (top, deep):
        await watcher.poll()
    assert ready(await top.poll()) == ["a.gguf"]
    assert ready(await deep.poll()) == ["a.gguf", "c.gguf"]


@pytest.fixture
def memory_folder() -> Iterator[str]:
    """A folder on fsspec's in-memory file system, removed after the test."""
    fs = fsspec.filesystem("memory")
    root = f"/watched-{uuid.uuid4().hex}"
    fs.mkdir(root)
    yield root
    fs.rm(root, recursive=True)


async def test_a_bucket_like_file_system_is_watched_by_url(memory_folder: str) -> None:
    fs = fsspec.filesystem("memory")
    watcher = folder_watcher(f"memory://{memory_folder}")
    fs.pipe(f"{memory_folder}/tiny-Q4_K_M.gguf", b"GGUF" + b"\0" * 28)
    fs.pipe(f"{memory_folder}/readme.md", b"# not a model")
    await watcher.poll()
    (detection,) = await watcher.poll()
    assert detection.ready
    assert detection.uri == f"memory://{memory_folder}/tiny-Q4_K_M.gguf"
    assert detection.model == "tiny-Q4_K_M"

    fs.pipe(f"{memory_folder}/tiny-Q4_K_M.gguf", b"GGUF" + b"\1" * 28)  # replaced
    (replaced,) = await watcher.poll()
    assert not replaced.ready
    assert replaced.key != detection.key


# -- an OpenAI-compatible provider ------------------------------------------------------


class Provider:
    """A minimal OpenAI-compatible provider: ``GET /v1/models`` behind a bearer key."""

    def __init__(self) -> None:
        self.models = ["gpt-tiny-1", "gpt-tiny-2", "embed-small"]
        self.body: bytes | None = None
        self.requests = 0
        self.app = Starlette(routes=[Route("/v1/models", self._models)])

    async def _models(self, request: Request) -> Response:
        self.requests += 1
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=401)
        if self.body is not None:
            return Response(self.body, media_type="application/json")
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000 + i, "owned_by": "acme"}
            for i, m in enumerate(self.models)
        ]
        return JSONResponse({"object": "list", "data": data})


@pytest.fixture(scope="module")
def provider_server() -> Iterator[tuple[Provider, str]]:
    provider = Provider()
    with LoopbackServer(provider.app) as server:
        yield provider, server.url


@pytest.fixture
def provider(provider_server: tuple[Provider, str]) -> Provider:
    fake, _ = provider_server
    fake.models = ["gpt-tiny-1", "gpt-tiny-2", "embed-small"]
    fake.body = None
    fake.requests = 0
    return fake


def models_watcher(base_url: str, **fields: Any) -> OpenAIModelsWatcher:
    values: dict[str, Any] = {
        "name": "provider",
        "base_url": f"{base_url}/v1",
        "api_key": API_KEY,
        "allow_private_network": True,
        "pattern": "gpt-*",
    }
    return OpenAIModelsWatcher(OpenAIModelsWatcherConfig.model_validate(values | fields))


async def test_the_models_watcher_lists_matching_ids(
    provider_server: tuple[Provider, str], provider: Provider
) -> None:
    watcher = models_watcher(provider_server[1])
    try:
        detections = await watcher.poll()
        provider.models.append("gpt-tiny-3")
        later = await watcher.poll()
    finally:
        await watcher.close()
    assert [d.key for d in detections] == ["gpt-tiny-1", "gpt-tiny-2"]
    first = detections[0]
    assert (first.source, first.model, first.uri) == ("openai", "gpt-tiny-1", "gpt-tiny-1")
    assert first.metadata == {
        "provider": f"{provider_server[1]}/v1",
        "owned_by": "acme",
        "created": 1_700_000_000,
    }
    assert [d.key for d in later] == ["gpt-tiny-1", "gpt-tiny-2", "gpt-tiny-3"]


async def test_the_models_watcher_takes_a_regular_expression(
    provider_server: tuple[Provider, str], provider: Provider
) -> None:
    watcher = models_watcher(
        provider_server[1], pattern=r"^(embed|gpt-tiny-2)", pattern_syntax="regex", model="m"
    )
    try:
        detections = await watcher.poll()
    finally:
        await watcher.close()
    assert [(d.key, d.model) for d in detections] == [("gpt-tiny-2", "m"), ("embed-small", "m")]


async def test_a_refused_key_or_a_malformed_list_is_an_error(
    provider_server: tuple[Provider, str], provider: Provider
) -> None:
    wrong = models_watcher(provider_server[1], api_key=SecretStr("sk-wrong-" + "w" * 24))
    right = models_watcher(provider_server[1])
    try:
        with pytest.raises(ReleaseSourceError, match="answered 401"):
            await wrong.poll()
        provider.body = b'{"object": "list", "models": []}'
        with pytest.raises(ReleaseSourceError, match="did not answer with a model list"):
            await right.poll()
        provider.body = b"<html>maintenance</html>"
        with pytest.raises(ReleaseSourceError):
            await right.poll()
    finally:
        await wrong.close()
        await right.close()


async def test_a_private_address_is_refused_unless_allowed(
    provider_server: tuple[Provider, str], provider: Provider
) -> None:
    watcher = models_watcher(provider_server[1], allow_private_network=False)
    try:
        with pytest.raises(BlockedDestinationError, match="loopback"):
            await watcher.poll()
    finally:
        await watcher.close()
    assert provider.requests == 0  # refused before connecting


async def test_the_cloud_metadata_address_stays_refused_even_when_private_is_allowed() -> None:
    watcher = models_watcher("http://169.254.169.254", allow_private_network=True)
    try:
        with pytest.raises(BlockedDestinationError, match="cloud metadata"):
            await watcher.poll()
    finally:
        await watcher.close()


# -- settings and helpers ---------------------------------------------------------------


def test_watcher_settings_are_a_union_on_kind(tmp_path: Path) -> None:
    adapter = TypeAdapter(list[WatcherConfig])
    parsed = adapter.validate_python(
        [
            {"kind": "folder", "name": "drop", "url": str(tmp_path)},
            {"kind": "openai", "name": "oai", "base_url": "https://api.example.com/v1"},
            {
                "kind": "huggingface",
                "name": "hub",
                "author": "acme",
                "download_dir": str(tmp_path),
            },
        ]
    )
    assert [type(c) for c in parsed] == [
        FolderWatcherConfig,
        OpenAIModelsWatcherConfig,
        HuggingFaceWatcherConfig,
    ]
    assert [c.baseline for c in parsed] == [False, True, True]
    with pytest.raises(ValidationError, match="kind"):
        adapter.validate_python([{"kind": "ftp", "name": "x"}])


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "huggingface", "name": "hub", "download_dir": "/tmp/x"},  # no author/search
        {"kind": "openai", "name": "oai", "base_url": "ftp://example.com"},
        {
            "kind": "openai",
            "name": "oai",
            "base_url": "https://x",
            "pattern": "(",
            "pattern_syntax": "regex",
        },
        {"kind": "folder", "name": "bad name", "url": "/tmp"},
        {"kind": "folder", "name": "drop", "url": "/tmp", "surprise": 1},
        {"kind": "folder", "name": "drop", "url": "/tmp", "model": "a/b"},
    ],
)
def test_bad_watcher_settings_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(WatcherConfig).validate_python(fields)


def test_the_api_key_never_shows_in_the_settings_repr() -> None:
    config = OpenAIModelsWatcherConfig(
        name="oai", base_url="https://api.example.com/v1", api_key=SecretStr(API_KEY)
    )
    assert API_KEY not in repr(config)
    assert API_KEY not in str(config.model_dump())


def test_name_matching_ignores_case() -> None:
    assert name_matcher("SmolLM2-*-GGUF", "glob")("smollm2-135m-gguf")
    assert not name_matcher("SmolLM2-*-GGUF", "glob")("smollm2-135m")
    assert name_matcher(r"q4_k_m\.gguf$", "regex")("model-Q4_K_M.gguf")
    assert not name_matcher(r"q4_k_m\.gguf$", "regex")("model-Q4_K_M.gguf.part")


def test_model_names_and_release_ids() -> None:
    assert registry_model_name("acme/Tiny GGUF (v2)") == "acme-Tiny-GGUF-v2"
    assert registry_model_name("///") == "model"
    assert len(registry_model_name("x" * 300)) == 100
    assert release_id_for("hub", "a@1/f.gguf") == release_id_for("hub", "a@1/f.gguf")
    assert release_id_for("hub", "a@1/f.gguf") != release_id_for("hub", "a@2/f.gguf")
    assert release_id_for("hub", "k") != release_id_for("other", "k")
