"""Where the model store keeps its files: an fsspec file system, or an object store.

:class:`ModelStore <atrium.registry.store.ModelStore>` needs a handful of operations
(write a file, move it, list and remove under a prefix, download one). A local folder
(or any fsspec URL other than a bucket) is served by fsspec as before; ``s3://``,
``gs://`` and ``az://`` roots are served by obstore directly (:mod:`atrium.core.objectstore`:
s3fs and gcsfs cannot be installed beside the Kubernetes client), with the options
checked against obstore's documented keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import fsspec  # type: ignore[import-untyped]
import obstore

from atrium.core import objectstore

__all__ = ["FsspecFiles", "ObjectStoreFiles", "StoreFiles", "Writable", "open_files"]

#: S3 copies one object in one request only up to 5 GiB (CopyObject); larger staged files
#: are streamed to their final key (object_store has no multipart copy yet).
S3_COPY_LIMIT: Final = 5 * 1024**3
_CHUNK: Final = 8 * 1024 * 1024


class Writable(Protocol):
    """A file being written."""

    def write(self, data: bytes, /) -> int:
        """Append ``data``."""


class StoreFiles(Protocol):
    """The file operations the model store uses; paths are the backend's own."""

    #: The store's root as a path of this backend ("" for the top of a bucket).
    root: str
    #: Whether paths are local file paths (no download needed to read them).
    local: bool
    #: The URL scheme (``file``, ``s3``...).
    protocol: str

    def uri(self, path: str) -> str:
        """The URL of a path."""

    def path(self, uri: str) -> str:
        """The path of a URL this store made."""

    def exists(self, path: str) -> bool:
        """Whether a file is there."""

    def files(self, prefix: str) -> list[str]:
        """Every file under a folder (empty when there is none)."""

    def writer(self, path: str) -> contextlib.AbstractContextManager[Writable]:
        """Write a file; it is complete only when the block ends without an error."""

    def move(self, source: str, target: str, size: int) -> None:
        """Move a file of ``size`` bytes to a new path."""

    def remove(self, path: str) -> None:
        """Remove a file (and its folder once empty, where folders exist)."""

    def remove_tree(self, prefix: str) -> None:
        """Remove every file under a folder."""

    def download(self, path: str, target: Path) -> None:
        """Copy a file to a local path."""


def join(root: str, relative: str) -> str:
    """``root/relative`` for a root that may be empty (a bucket's top) or ``/``."""
    if not root:
        return relative
    return f"{root.rstrip('/')}/{relative}"


def open_files(root_url: str, options: Mapping[str, Any] | None = None) -> StoreFiles:
    """The backend for a store root URL (obstore for buckets, fsspec otherwise)."""
    scheme, sep, _ = root_url.partition("://")
    if sep and scheme.lower() in objectstore.PROVIDERS:
        return ObjectStoreFiles(root_url, options or {})
    return FsspecFiles(root_url, options or {})


class FsspecFiles:
    """A folder in any fsspec file system (a local folder by default)."""

    def __init__(self, root_url: str, options: Mapping[str, Any]) -> None:
        self._fs, root = fsspec.core.url_to_fs(root_url, **options)
        self.root = str(root).rstrip("/") or "/"
        protocol = self._fs.protocol
        self.protocol = str(protocol if isinstance(protocol, str) else protocol[0])
        self.local = self.protocol in ("file", "local")

    def uri(self, path: str) -> str:
        """The URL of a path."""
        return str(self._fs.unstrip_protocol(path))

    def path(self, uri: str) -> str:
        """The path of a URL."""
        return str(self._fs._strip_protocol(uri))

    def exists(self, path: str) -> bool:
        """Whether a file is there."""
        return bool(self._fs.exists(path))

    def files(self, prefix: str) -> list[str]:
        """Every file under a folder."""
        if not self._fs.exists(prefix):
            return []
        return [str(p) for p in self._fs.find(prefix)]

    @contextlib.contextmanager
    def writer(self, path: str) -> Iterator[Writable]:
        """Write a file (its folder is made first)."""
        self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self._fs.open(path, "wb") as handle:
            yield handle

    def move(self, source: str, target: str, size: int) -> None:
        """Rename (a local rename is atomic)."""
        del size
        self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self._fs.mv(source, target)

    def remove(self, path: str) -> None:
        """Remove a file, then its folder when empty."""
        if self._fs.exists(path):
            self._fs.rm(path)
        # Empty version folders would look like versions to someone browsing the store.
        folder = path.rsplit("/", 1)[0]
        if self._fs.exists(folder) and not self._fs.ls(folder):
            self._fs.rmdir(folder)

    def remove_tree(self, prefix: str) -> None:
        """Remove a folder and what it holds."""
        if self._fs.exists(prefix):
            self._fs.rm(prefix, recursive=True)

    def download(self, path: str, target: Path) -> None:
        """Copy to a local path."""
        self._fs.get(path, str(target))


