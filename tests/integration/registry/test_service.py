"""The registry service on SQLite and PostgreSQL with a real model store in a folder."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.registry import (
    AliasSet,
    ArtifactError,
    ArtifactTooLargeError,
    LineageCreate,
    ModelCreate,
    ModelStore,
    RegistryService,
    SourcePolicy,
    TagsUpdate,
    UnknownFormatError,
    VersionCreate,
)
from atrium.runtime.backends.llamacpp import bundled_gguf
from atrium.store import Database
from atrium.store.registry import RegistryRepository, VersionDraft, VersionRecord
from atrium.store.tables import ModelLineageRow, ModelVersionRow
from tests.integration.registry.conftest import tiny_gguf

pytestmark = pytest.mark.integration


def _files(root: Path) -> list[str]:
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def _count(db: Database, table: type[ModelVersionRow] | type[ModelLineageRow]) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def _register(registry: RegistryService, source: Path, **extra: object) -> VersionRecord:
    return await registry.register_version("smol", VersionCreate(source=str(source), **extra))


async def test_the_bundled_gguf_is_registered(
    registry: RegistryService, store_root: Path, database: Database
) -> None:
    await registry.create_model(ModelCreate(name="smol", description="SmolLM2 135M"))
    version = await _register(
        registry,
        bundled_gguf(),
        tags=["small", "q4"],
        source_name="huggingface",
        release_id="HuggingFaceTB/SmolLM2-135M-Instruct@abc123",
        metadata={"capabilities": ["chat"], "context_length": 4096},
    )
    assert version.version == 1
    assert version.format == "gguf"
    assert version.status == "registered"
    meta = version.metadata
    assert meta["architecture"] == "llama"
    assert meta["quantization"] == "Q4_1"
    assert meta["licence"] == "apache-2.0"
    # Overrides win over what the header says.
    assert meta["context_length"] == 4096
    assert meta["capabilities"] == ["chat"]
    assert meta["source"] == "huggingface"
    assert version.tags == ["small", "q4"]
    stored = store_root / "models" / "smol" / "1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert version.artifact_uri == stored.as_uri()
    assert _files(store_root) == ["models/smol/1/SmolLM2-135M-Instruct.Q4_1.gguf"]
    digest = hashlib.sha256(bundled_gguf().read_bytes()).hexdigest()
    assert version.sha256 == digest == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert version.size_bytes == bundled_gguf().stat().st_size
    lineage = await registry.lineage("smol", 1)
    assert [(item.kind, item.ref) for item in lineage] == [
        ("release", "HuggingFaceTB/SmolLM2-135M-Instruct@abc123")
    ]
    assert lineage[0].detail == {"source": "huggingface"}


async def test_versions_are_numbered_and_aliases_move(
    registry: RegistryService, incoming: Path
) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    for n in (1, 2, 3):
        version = await _register(registry, tiny_gguf(incoming / f"m{n}.gguf", context_length=n))
        assert version.version == n
        assert version.metadata["context_length"] == n
    assert [v.version for v in await registry.versions("smol")] == [1, 2, 3]

    await registry.set_alias("smol", "production", AliasSet(version=1))
    await registry.set_alias("smol", "canary", AliasSet(version=2))
    assert (await registry.resolve("smol", "production")).version == 1
    moved = await registry.set_alias("smol", "production", AliasSet(version=2))
    assert moved.version == 2
    assert (await registry.resolve("smol", "production")).version == 2
    view = await registry.describe_version("smol", 2)
    assert [a.alias for a in view.aliases] == ["canary", "production"]
    model = await registry.describe_model("smol")
    assert {a.alias: a.version for a in model.aliases} == {"canary": 2, "production": 2}

    # Compare-and-set: the alias is at 2, so "expected 1" is refused and nothing moves.
    with pytest.raises(ConflictError, match="points to version 2, not 1"):
        await registry.set_alias("smol", "production", AliasSet(version=3, expected_version=1))
    assert (await registry.resolve("smol", "production")).version == 2
    await registry.set_alias("smol", "production", AliasSet(version=3, expected_version=2))
    await registry.delete_alias("smol", "canary")
    with pytest.raises(NotFoundError):
        await registry.resolve("smol", "canary")
    with pytest.raises(NotFoundError):
        await registry.set_alias("smol", "staging", AliasSet(version=9))


async def test_archive_is_refused_while_an_alias_points_to_the_version(
    registry: RegistryService, incoming: Path
) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    await _register(registry, tiny_gguf(incoming / "a.gguf"))
    await registry.set_alias("smol", "production", AliasSet(version=1))
    await registry.set_alias("smol", "staging", AliasSet(version=1))
    with pytest.raises(ConflictError, match="alias 'production', 'staging' points to it"):
        await registry.archive("smol", 1)
    await registry.delete_alias("smol", "production")
    await registry.delete_alias("smol", "staging")
    archived = await registry.archive("smol", 1)
    assert archived.status == "archived"
    with pytest.raises(ConflictError, match="archived"):
        await registry.set_alias("smol", "production", AliasSet(version=1))


async def test_tags_and_lineage(registry: RegistryService, incoming: Path) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    await _register(registry, tiny_gguf(incoming / "a.gguf"), tags=["a", "b", "a"])
    tagged = await registry.update_tags("smol", 1, TagsUpdate(add=["c", "b"], remove=["a"]))
    assert tagged.tags == ["b", "c"]
    await registry.add_lineage(
        "smol", 1, LineageCreate(kind="gate", ref="functional", detail={"passed": True})
    )
    await registry.add_lineage("smol", 1, LineageCreate(kind="deployment", ref="dep_1"))
    await registry.add_lineage("smol", 1, LineageCreate(kind="rollout", ref="ro_1"))
    view = await registry.describe_version("smol", 1)
    assert [(item.kind, item.ref) for item in view.lineage] == [
        ("gate", "functional"),
        ("deployment", "dep_1"),
        ("rollout", "ro_1"),
    ]


async def test_a_corrupt_file_leaves_nothing(
    registry: RegistryService, incoming: Path, store_root: Path, database: Database
) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    good = tiny_gguf(incoming / "good.gguf")
    cut = incoming / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="truncated"):
        await _register(registry, cut)
    garbage = incoming / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\xff" * 200)
    with pytest.raises(ArtifactError, match="unsupported GGUF version"):
        await _register(registry, garbage)
    assert await _count(database, ModelVersionRow) == 0
    assert _files(store_root) == []
    # The next good one is still version 1.
    assert (await _register(registry, good)).version == 1


async def test_an_unknown_format_or_missing_file_is_refused(
    registry: RegistryService, incoming: Path, store_root: Path, database: Database
) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    text = incoming / "notes.txt"
    text.write_text("not a model at all")
    with pytest.raises(UnknownFormatError, match="neither GGUF nor safetensors"):
        await _register(registry, text)
    with pytest.raises(NotFoundError, match="no file"):
        await _register(registry, incoming / "absent.gguf")
    with pytest.raises(InvalidRequestError, match="not a file"):
        await _register(registry, incoming)
    with pytest.raises(InvalidRequestError, match="outside the folders"):
        await _register(registry, Path("/etc/hostname"))
    with pytest.raises(NotFoundError, match="no model 'other'"):
        await registry.register_version("other", VersionCreate(source=str(text)))
    assert await _count(database, ModelVersionRow) == 0
    assert _files(store_root) == []


async def test_a_file_over_the_size_limit_is_refused(
    make_service: Callable[..., RegistryService], store_root: Path, database: Database
) -> None:
    registry = make_service(max_bytes=10 * 1024 * 1024)
    await registry.create_model(ModelCreate(name="smol"))
    with pytest.raises(ArtifactTooLargeError, match="too large"):
        await _register(registry, bundled_gguf())
    assert await _count(database, ModelVersionRow) == 0
    assert _files(store_root) == []


class _CommitFails(RegistryRepository):
    """The real repository whose transaction fails after the file was placed."""

    async def add_version(
        self, model_id: str, draft: VersionDraft, place: Callable[[int], Awaitable[str]]
    ) -> VersionRecord:
        async def place_then_fail(version: int) -> str:
            await place(version)
            raise OSError("the database went away")

        return await super().add_version(model_id, draft, place_then_fail)


async def test_a_failed_insert_removes_the_copied_file(
    make_service: Callable[..., RegistryService],
    database: Database,
    incoming: Path,
    store_root: Path,
) -> None:
    registry = make_service(repo=_CommitFails(database))
    await registry.create_model(ModelCreate(name="smol"))
    with pytest.raises(OSError, match="went away"):
        await _register(registry, tiny_gguf(incoming / "a.gguf"), release_id="r1", source_name="hf")
    assert await _count(database, ModelVersionRow) == 0
    assert await _count(database, ModelLineageRow) == 0
    assert _files(store_root) == []


async def test_concurrent_registrations_get_distinct_numbers(
    registry: RegistryService, incoming: Path, store_root: Path
) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    sources = [tiny_gguf(incoming / f"m{n}.gguf", context_length=n + 1) for n in range(4)]
    versions = await asyncio.gather(*(_register(registry, s) for s in sources))
    assert sorted(v.version for v in versions) == [1, 2, 3, 4]
    for v in versions:
        stored = (
            store_root
            / "models"
            / "smol"
            / str(v.version)
            / f"m{v.metadata['context_length'] - 1}.gguf"
        )
        assert stored.exists()
    assert len(_files(store_root)) == 4


async def test_a_remote_version_copies_nothing(registry: RegistryService, store_root: Path) -> None:
    await registry.create_model(ModelCreate(name="big"))
    version = await registry.register_version(
        "big",
        VersionCreate(
            source="http://vllm.internal:8000/v1#Qwen/Qwen2.5-72B-Instruct",
            format="remote",
            metadata={"architecture": "qwen2", "capabilities": ["chat", "tools"]},
        ),
    )
    assert version.format == "remote"
    assert version.artifact_uri == "http://vllm.internal:8000/v1#Qwen/Qwen2.5-72B-Instruct"
    assert version.sha256 is None
    assert version.metadata == {"architecture": "qwen2", "capabilities": ["chat", "tools"]}
    assert _files(store_root) == []
    with pytest.raises(InvalidRequestError, match="capabilities"):
        await registry.register_version(
            "big",
            VersionCreate(source="x", format="remote", metadata={"capabilities": ["teleport"]}),
        )


async def test_a_model_store_behind_an_fsspec_url(
    database: Database, tmp_path: Path, incoming: Path
) -> None:
    root = f"memory://registry-{tmp_path.name}"
    store = ModelStore(root, max_artifact_bytes=1024 * 1024)
    policy = SourcePolicy(data_dir=tmp_path, allowed_roots=(incoming,))
    registry = RegistryService(RegistryRepository(database), store, sources=policy)
    await registry.create_model(ModelCreate(name="smol"))
    version = await _register(registry, tiny_gguf(incoming / "a.gguf"))
    assert version.artifact_uri == f"memory:///registry-{tmp_path.name}/models/smol/1/a.gguf"
    assert store.exists(version.artifact_uri)
    assert store.staged_paths() == []


async def test_model_names_are_unique(registry: RegistryService) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    with pytest.raises(ConflictError, match="exists"):
        await registry.create_model(ModelCreate(name="smol"))
    assert [m.name for m in await registry.list_models()] == ["smol"]


async def test_a_registration_cancelled_mid_copy_leaves_nothing(
    registry: RegistryService, store_root: Path, database: Database
) -> None:
    await registry.create_model(ModelCreate(name="smol"))
    task = asyncio.create_task(_register(registry, bundled_gguf()))
    deadline = asyncio.get_running_loop().time() + 30
    while not (store_root / ".staging").exists() and not task.done():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The copying thread finishes on its own, then its file is removed.
    for _ in range(3000):
        if not _files(store_root):
            break
        await asyncio.sleep(0.01)
    assert _files(store_root) == []
    assert await _count(database, ModelVersionRow) == 0
