"""Shared pieces of the connector tests: a real secret store and a build helper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path

import pytest_asyncio

from atrium.core.netguard import NetworkPolicy
from atrium.rag.connectors import Connector, DocumentFailure, SourceSpec, build_connector
from atrium.rag.types import SourceDocument
from atrium.store import Database
from atrium.store.secrets import SecretStore, generate_key

#: Lets the tests reach their own servers on 127.0.0.1, and nothing else local.
LOOPBACK_ONLY = NetworkPolicy(allowed_hosts=("127.0.0.1",))
LIMIT = 10 * 1024 * 1024


@pytest_asyncio.fixture
async def secrets(tmp_path: Path) -> AsyncIterator[SecretStore]:
    """A migrated SecretStore on SQLite."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store' / 'atrium.db'}", pool_size=1)
    try:
        await db.migrate()
        yield SecretStore(db, generate_key())
    finally:
        await db.close()


def build(
    spec: SourceSpec,
    data_dir: Path,
    secrets: SecretStore,
    *,
    policy: NetworkPolicy = LOOPBACK_ONLY,
    limit: int = LIMIT,
    allowed_roots: Sequence[Path] | None = None,
    protected_paths: Sequence[Path] = (),
) -> Connector:
    """``build_connector`` with the tests' defaults."""
    return build_connector(
        spec,
        secrets=secrets,
        data_dir=data_dir,
        policy=policy,
        max_document_bytes=limit,
        allowed_roots=allowed_roots,
        protected_paths=protected_paths,
    )


async def collect(connector: Connector) -> list[SourceDocument | DocumentFailure]:
    """Everything a connector yields, in order."""
    async with aclosing(connector.documents()) as documents:
        return [item async for item in documents]


def split(
    items: list[SourceDocument | DocumentFailure],
) -> tuple[dict[str, SourceDocument], dict[str, str]]:
    """Documents by key, and failure reasons by key."""
    documents = {i.key: i for i in items if isinstance(i, SourceDocument)}
    failures = {i.key: i.reason for i in items if isinstance(i, DocumentFailure)}
    return documents, failures
