"""SecretStore on SQLite and real PostgreSQL: encrypted at rest, typed errors, no leaks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import pytest
from sqlalchemy import select

from atrium.core.errors import InvalidRequestError
from atrium.store import Database
from atrium.store.secrets import (
    SecretDecryptionError,
    SecretKeyError,
    SecretNotFoundError,
    SecretStore,
    generate_key,
)
from atrium.store.tables import SecretRow

pytestmark = pytest.mark.integration

KEY = generate_key()
VALUE = "pg-pässword: s3cr3t!"


@pytest.fixture
def store(database: Database, clock: Callable[[], datetime]) -> SecretStore:
    return SecretStore(database, KEY, clock=clock)


async def _ciphertext(database: Database, name: str) -> str:
    async with database.session() as session:
        row = await session.get(SecretRow, name)
    assert row is not None
    return row.ciphertext


async def test_a_value_comes_back_but_is_never_stored_in_clear(
    store: SecretStore, database: Database
) -> None:
    await store.put("warehouse.url", VALUE)
    assert await store.get("warehouse.url") == VALUE
    stored = await _ciphertext(database, "warehouse.url")
    assert "s3cr3t" not in stored
    assert stored.startswith("gAAAA")  # a Fernet token
    assert "s3cr3t" not in repr(store)
    assert KEY.decode() not in repr(store)


async def test_put_replaces_and_keeps_the_creation_time(
    store: SecretStore, database: Database
) -> None:
    await store.put("token", "first")
    await store.put("token", "second")
    assert await store.get("token") == "second"
    async with database.session() as session:
        row = (await session.scalars(select(SecretRow))).one()
    assert row.updated_at > row.created_at


async def test_empty_and_unicode_values(store: SecretStore) -> None:
    await store.put("empty", "")
    await store.put("unicode", "ключ\x00🔑")
    assert await store.get("empty") == ""
    assert await store.get("unicode") == "ключ\x00🔑"


async def test_missing_secrets_raise_a_typed_error(store: SecretStore) -> None:
    with pytest.raises(SecretNotFoundError, match="'nope'") as caught:
        await store.get("nope")
    assert caught.value.status == 404


async def test_delete_and_list_names(store: SecretStore) -> None:
    for name in ("b-token", "a_url", "c.key"):
        await store.put(name, f"value of {name}")
    assert await store.list_names() == ["a_url", "b-token", "c.key"]
    assert await store.delete("b-token") is True
    assert await store.delete("b-token") is False
    assert await store.list_names() == ["a_url", "c.key"]
    with pytest.raises(SecretNotFoundError):
        await store.get("b-token")


@pytest.mark.parametrize("name", ["", "has space", "a/b", "../x", "x" * 101, "naïve"])
async def test_invalid_names_are_refused(store: SecretStore, name: str) -> None:
    with pytest.raises(InvalidRequestError, match="secret name"):
        await store.put(name, "v")
    assert await store.list_names() == []


async def test_another_key_cannot_decrypt(store: SecretStore, database: Database) -> None:
    await store.put("token", VALUE)
    with pytest.raises(SecretDecryptionError, match="'token'") as caught:
        await SecretStore(database, generate_key()).get("token")
    assert VALUE not in str(caught.value)


async def test_a_ciphertext_moved_to_another_name_does_not_decrypt(
    store: SecretStore, database: Database
) -> None:
    await store.put("admin-token", VALUE)
    await store.put("public", "harmless")
    stolen = await _ciphertext(database, "admin-token")
    async with database.session() as session:
        public = await session.get(SecretRow, "public")
        assert public is not None
        public.ciphertext = stolen
        await session.commit()
    with pytest.raises(SecretDecryptionError):
        await store.get("public")


async def test_concurrent_puts_of_a_new_name_all_succeed(store: SecretStore) -> None:
    values = [f"value-{i}" for i in range(5)]
    await asyncio.gather(*(store.put("raced", value) for value in values))
    assert await store.get("raced") in values
    assert await store.list_names() == ["raced"]


def test_an_invalid_key_is_refused(database: Database) -> None:
    with pytest.raises(SecretKeyError, match="not a Fernet key"):
        SecretStore(database, b"too short")