class ObjectStoreFiles:
    """A prefix of an S3 bucket, a GCS bucket or an Azure container, through obstore.

    Paths are keys in the bucket. A file is written with obstore's buffered writer
    (a multipart upload past 10 MiB), so a key appears only once it is complete; a
    write that fails is not completed and its key removed.
    """

    local = False

    def __init__(self, root_url: str, options: Mapping[str, Any]) -> None:
        provider, self._bucket, self.root = objectstore.split_url(root_url)
        self.protocol = root_url.partition("://")[0].lower()
        self._provider = provider
        self._store = objectstore.open_store(
            objectstore.parse_options(provider, options), self._bucket
        )

    def uri(self, path: str) -> str:
        """``scheme://bucket/key``."""
        return f"{self.protocol}://{self._bucket}/{path}"

    def path(self, uri: str) -> str:
        """The key of a URL in this bucket (ValueError for another bucket)."""
        provider, bucket, key = objectstore.split_url(uri)
        if provider != self._provider or bucket != self._bucket:
            raise ValueError(f"{uri} is not in the model store's bucket {self._bucket}")
        return key

    def exists(self, path: str) -> bool:
        """Whether a key is there."""
        try:
            obstore.head(self._store, path)
        except FileNotFoundError:
            return False
        return True

    def files(self, prefix: str) -> list[str]:
        """Every key under a prefix."""
        found: list[str] = []
        for batch in obstore.list(self._store, prefix=prefix.rstrip("/") + "/"):
            found.extend(str(meta["path"]) for meta in batch)
        return found

    @contextlib.contextmanager
    def writer(self, path: str) -> Iterator[Writable]:
        """An upload completed only when the block succeeds; else its key is removed."""
        handle = obstore.open_writer(self._store, path, buffer_size=_CHUNK)
        try:
            yield handle
        except BaseException:
            # The writer has no abort: closing completes the upload with what was
            # written (rather than leaving an unfinished multipart upload behind), and
            # the key is deleted at once.
            with contextlib.suppress(Exception):
                handle.close()
            with contextlib.suppress(FileNotFoundError):
                obstore.delete(self._store, path)
            raise
        handle.close()

    def move(self, source: str, target: str, size: int) -> None:
        """Copy in the store (streamed past S3's single-copy limit), then delete."""
        if self._provider == "s3" and size > S3_COPY_LIMIT:
            self._stream_copy(source, target)
        else:
            obstore.copy(self._store, source, target)
        obstore.delete(self._store, source)

    def _stream_copy(self, source: str, target: str) -> None:
        with self.writer(target) as out:
            for chunk in obstore.get(self._store, source).stream(min_chunk_size=_CHUNK):
                out.write(chunk)

    def remove(self, path: str) -> None:
        """Delete a key (a missing one is no error); prefixes need no removing."""
        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self._store, path)

    def remove_tree(self, prefix: str) -> None:
        """Delete every key under a prefix (in bulk where the store can)."""
        keys = self.files(prefix)
        if keys:
            obstore.delete(self._store, keys)

    def download(self, path: str, target: Path) -> None:
        """Stream a key into a local file."""
        with target.open("wb") as out:
            for chunk in obstore.get(self._store, path).stream(min_chunk_size=_CHUNK):
                out.write(chunk)
