"""Files in an object store (S3, GCS, Azure Blob) or an fsspec filesystem (memory, local).

Only a few protocols are accepted: ``file://`` (read like a folder source, inside the
allowed roots), ``memory://`` (fsspec's), and the object stores ``s3://``, ``gs://``
and ``az://`` (and their other spellings in :data:`atrium.core.objectstore.PROVIDERS`),
read through obstore (:mod:`atrium.core.objectstore`): one flat listing with sizes,
ETags and modification times, then one GET per file. Chained URLs (``zip::s3://...``)
and fsspec's HTTP, FTP or SSH filesystems are refused: they would reach hosts around
the SSRF guard. A custom endpoint in the storage options (MinIO, an emulator) is checked
against the network policy before use.

Up to four files are read at a time, in order.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import fsspec  # type: ignore[import-untyped]
import httpx
import obstore.exceptions
from pydantic import Field, field_validator

from atrium.core import objectstore
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

if TYPE_CHECKING:
    from obstore import ObjectMeta

_LOCAL: Final = frozenset({"file", "local"})
PROTOCOLS: Final = frozenset({"memory", *_LOCAL, *objectstore.PROVIDERS})
_PARALLEL_READS: Final = 4
_MODIFIED_KEYS: Final = ("mtime", "LastModified", "last_modified", "updated", "modified")
_CREATED_KEYS: Final = ("created", "creation_time", "timeCreated", "birthtime")


class FsspecSource(SourceSpecBase):
    """Files below a URL in an object store or other fsspec filesystem."""

    kind: Literal["fsspec"] = Field("fsspec", description="Source kind: an fsspec URL.")
    url: str = Field(
        description=(
            "Where the files are: s3://bucket/prefix, gs://bucket/prefix, az://container/"
            "prefix (read through obstore), memory://path or file:///path (inside the "
            "allowed folders)."
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
            "Name of a secret holding the object store's options as a JSON object. "
            "S3: access_key_id, secret_access_key, session_token, region, endpoint "
            "(MinIO and other S3-compatible servers), skip_signature (public buckets), "
            "virtual_hosted_style_request, request_payer. GCS: service_account_key (the "
            "key's JSON, as an object or a string), bearer_token, base_url, "
            "skip_signature. Azure: account_name, account_key, sas_key, token, "
            "client_id, client_secret, tenant_id, use_emulator (Azurite), endpoint, "
            "skip_signature. All: allow_http, timeout, connect_timeout ('30s'). "
            "s3fs/gcsfs/adlfs names (key, secret, token, endpoint_url, client_kwargs, "
            "sas_token, anon) are accepted too. Without credentials the server's own "
            "(environment, instance metadata) are used. Endpoints are checked against "
            "the network policy."
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
        if protocol in objectstore.PROVIDERS:
            return ObjectStoreConnector(self, context)
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
    """Reads the files of an :class:`FsspecSource` from an fsspec filesystem (``memory://``).

    ``filesystem`` replaces the one the URL's protocol names (tests, or a caller that
    already holds a configured filesystem).
    """

    def __init__(
        self, spec: FsspecSource, context: ConnectorContext, *, filesystem: Any = None
    ) -> None:
        self._spec = spec
        self._filesystem = filesystem
        self._matcher = PathMatcher([spec.glob])
        self._limit = context.max_document_bytes

    async def documents(self) -> Documents:
        """Each matching file, in path order."""
        fs = self._filesystem
        if fs is None:
            fs = fsspec.filesystem(fsspec.core.split_protocol(self._spec.url)[0])
        files = _AsyncFiles(fs) if getattr(fs, "async_impl", False) else _Files(fs)
        root = fs._strip_protocol(self._spec.url).rstrip("/")
        try:
            if not await files.exists(root):
                raise ConnectorError(f"there is nothing at {self._spec.url}")
            listing = await files.find(root)
        except OSError as exc:
            raise ConnectorError(f"cannot list {self._spec.url}: {exc}") from None
        loads = []
        for path, info in sorted(listing.items()):
            key = path[len(root) :].lstrip("/") or path.rpartition("/")[2]
            if info.get("type", "file") == "file" and self._matcher(key):
                loads.append(_bind(self._load, files, key, path, info))
        async for document in _in_order(loads):
            yield document

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
        modified = _first_time(info, _MODIFIED_KEYS)
        created = _first_time(info, _CREATED_KEYS)
        return _document(self._spec, key, data, self._limit, created=created, modified=modified)


class ObjectStoreConnector:
    """Reads the files of an :class:`FsspecSource` in S3, GCS or Azure Blob (obstore)."""

    def __init__(self, spec: FsspecSource, context: ConnectorContext) -> None:
        self._spec = spec
        self._context = context
        self._matcher = PathMatcher([spec.glob])
        self._limit = context.max_document_bytes

    async def documents(self) -> Documents:
        """Each matching object below the URL's prefix, in key order."""
        provider, bucket, prefix = self._split()
        store = await self._open(provider, bucket)
        listing = await self._list(store, prefix)
        if not listing:
            raise ConnectorError(f"there is nothing at {self._spec.url}")
        loads = []
        for meta in sorted(listing, key=lambda m: m["path"]):
            path = meta["path"]
            key = path[len(prefix) :].lstrip("/") if prefix else path
            if key and not path.endswith("/") and self._matcher(key):
                loads.append(_bind(self._load, store, key, meta))
        async for document in _in_order(loads):
            yield document

    def _split(self) -> tuple[objectstore.Provider, str, str]:
        try:
            return objectstore.split_url(self._spec.url)
        except objectstore.ObjectStoreError as exc:
            raise ConnectorError(str(exc)) from None

    async def _open(self, provider: objectstore.Provider, bucket: str) -> objectstore.ObjectStore:
        try:
            options = objectstore.parse_options(provider, await self._options())
            endpoints = objectstore.custom_endpoints(options)
        except objectstore.ObjectStoreError as exc:
            raise ConnectorError(f"the storage options are wrong: {exc}") from None
        await self._vet(endpoints)
        try:
            return objectstore.open_store(options, bucket)
        except objectstore.ObjectStoreError as exc:
            raise ConnectorError(str(exc)) from None

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

    async def _vet(self, endpoints: Sequence[str]) -> None:
        for endpoint in endpoints:
            url = httpx.URL(endpoint)
            if url.scheme not in ("http", "https") or not url.host:
                raise ConnectorError(f"the storage endpoint {endpoint!r} is not an http(s) URL")
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                await resolve_and_vet(url.host, port, self._context.policy)
            except BlockedDestinationError as exc:
                raise ConnectorError(f"the storage endpoint is not allowed: {exc}") from None
            except socket.gaierror:
                raise ConnectorError(f"cannot resolve the storage endpoint {url.host}") from None

    async def _list(self, store: objectstore.ObjectStore, prefix: str) -> list[ObjectMeta]:
        found: list[ObjectMeta] = []
        try:
            async for batch in store.list(prefix or None, chunk_size=1000):
                found.extend(batch)
        except (OSError, obstore.exceptions.BaseError) as exc:
            if objectstore.is_refusal(exc):
                secret = self._spec.storage_options_secret
                where = f"the secret {secret!r}" if secret else "the server's environment"
                raise ConnectorError(
                    f"access to {self._spec.url} was refused; check the credentials in "
                    f"{where}: {objectstore.brief_error(exc)}"
                ) from None
            raise ConnectorError(
                f"cannot list {self._spec.url}: {objectstore.brief_error(exc)}"
            ) from None
        return found

    async def _load(
        self, store: objectstore.ObjectStore, key: str, meta: ObjectMeta
    ) -> SourceDocument | DocumentFailure:
        name = key.rpartition("/")[2]
        if meta["size"] > self._limit:
            return DocumentFailure(key, too_large(name, meta["size"], self._limit))
        try:
            got = await store.get_async(meta["path"])
            data = (await got.bytes_async()).to_bytes()
        except (OSError, obstore.exceptions.BaseError) as exc:
            return DocumentFailure(key, f"cannot be read: {objectstore.brief_error(exc)}")
        modified = meta["last_modified"]
        return _document(self._spec, key, data, self._limit, created=None, modified=modified)


