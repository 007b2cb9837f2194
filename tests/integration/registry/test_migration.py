"""Migration 0010 creates the registry's tables and drops them again."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from atrium.store import Database
from atrium.store.db import alembic_config

pytestmark = pytest.mark.integration

REGISTRY_TABLES = {"registered_models", "model_versions", "model_aliases", "model_lineage"}


async def _table_names(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def test_migration_0010_drops_and_restores_the_registry_tables(database: Database) -> None:
    assert await _table_names(database) >= REGISTRY_TABLES

    def downgrade(sync: Connection) -> None:
        command.downgrade(alembic_config(sync), "0009")

    async with database.engine.begin() as conn:
        await conn.run_sync(downgrade)
    assert not REGISTRY_TABLES & await _table_names(database)
    await database.migrate()
    assert await _table_names(database) >= REGISTRY_TABLES
