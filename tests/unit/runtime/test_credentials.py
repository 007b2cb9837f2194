"""StoredCredential over a real SecretStore on SQLite: cached, refreshed, shared, failing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from atrium.runtime.credentials import CredentialUnavailableError, StoredCredential
from atrium.store.db import Database
from atrium.store.secrets import SecretStore, generate_key


class CountingReader:
    """A SecretStore that counts reads (the wrapped store does the work)."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store
        self.reads = 0

    async def get(self, name: str) -> str:
        self.reads += 1
        return await self.store.get(name)


@pytest_asyncio.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}", pool_size=1)
    try:
        await db.migrate()
        yield db
    finally:
        await db.close()


async def test_the_value_is_kept_until_the_refresh_and_read_once_by_many(
    database: Database,
) -> None:
    store = SecretStore(database, generate_key())
    await store.put("openai-key", "sk-one")
    now = [0.0]
    reader = CountingReader(store)
    credential = StoredCredential(
        "openai-key", reader, model="m", refresh_s=60, clock=lambda: now[0]
    )
    values = await asyncio.gather(*(credential.value() for _ in range(10)))
    assert values == ["sk-one"] * 10
    assert reader.reads == 1
    await store.put("openai-key", "sk-two")
    assert await credential.value() == "sk-one"  # still fresh
    now[0] = 61.0
    assert await credential.value() == "sk-two"
    assert reader.reads == 2
    assert "sk-" not in repr(credential)


async def test_an_unreadable_store_keeps_the_last_value_and_a_deleted_secret_stops(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    key = generate_key()
    store = SecretStore(database, key)
    await store.put("anthropic-key", "sk-ant-value")
    reader = CountingReader(store)
    credential = StoredCredential("anthropic-key", reader, model="claude", refresh_s=0)
    assert await credential.value() == "sk-ant-value"

    reader.store = SecretStore(database, generate_key())  # the key was replaced: undecryptable
    assert await credential.value() == "sk-ant-value"
    assert "using the last value" in caplog.text
    assert "sk-ant-value" not in caplog.text

    reader.store = store
    await store.delete("anthropic-key")
    with pytest.raises(CredentialUnavailableError, match="anthropic-key") as raised:
        await credential.value()
    assert raised.value.status == 502
    assert "sk-ant-value" not in raised.value.message
    with pytest.raises(CredentialUnavailableError):
        await credential.value()  # forgotten, not served from memory


async def test_a_first_read_that_fails_is_an_error(database: Database) -> None:
    store = SecretStore(database, generate_key())
    await store.put("gemini-key", "AIza-value")
    other = SecretStore(database, generate_key())
    credential = StoredCredential("gemini-key", other, model="gemini", refresh_s=60)
    with pytest.raises(CredentialUnavailableError, match="gemini"):
        await credential.value()