def _document(
    spec: FsspecSource,
    key: str,
    data: bytes,
    limit: int,
    *,
    created: datetime | None,
    modified: datetime | None,
) -> SourceDocument | DocumentFailure:
    name = key.rpartition("/")[2]
    if len(data) > limit:
        return DocumentFailure(key, too_large(name, len(data), limit))
    return make_document(
        key,
        data,
        name,
        media_type=mimetypes.guess_type(name)[0],
        uri=f"{spec.url.rstrip('/')}/{key}",
        created_at=created or modified,
        updated_at=modified,
        metadata={"path": key},
    )


_Load = Callable[[], Awaitable[SourceDocument | DocumentFailure]]


def _bind(load: Callable[..., Awaitable[SourceDocument | DocumentFailure]], *args: Any) -> _Load:
    return lambda: load(*args)


async def _in_order(loads: Sequence[_Load]) -> Documents:
    """Each load's result in order, up to :data:`_PARALLEL_READS` running at a time."""
    window: deque[asyncio.Task[SourceDocument | DocumentFailure]] = deque()
    try:
        for load in loads:
            window.append(asyncio.ensure_future(load()))
            if len(window) >= _PARALLEL_READS:
                yield await window.popleft()
        while window:
            yield await window.popleft()
    finally:
        for task in window:
            task.cancel()


def _first_time(info: dict[str, Any], keys: tuple[str, ...]) -> datetime | None:
    for key in keys:
        moment = parse_timestamp(info.get(key))
        if moment is not None:
            return moment
    return None
