"""Folder sources over a real directory tree, and safe paths for uploaded files."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.rag.connectors import (
    SOURCE_SPECS,
    ConnectorError,
    FolderSource,
    InvalidSourceError,
    UnsafeFilenameError,
    safe_upload_path,
)
from atrium.store.secrets import SecretStore
from tests.unit.rag.connectors.conftest import build, collect, split


def _write(path: Path, data: bytes = b"hello") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _write(root / "docs" / "guide.md", b"# Guide\n")
    _write(root / "docs" / "sub" / "notes.txt", b"notes")
    _write(root / "docs" / "sub" / "deep" / "table.csv", b"a,b\n1,2\n")
    _write(root / "docs" / "node_modules" / "pkg" / "readme.md", b"vendored")
    return root


async def test_every_file_with_relative_keys_hashes_and_times(
    data_dir: Path, secrets: SecretStore
) -> None:
    os.utime(data_dir / "docs" / "guide.md", (1_900_000_000, 1_900_000_000))
    items = await collect(build(FolderSource(path="docs"), data_dir, secrets))
    documents, failures = split(items)
    assert failures == {}
    assert list(documents) == [
        "guide.md",
        "node_modules/pkg/readme.md",
        "sub/deep/table.csv",
        "sub/notes.txt",
    ]
    guide = documents["guide.md"]
    assert guide.data == b"# Guide\n"
    assert guide.content_hash == hashlib.sha256(b"# Guide\n").hexdigest()
    assert guide.filename == "guide.md"
    assert guide.media_type == "text/markdown"
    assert guide.updated_at == datetime.fromtimestamp(1_900_000_000, UTC)
    assert documents["sub/deep/table.csv"].metadata == {
        "path": "sub/deep/table.csv",
        "folder": "sub/deep",
    }


async def test_include_exclude_and_not_recursive(data_dir: Path, secrets: SecretStore) -> None:
    spec = FolderSource(path="docs", include=("*.md", "*.txt"), exclude=("node_modules",))
    documents, _ = split(await collect(build(spec, data_dir, secrets)))
    assert list(documents) == ["guide.md", "sub/notes.txt"]
    flat = FolderSource(path="docs", recursive=False)
    documents, _ = split(await collect(build(flat, data_dir, secrets)))
    assert list(documents) == ["guide.md"]


async def test_links_out_of_the_folder_are_failures_and_links_inside_are_read(
    data_dir: Path, tmp_path: Path, secrets: SecretStore
) -> None:
    outside = _write(tmp_path / "outside" / "passwd", b"root:x:0:0")
    docs = data_dir / "docs"
    (docs / "escape.txt").symlink_to(outside)
    (docs / "escape_dir").symlink_to(outside.parent, target_is_directory=True)
    (docs / "alias.md").symlink_to(docs / "guide.md")
    (docs / "dangling.txt").symlink_to(docs / "gone.txt")
    documents, failures = split(await collect(build(FolderSource(path="docs"), data_dir, secrets)))
    assert failures == {
        "dangling.txt": "is a broken link",
        "escape.txt": "links to a file outside the source",
        "escape_dir": "links to a folder outside the source",
    }
    assert documents["alias.md"].data == b"# Guide\n"
    assert all(b"root:x" not in d.data for d in documents.values())


async def test_a_file_over_the_limit_is_a_failure_and_the_rest_is_read(
    data_dir: Path, secrets: SecretStore
) -> None:
    _write(data_dir / "docs" / "big.bin", b"x" * 3000)
    spec = FolderSource(path="docs", include=("*.bin", "guide.md"))
    documents, failures = split(await collect(build(spec, data_dir, secrets, limit=2048)))
    assert failures == {"big.bin": "big.bin is 2.9 KB, over the 2 KB limit"}
    assert list(documents) == ["guide.md"]


async def test_a_fifo_is_not_opened(data_dir: Path, secrets: SecretStore) -> None:
    os.mkfifo(data_dir / "docs" / "pipe.txt")
    _, failures = split(await collect(build(FolderSource(path="docs"), data_dir, secrets)))
    assert failures == {"pipe.txt": "is not a regular file"}


async def test_protected_files_are_never_read(data_dir: Path, secrets: SecretStore) -> None:
    key_file = _write(data_dir / "secret.key", b"the key")
    spec = FolderSource(path=".", include=("*.key", "guide.md"))
    connector = build(spec, data_dir, secrets, protected_paths=[key_file])
    documents, failures = split(await collect(connector))
    assert failures == {"secret.key": "is Atrium's own data and is not read"}
    assert list(documents) == ["docs/guide.md"]
    with pytest.raises(InvalidSourceError, match="Atrium's own data"):
        build(FolderSource(path="docs"), data_dir, secrets, protected_paths=[data_dir / "docs"])


@pytest.mark.parametrize("path", ["/etc", "..", "docs/../../outside", "/"])
def test_folders_outside_the_allowed_roots_are_refused(
    data_dir: Path, secrets: SecretStore, path: str
) -> None:
    with pytest.raises(InvalidSourceError, match="outside the folders sources may read"):
        build(FolderSource(path=path), data_dir, secrets)


def test_a_link_to_outside_as_the_folder_itself_is_refused(
    data_dir: Path, tmp_path: Path, secrets: SecretStore
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (data_dir / "sneaky").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(InvalidSourceError):
        build(FolderSource(path="sneaky"), data_dir, secrets)


def test_other_allowed_roots(data_dir: Path, tmp_path: Path, secrets: SecretStore) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    build(FolderSource(path=str(shared)), data_dir, secrets, allowed_roots=[shared])
    with pytest.raises(InvalidSourceError):
        build(FolderSource(path="docs"), data_dir, secrets, allowed_roots=[shared])


async def test_a_missing_folder_fails_the_whole_source(
    data_dir: Path, secrets: SecretStore
) -> None:
    with pytest.raises(ConnectorError, match="does not exist"):
        await collect(build(FolderSource(path="not-there"), data_dir, secrets))


def test_specs_are_strict_frozen_and_discriminated() -> None:
    spec = SOURCE_SPECS.validate_python({"kind": "folder", "path": "docs"})
    assert isinstance(spec, FolderSource)
    assert spec.include == ("**/*",)
    with pytest.raises(ValidationError, match="extra"):
        SOURCE_SPECS.validate_python({"kind": "folder", "path": "docs", "pth": "x"})
    with pytest.raises(ValidationError, match="frozen"):
        spec.path = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="not a relative glob"):
        FolderSource(path="docs", include=("/etc/*",))
    assert all(f.description for f in FolderSource.model_fields.values())


@pytest.mark.parametrize(
    ("filename", "stored"),
    [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\me\\Desktop\\report.pdf", None),
        ("docs/sub/report.pdf", "report.pdf"),
        ("..hidden.txt", "hidden.txt"),
        ("what?:<>.txt", "what____.txt"),
        ("résumé.docx", "résumé.docx"),
        ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
    ],
)
def test_safe_upload_path_keeps_a_safe_basename(
    tmp_path: Path, filename: str, stored: str | None
) -> None:
    if stored is None:
        with pytest.raises(UnsafeFilenameError, match="absolute"):
            safe_upload_path(tmp_path, filename)
        return
    path = safe_upload_path(tmp_path, filename)
    assert path == tmp_path.resolve() / stored
    assert path.parent == tmp_path.resolve()


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("...", "empty"),
        ("..", "'..'"),
        ("../../etc/passwd", "'..'"),
        ("a/../b.txt", "'..'"),
        ("/etc/passwd", "absolute"),
        ("\\\\server\\share\\x.txt", "absolute"),
        ("a\x00.txt", "NUL"),
        ("CON", "reserved"),
        ("nul.txt", "reserved"),
        ("com1.log", "reserved"),
    ],
)
def test_unsafe_upload_names_are_refused(tmp_path: Path, filename: str, reason: str) -> None:
    with pytest.raises(UnsafeFilenameError, match=reason) as caught:
        safe_upload_path(tmp_path, filename)
    assert caught.value.status == 400


def test_an_upload_name_taken_by_a_link_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    (root / "report.pdf").symlink_to(tmp_path / "elsewhere.pdf")
    with pytest.raises(UnsafeFilenameError, match="outside"):
        safe_upload_path(root, "report.pdf")
