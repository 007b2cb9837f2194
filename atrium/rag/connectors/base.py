"""What every connector shares: the protocol, its errors, its build context and helpers.

A connector enumerates everything currently in its source, as
:class:`~atrium.rag.types.SourceDocument` (stable ``key``, SHA-256 ``content_hash``) or,
for one document that cannot be read, a :class:`DocumentFailure`. The ingest pipeline
compares keys and hashes with what it stored before, so connectors keep no state.

A :class:`ConnectorError` means the whole source could not be read (it is unreachable,
misconfigured, or the enumeration stopped part-way): the pipeline must then keep what it
has rather than treat the documents it did not see as deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import ClassVar, Final, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict

from atrium.core.errors import AtriumError, NotFoundError
from atrium.core.netguard import NetworkPolicy
from atrium.rag.types import Scalar, SourceDocument

# Query parameters whose values are credentials, masked wherever a URL is shown.
_SENSITIVE_PARAM: Final = re.compile(
    r"pass|secret|token|key|auth|sig|credential|session", re.IGNORECASE
)
_MASK: Final = "***"
_UNSAFE_FILENAME: Final = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class DocumentFailure:
    """One document of a source that could not be read, and why (readable by a person)."""

    key: str
    reason: str


#: What :meth:`Connector.documents` returns: an async generator, so it can be closed.
Documents = AsyncGenerator[SourceDocument | DocumentFailure, None]


class ConnectorError(AtriumError):
    """The whole source could not be read; the message says why, with no credentials."""

    status: ClassVar[int] = 502
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = "source_unavailable"


class InvalidSourceError(ConnectorError):
    """A source spec that cannot be built here (a folder outside the allowed roots, ...)."""

    status: ClassVar[int] = 400
    type: ClassVar[str] = "invalid_request_error"
    default_code: ClassVar[str | None] = "invalid_source"


class Connector(Protocol):
    """Enumerates every document currently in a source.

    Consume with ``contextlib.aclosing(connector.documents())`` so that connections and
    files are released at once when the consumer stops early.
    """

    def documents(self) -> Documents:
        """Every document in the source, or a failure for each one that cannot be read."""
        ...


class SecretGetter(Protocol):
    """Reads a named secret (:class:`atrium.store.secrets.SecretStore` is one)."""

    async def get(self, name: str) -> str:
        """The secret's value; a :class:`~atrium.core.errors.NotFoundError` if absent."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectorContext:
    """What building a connector needs from the platform."""

    secrets: SecretGetter
    data_dir: Path
    policy: NetworkPolicy
    max_document_bytes: int
    #: Local folders and files a source may read; resolved (symlinks followed).
    allowed_roots: tuple[Path, ...]
    #: Files and folders no source may read even inside an allowed root (the store's
    #: SQLite file, the secret key file, index directories).
    protected_paths: tuple[Path, ...] = field(default=())


class SourceSpecBase(BaseModel):
    """Base of every source spec: immutable, and unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def content_hash(data: bytes) -> str:
    """SHA-256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def make_document(
    key: str,
    data: bytes,
    filename: str,
    *,
    media_type: str | None = None,
    title: str | None = None,
    uri: str | None = None,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
    metadata: dict[str, Scalar] | None = None,
) -> SourceDocument:
    """A :class:`SourceDocument` with its content hash computed from ``data``."""
    return SourceDocument(
        key=key,
        data=data,
        filename=filename,
        content_hash=content_hash(data),
        media_type=media_type,
        title=title,
        uri=uri,
        created_at=created_at,
        updated_at=updated_at,
        metadata=metadata or {},
    )


async def read_secret(secrets: SecretGetter, name: str) -> str:
    """A secret's value, or a :class:`ConnectorError` naming the secret (not its value)."""
    try:
        return await secrets.get(name)
    except NotFoundError:
        msg = f"the secret {name!r} does not exist"
        raise ConnectorError(msg) from None
    except AtriumError as exc:
        msg = f"the secret {name!r} cannot be read: {exc.message}"
        raise ConnectorError(msg) from None


def mask_url(url: str) -> str:
    """``url`` with its password and credential-like query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(an invalid URL)"
    netloc = parts.netloc
    if password is not None:
        user = parts.username or ""
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:{_MASK}@{host}"
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, _MASK if _SENSITIVE_PARAM.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every (non-trivial) secret value in it replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _MASK)
    return text


def format_size(size: int) -> str:
    """A size as a person reads it: ``"512 bytes"``, ``"3.2 KB"``, ``"12.3 MB"``."""
    if size < 1024:
        return f"{size} bytes"
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError  # unreachable: size >= 1024 matched KB


def too_large(name: str, size: int, limit: int) -> str:
    """The reason given for a document over the size limit."""
    return f"{name} is {format_size(size)}, over the {format_size(limit)} limit"


def safe_filename(key: str, extension: str = ".txt") -> str:
    """A file name made from a document key (an SQL id, an API id) for the parser."""
    stem = _UNSAFE_FILENAME.sub("_", key).strip("._")[:120] or "document"
    return stem + extension


def resolve_local(path: str | Path, context: ConnectorContext) -> Path:
    """``path`` (relative to the data directory) resolved, if inside an allowed root.

    Raises :class:`InvalidSourceError` otherwise, or when it is a protected path.
    """
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = context.data_dir / candidate
    resolved = candidate.resolve()
    if not any(is_within(resolved, root.resolve()) for root in context.allowed_roots):
        msg = f"{path} is outside the folders sources may read"
        raise InvalidSourceError(msg)
    if is_protected(resolved, context.protected_paths):
        msg = f"{path} holds Atrium's own data and cannot be a source"
        raise InvalidSourceError(msg)
    return resolved


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it (both already resolved)."""
    return path == root or root in path.parents


def is_protected(resolved: Path, protected: Iterable[Path]) -> bool:
    """Whether a resolved path is a protected path or inside one."""
    return any(is_within(resolved, item.resolve()) for item in protected)


def to_scalar(value: object) -> Scalar | None:
    """A metadata value from a column or JSON value (nested values become JSON text)."""
    if value is None or isinstance(value, str | bool | int | float | datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return as_text(value)


def as_text(value: object) -> str:
    """How a value appears in rendered text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def parse_timestamp(value: object) -> datetime | None:
    """A timezone-aware datetime from a datetime, date, ISO 8601 text or epoch seconds.

    Naive values are taken as UTC. Anything else (or an unparseable text) is None.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)
