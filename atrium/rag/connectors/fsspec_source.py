"""Files in an object store or other fsspec filesystem (S3, GCS, Azure, memory, local).

Only a few protocols are accepted: ``file://`` (read like a folder source, inside the
allowed roots), ``memory://``, and the object stores ``s3://``, ``gs://``/``gcs://``
and ``az://``/``abfs://`` (their packages, s3fs, gcsfs and adlfs, installed on demand).
Chained URLs (``zip::s3://...``) and fsspec's HTTP, FTP or SSH filesystems are refused:
they would reach hosts around the SSRF guard. A custom endpoint in the storage options
(MinIO, a local emulator) is checked against the network policy before use.

Filesystems with an asynchronous implementation (s3fs, gcsfs, adlfs) are used through
it; others run in worker threads. Up to four files are read at a time, in order.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import socket
from collections import deque
from datetime import datetime
from typing import Any, Final, Literal

import fsspec  # type: ignore[import-untyped]
import httpx
from pydantic import Field, field_validator

from atrium.core.netguard import BlockedDestinationError, resolve_and_vet
from atrium.rag.connectors._patterns import PathMatcher, validate_globs
from atrium.rag.connectors.base import (
    Connector,
    ConnectorContext,
    ConnectorError,
    DocumentFailure,
    Documents,
    SourceSpecBase,
    make_document,
    parse_timestamp,
    read_secret,
    resolve_local,
    too_large,
)
from atrium.rag.connectors.files import FolderConnector
from atrium.rag.types import SourceDocument

#: Protocols of object stores -> the package that implements them.
PACKAGES: Final = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}
_LOCAL: Final = frozenset({"file", "local"})
PROTOCOLS: Final = frozenset({"memory", *_LOCAL, *PACKAGES})
_PARALLEL_READS: Final = 4
_MODIFIED_KEYS: Final = ("mtime", "LastModified", "last_modified", "updated", "modified")
_CREATED_KEYS: Final = ("created", "creation_time", "timeCreated", "birthtime")


class FsspecSource(SourceSpecBase):
    """Files below a URL in an object store or other fsspec filesystem."""

    kind: Literal["fsspec"] = Field("fsspec", description="Source kind: an fsspec URL.")
    url: str = Field(
        description=(
            "Where the files are: s3://bucket/prefix, gs://bucket/prefix, az://container/"
            "prefix, memory://path or file:///path (inside the allowed folders)."
        )
    )
    glob: str = Field(
        "**/*",
        description=(
            "Files to read, as a glob below the URL: with a '/' it matches the whole "
            "path ('reports/**/*.pdf'), without one the file name at any depth ('*.md')."
        ),
    )
    storage_options_secret: str | None = Field(
        None,
        description=(
            "Name of a secret holding the filesystem's options as a JSON object "
            '(e.g. {"key": ..., "secret": ..., "endpoint_url": ...} for s3fs).'
        ),
    )

    @field_validator("url")
    @classmethod
    def _known_protocol(cls, url: str) -> str:
        if "::" in url:
            raise ValueError("chained fsspec URLs (with '::') are not accepted")
        protocol, _ = fsspec.core.split_protocol(url)
        if protocol not in PROTOCOLS:
            known = ", ".join(f"{p}://" for p in sorted(PROTOCOLS))
            raise ValueError(f"the url must start with one of {known}")
        return url

    @field_validator("glob")
    @classmethod
    def _glob_compiles(cls, pattern: str) -> str:
        return validate_globs([pattern])[0]

    def build(self, context: ConnectorContext) -> Connector:
        """A connector over this URL; local URLs are read like a folder source."""
        protocol, path = fsspec.core.split_protocol(self.url)
        if protocol in _LOCAL:
            return FolderConnector(
                resolve_local(path, context),
                PathMatcher([self.glob]),
                max_document_bytes=context.max_document_bytes,
                protected_paths=context.protected_paths,
            )
        return FsspecConnector(self, context)


class _Files:
    """The few filesystem calls a sync needs, run in a worker thread."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    async def exists(self, path: str) -> bool:
        return bool(await asyncio.to_thread(self.fs.exists, path))

    async def find(self, path: str) -> dict[str, dict[str, Any]]:
        found = await asyncio.to_thread(self.fs.find, path, withdirs=False, detail=True)
        return dict(found)

    async def cat(self, path: str, end: int) -> bytes:
        return bytes(await asyncio.to_thread(self.fs.cat_file, path, start=0, end=end))


class _AsyncFiles(_Files):
    """The same calls through the filesystem's own coroutines."""

    async def exists(self, path: str) -> bool:
        return bool(await self.fs._exists(path))

    async def find(self, path: str) -> dict[str, dict[str, Any]]:
        return dict(await self.fs._find(path, withdirs=False, detail=True))

    async def cat(self, path: str, end: int) -> bytes:
        return bytes(await self.fs._cat_file(path, start=0, end=end))


