"""The model store: model files under one root (a local folder, or S3, GCS or Azure by URL).

A local folder (or any fsspec URL) is written through fsspec; an ``s3://``, ``gs://`` or
``az://`` root through obstore (:mod:`atrium.registry._files`). A version's file lives at
``<root>/models/<name>/<version>/<filename>``. Copying is two-phase, so nothing is ever
half-stored: :meth:`ModelStore.stage` streams the source into a uniquely named file under
``<root>/.staging/`` (hashing and counting bytes on the way, stopping at the size limit),
and :meth:`ModelStore.place` moves it to its final name once the version number is held.
A failure at any point removes what was written.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Final

from atrium.core import objectstore
from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.registry._files import StoreFiles, Writable, join, open_files
from atrium.registry.formats import ArtifactError, ArtifactTooLargeError, Inspection
from atrium.registry.formats import inspect_artifact as _inspect

__all__ = ["ModelStore", "OpenSource", "StagedArtifact"]

CHUNK_BYTES: Final = 8 * 1024 * 1024
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class OpenSource:
    """A source file located and sized, ready to inspect and copy."""

    fs: Any
    path: str
    size: int
    filename: str


@dataclass(frozen=True, slots=True)
class StagedArtifact:
    """A file copied into the store's staging area, not yet a version's."""

    path: str
    filename: str
    sha256: str
    size_bytes: int


class ModelStore:
    """Model files in a folder or a bucket, copied in atomically and size-limited."""

    def __init__(
        self,
        root_url: str,
        *,
        max_artifact_bytes: int,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """``options``: a bucket's obstore options (checked), or fsspec's for other URLs."""
        self._files: StoreFiles = open_files(root_url, options)
        self._root = self._files.root
        self.max_artifact_bytes = max_artifact_bytes

    @property
    def root(self) -> str:
        """The store's root path in its file system (a key prefix in a bucket)."""
        return self._root

    def uri(self, path: str) -> str:
        """A URL for a path in the store (``file:///...``, ``s3://bucket/...``)."""
        return self._files.uri(path)

    def exists(self, uri: str) -> bool:
        """Whether a stored file (by URI) is present."""
        return self._files.exists(self._files.path(uri))

    def staged_paths(self) -> list[str]:
        """Files left in the staging area (empty unless a copy is in progress)."""
        return self._files.files(join(self._root, ".staging"))

    def stored_paths(self) -> list[str]:
        """Every placed version file (under ``models/``)."""
        return self._files.files(join(self._root, "models"))

    def locate(self, url: str) -> OpenSource:
        """Locate ``url`` (a path or any fsspec URL); refuse a missing or oversized file."""
        fs, path = objectstore.url_to_fs(url)  # obstore for s3://, gs://, az://
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise NotFoundError(f"no file at {url}", param="source") from None
        if info.get("type") != "file":
            raise InvalidRequestError(f"{url} is not a file", param="source")
        size = int(info.get("size") or 0)
        self._check_size(size, url)
        return OpenSource(fs, path, size, _safe_filename(path))

    def inspect(self, source: OpenSource) -> Inspection:
        """The source's format and header metadata (blocking: run it off the event loop)."""
        with source.fs.open(source.path, "rb") as handle:
            return _inspect(handle, source.size)

    def stage(self, source: OpenSource) -> StagedArtifact:
        """Copy the source into staging, hashing it; nothing is left behind on failure."""
        folder = join(self._root, f".staging/{uuid.uuid4().hex}")
        path = f"{folder}/{source.filename}"
        try:
            with source.fs.open(source.path, "rb") as src, self._files.writer(path) as dst:
                digest, size = self._copy(src, dst, source)
        except BaseException:
            self._files.remove_tree(folder)
            raise
        return StagedArtifact(path, source.filename, digest, size)

    def target_uri(self, staged: StagedArtifact, name: str, version: int) -> str:
        """Where :meth:`place` puts a staged file for this version."""
        return self.uri(self._target(staged, name, version))

    def place(self, staged: StagedArtifact, name: str, version: int) -> str:
        """Move a staged file to ``models/<name>/<version>/`` and return its URI."""
        final = self._target(staged, name, version)
        self._files.move(staged.path, final, staged.size_bytes)
        self._files.remove_tree(staged.path.rsplit("/", 1)[0])
        return self.uri(final)

    def discard(self, staged: StagedArtifact) -> None:
        """Remove a staged file that will not become a version."""
        self._files.remove_tree(staged.path.rsplit("/", 1)[0])

    def remove(self, uri: str) -> None:
        """Remove a placed file (a version whose row could not be written)."""
        self._files.remove(self._files.path(uri))

    def materialize(self, uri: str, cache_dir: Path) -> Path:
        """A local path to a stored file: itself on a local store, else a cached download.

        Blocking: run it off the event loop. The download goes to a temporary name first,
        so a cache entry is always a whole file.
        """
        path = self._files.path(uri)
        if self._files.local:
            return Path(path)
        target = cache_dir / hashlib.sha256(uri.encode()).hexdigest()[:16] / Path(path).name
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            self._files.download(path, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def _target(self, staged: StagedArtifact, name: str, version: int) -> str:
        return join(self._root, f"models/{name}/{version}/{staged.filename}")

    def _copy(self, src: BinaryIO, dst: Writable, source: OpenSource) -> tuple[str, int]:
        digest, size = hashlib.sha256(), 0
        while chunk := src.read(CHUNK_BYTES):
            size += len(chunk)
            # The file may have grown since it was sized.
            self._check_size(size, source.path)
            digest.update(chunk)
            dst.write(chunk)
        if size != source.size:
            msg = f"{source.path} changed while it was copied ({source.size} -> {size} bytes)"
            raise ArtifactError(msg)
        return digest.hexdigest(), size

    def _check_size(self, size: int, url: str) -> None:
        if size > self.max_artifact_bytes:
            msg = (
                f"{url} is too large: {size} bytes, over the model store's limit "
                f"of {self.max_artifact_bytes} bytes"
            )
            raise ArtifactTooLargeError(msg, param="source")

    def __repr__(self) -> str:
        return f"ModelStore({self._files.uri(self._root)})"


def _safe_filename(path: str) -> str:
    name = _UNSAFE.sub("_", PurePosixPath(path).name).strip("._")
    return name[:200] or "model"
