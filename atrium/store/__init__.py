"""The relational store: the database handle, ORM tables, migrations and repositories."""

# The web UI's, the audit trail's and the usage event ids' rows live in their own modules;
# importing them puts them on Base.metadata (which the migration-versus-ORM comparison and
# Alembic read).
from atrium.store import audit as audit
from atrium.store import usage as usage
from atrium.store import users as users
from atrium.store.db import Database
from atrium.store.keys import (
    ApiKey,
    ApiKeyRepository,
    NewKey,
    Scope,
    generate_secret,
    hash_key,
)
from atrium.store.tables import ApiKeyRow, Base, TeamRow
from atrium.store.teams import Team, TeamRepository

__all__ = [
    "ApiKey",
    "ApiKeyRepository",
    "ApiKeyRow",
    "Base",
    "Database",
    "NewKey",
    "Scope",
    "Team",
    "TeamRepository",
    "TeamRow",
    "generate_secret",
    "hash_key",
]