class FsspecConnector:
    """Reads the files of an :class:`FsspecSource` (not a local one).

    ``filesystem`` replaces the one the URL's protocol names (tests, or a caller that
    already holds a configured filesystem).
    """

    def __init__(
        self, spec: FsspecSource, context: ConnectorContext, *, filesystem: Any = None
    ) -> None:
        self._spec = spec
        self._context = context
        self._filesystem = filesystem
        self._matcher = PathMatcher([spec.glob])
        self._limit = context.max_document_bytes

    async def documents(self) -> Documents:
        """Each matching file, in path order."""
        files = await self._open()
        root = files.fs._strip_protocol(self._spec.url).rstrip("/")
        try:
            if not await files.exists(root):
                raise ConnectorError(f"there is nothing at {self._spec.url}")
            listing = await files.find(root)
        except OSError as exc:
            raise ConnectorError(f"cannot list {self._spec.url}: {exc}") from None
        entries = []
        for path, info in sorted(listing.items()):
            key = path[len(root) :].lstrip("/") or path.rpartition("/")[2]
            if info.get("type", "file") == "file" and self._matcher(key):
                entries.append((key, path, info))
        async for document in self._read_in_order(files, entries):
            yield document

    async def _open(self) -> _Files:
        fs = self._filesystem
        if fs is None:
            options = await self._options()
            await self._vet_endpoint(options)
            fs = self._create(options)
        return _AsyncFiles(fs) if getattr(fs, "async_impl", False) else _Files(fs)

    def _create(self, options: dict[str, Any]) -> Any:
        protocol, _ = fsspec.core.split_protocol(self._spec.url)
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except ImportError:
            package = PACKAGES.get(protocol, protocol)
            raise ConnectorError(f"install {package} to read {protocol}:// urls") from None
        try:
            if getattr(cls, "async_impl", False):
                return cls(asynchronous=True, **options)
            return cls(**options)
        except (TypeError, ValueError) as exc:
            raise ConnectorError(
                f"the storage options for {protocol}:// are wrong: {exc}"
            ) from None

    async def _options(self) -> dict[str, Any]:
        name = self._spec.storage_options_secret
        if name is None:
            return {}
        try:
            options = json.loads(await read_secret(self._context.secrets, name))
        except json.JSONDecodeError:
            options = None
        if not isinstance(options, dict):
            raise ConnectorError(f"the secret {name!r} must hold a JSON object of options")
        return options

    async def _vet_endpoint(self, options: dict[str, Any]) -> None:
        client_kwargs = options.get("client_kwargs")
        nested = client_kwargs.get("endpoint_url") if isinstance(client_kwargs, dict) else None
        for endpoint in (options.get("endpoint_url"), nested):
            if not isinstance(endpoint, str):
                continue
            url = httpx.URL(endpoint)
            if not url.host:
                raise ConnectorError("the storage options' endpoint_url has no host")
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                await resolve_and_vet(url.host, port, self._context.policy)
            except BlockedDestinationError as exc:
                raise ConnectorError(f"the storage endpoint is not allowed: {exc}") from None
            except socket.gaierror:
                raise ConnectorError(f"cannot resolve the storage endpoint {url.host}") from None

    async def _read_in_order(
        self, files: _Files, entries: list[tuple[str, str, dict[str, Any]]]
    ) -> Documents:
        window: deque[asyncio.Task[SourceDocument | DocumentFailure]] = deque()
        try:
            for key, path, info in entries:
                window.append(asyncio.ensure_future(self._load(files, key, path, info)))
                if len(window) >= _PARALLEL_READS:
                    yield await window.popleft()
            while window:
                yield await window.popleft()
        finally:
            for task in window:
                task.cancel()

    async def _load(
        self, files: _Files, key: str, path: str, info: dict[str, Any]
    ) -> SourceDocument | DocumentFailure:
        name = key.rpartition("/")[2]
        size = info.get("size")
        if isinstance(size, int) and size > self._limit:
            return DocumentFailure(key, too_large(name, size, self._limit))
        try:
            data = await files.cat(path, self._limit + 1)
        except OSError as exc:
            return DocumentFailure(key, f"cannot be read: {exc}")
        if len(data) > self._limit:
            return DocumentFailure(key, too_large(name, len(data), self._limit))
        modified = _first_time(info, _MODIFIED_KEYS)
        return make_document(
            key,
            data,
            name,
            media_type=mimetypes.guess_type(name)[0],
            uri=f"{self._spec.url.rstrip('/')}/{key}",
            created_at=_first_time(info, _CREATED_KEYS) or modified,
            updated_at=modified,
            metadata={"path": key},
        )


def _first_time(info: dict[str, Any], keys: tuple[str, ...]) -> datetime | None:
    for key in keys:
        moment = parse_timestamp(info.get(key))
        if moment is not None:
            return moment
    return None
