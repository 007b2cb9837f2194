"""Connectors: where a knowledge base's documents come from.

A source is configured by a spec (:data:`SourceSpec`, a union discriminated on
``kind``) and turned into a :class:`Connector` by :func:`build_connector`, which hands it
what it may touch: the secrets, the data directory, the folders sources may read and the
network policy for outbound requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import Field, TypeAdapter

from atrium.core.netguard import NetworkPolicy
from atrium.rag.connectors.base import (
    Connector,
    ConnectorContext,
    ConnectorError,
    DocumentFailure,
    Documents,
    InvalidSourceError,
    SecretGetter,
    content_hash,
    mask_url,
)
from atrium.rag.connectors.files import (
    FolderConnector,
    FolderSource,
    UnsafeFilenameError,
    safe_upload_path,
)
from atrium.rag.connectors.fsspec_source import (
    FsspecConnector,
    FsspecSource,
    ObjectStoreConnector,
)
from atrium.rag.connectors.http import (
    CursorPagination,
    HttpConnector,
    HttpSource,
    NextLinkPagination,
    NoPagination,
    PageNumberPagination,
)
from atrium.rag.connectors.sql import SqlConnector, SqlSource

#: Any source spec; ``kind`` says which.
SourceSpec = Annotated[
    FolderSource | SqlSource | HttpSource | FsspecSource, Field(discriminator="kind")
]
#: Validates a source spec from JSON or a dict: ``SOURCE_SPECS.validate_python(data)``.
SOURCE_SPECS: TypeAdapter[SourceSpec] = TypeAdapter(SourceSpec)


def build_connector(
    spec: SourceSpec,
    *,
    secrets: SecretGetter,
    data_dir: Path,
    policy: NetworkPolicy,
    max_document_bytes: int,
    allowed_roots: Sequence[Path] | None = None,
    protected_paths: Sequence[Path] = (),
) -> Connector:
    """The connector for ``spec``.

    ``allowed_roots`` are the local folders sources may read (default: the data
    directory); ``protected_paths`` are never read even inside them: pass the store's
    SQLite file, the secret key file and the index directories. Raises
    :class:`InvalidSourceError` for a spec that cannot be used here (e.g. a folder
    outside the allowed roots).
    """
    context = ConnectorContext(
        secrets=secrets,
        data_dir=data_dir,
        policy=policy,
        max_document_bytes=max_document_bytes,
        allowed_roots=tuple(allowed_roots) if allowed_roots is not None else (data_dir,),
        protected_paths=tuple(protected_paths),
    )
    return spec.build(context)


__all__ = [
    "SOURCE_SPECS",
    "Connector",
    "ConnectorContext",
    "ConnectorError",
    "CursorPagination",
    "DocumentFailure",
    "Documents",
    "FolderConnector",
    "FolderSource",
    "FsspecConnector",
    "FsspecSource",
    "HttpConnector",
    "HttpSource",
    "InvalidSourceError",
    "NextLinkPagination",
    "NoPagination",
    "ObjectStoreConnector",
    "PageNumberPagination",
    "SecretGetter",
    "SourceSpec",
    "SqlConnector",
    "SqlSource",
    "UnsafeFilenameError",
    "build_connector",
    "content_hash",
    "mask_url",
    "safe_upload_path",
]
