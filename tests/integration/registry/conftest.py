"""Fixtures for the registry: a model store in a temporary folder and small GGUF files made
on the spot (the migrated ``database`` comes from ``tests/integration/conftest.py``)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from atrium.registry import ModelStore, RegistryService, SourcePolicy
from atrium.runtime.backends.llamacpp import bundled_gguf
from atrium.store import Database
from atrium.store.registry import RegistryRepository

#: The model store's size limit in these tests: above the bundled model (94 MiB).
MAX_BYTES = 200 * 1024 * 1024


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    """A folder models may be registered from."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    """The model store's folder."""
    return tmp_path / "store"


@pytest.fixture
def make_service(
    database: Database, tmp_path: Path, incoming: Path, store_root: Path
) -> Callable[..., RegistryService]:
    """A RegistryService over the test database; ``max_bytes`` and ``repo`` can change."""

    def make(
        *, max_bytes: int = MAX_BYTES, repo: RegistryRepository | None = None
    ) -> RegistryService:
        policy = SourcePolicy(
            data_dir=tmp_path / "data", allowed_roots=(incoming, bundled_gguf().parent)
        )
        store = ModelStore(str(store_root), max_artifact_bytes=max_bytes)
        return RegistryService(repo or RegistryRepository(database), store, sources=policy)

    return make


@pytest.fixture
def registry(make_service: Callable[..., RegistryService]) -> RegistryService:
    """The default RegistryService."""
    return make_service()


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def tiny_gguf(path: Path, *, context_length: int = 2048, arch: str = "llama") -> Path:
    """Write a small, valid GGUF file (one F32 tensor of 4x8) and return its path."""
    kvs = [
        _string("general.architecture") + struct.pack("<I", 8) + _string(arch),
        _string(f"{arch}.context_length")
        + struct.pack("<I", 4)
        + struct.pack("<I", context_length),
        _string("general.file_type") + struct.pack("<I", 4) + struct.pack("<I", 0),
    ]
    tensor = (
        _string("w") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 8) + struct.pack("<IQ", 0, 0)
    )
    header = b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", 1, len(kvs)) + b"".join(kvs)
    header += tensor
    path.write_bytes(header + b"\0" * (-len(header) % 32) + b"\x01" * (4 * 8 * 4))
    return path
