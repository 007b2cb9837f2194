"""The model store: model files under one fsspec root (a local folder, GCS or S3 by URL).

A version's file lives at ``<root>/models/<name>/<version>/<filename>``. Copying is
two-phase, so nothing is ever half-stored: :meth:`ModelStore.stage` streams the
source into a uniquely named file under ``<root>/.staging/`` (hashing and counting
bytes on the way, stopping at the size limit), and :meth:`ModelStore.place` moves
it to its final name once the version number is held. A failure at any point
removes what was written.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Final

import fsspec  # type: ignore[import-untyped]

from atrium.core.errors import InvalidRequestError, NotFoundError
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
    """Model files in any fsspec file system, copied in atomically and size-limited."""

    def __init__(self, root_url: str, *, max_artifact_bytes: int) -> None:
        self._fs, root = fsspec.core.url_to_fs(root_url)
        self._root = root.rstrip("/") or "/"
        self._protocol = _protocol_of(self._fs)
        self.max_artifact_bytes = max_artifact_bytes

    @property
    def root(self) -> str:
        """The store's root path in its file system."""
        return self._root

    def uri(self, path: str) -> str:
        """A URL for a path in the store (``file:///...``, ``gs://bucket/...``)."""
        return str(self._fs.unstrip_protocol(path))

    def exists(self, uri: str) -> bool:
        """Whether a stored file (by URI) is present."""
        return bool(self._fs.exists(self._fs._strip_protocol(uri)))

    def staged_paths(self) -> list[str]:
        """Files left in the staging area (empty unless a copy is in progress)."""
        staging = f"{self._root}/.staging"
        if not self._fs.exists(staging):
            return []
        return [str(p) for p in self._fs.find(staging)]

    def locate(self, url: str) -> OpenSource:
        """Locate ``url`` (a path or any fsspec URL); refuse a missing or oversized file."""
        fs, path = fsspec.core.url_to_fs(url)
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
        path = f"{self._root}/.staging/{uuid.uuid4().hex}/{source.filename}"
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        try:
            with source.fs.open(source.path, "rb") as src, self._fs.open(path, "wb") as dst:
                digest, size = self._copy(src, dst, source)
        except BaseException:
            self._remove_tree(path.rsplit("/", 1)[0])
            raise
        return StagedArtifact(path, source.filename, digest, size)

    def target_uri(self, staged: StagedArtifact, name: str, version: int) -> str:
        """Where :meth:`place` puts a staged file for this version."""
        return self.uri(self._target(staged, name, version))

    def place(self, staged: StagedArtifact, name: str, version: int) -> str:
        """Move a staged file to ``models/<name>/<version>/`` and return its URI."""
        final = self._target(staged, name, version)
        self._fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self._fs.mv(staged.path, final)
        self._remove_tree(staged.path.rsplit("/", 1)[0])
        return self.uri(final)

    def discard(self, staged: StagedArtifact) -> None:
        """Remove a staged file that will not become a version."""
        self._remove_tree(staged.path.rsplit("/", 1)[0])

    def remove(self, uri: str) -> None:
        """Remove a placed file (a version whose row could not be written)."""
        path = self._fs._strip_protocol(uri)
        if self._fs.exists(path):
            self._fs.rm(path)
        # Empty version folders would look like versions to someone browsing the store.
        folder = path.rsplit("/", 1)[0]
        if self._fs.exists(folder) and not self._fs.ls(folder):
            self._fs.rmdir(folder)

    def _target(self, staged: StagedArtifact, name: str, version: int) -> str:
        return f"{self._root}/models/{name}/{version}/{staged.filename}"

    def _copy(self, src: BinaryIO, dst: Any, source: OpenSource) -> tuple[str, int]:
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

    def _remove_tree(self, path: str) -> None:
        if self._fs.exists(path):
            self._fs.rm(path, recursive=True)

    def __repr__(self) -> str:
        return f"ModelStore({self._protocol}://{self._root})"


def _protocol_of(fs: Any) -> str:
    protocol = fs.protocol
    return protocol if isinstance(protocol, str) else protocol[0]


def _safe_filename(path: str) -> str:
    name = _UNSAFE.sub("_", PurePosixPath(path).name).strip("._")
    return name[:200] or "model"
