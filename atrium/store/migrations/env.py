"""Alembic environment for Atrium's store.

Migrations run only through ``Database.migrate()``, which hands over an open
connection in ``config.attributes["connection"]``; there is no alembic.ini and no
offline (SQL script) mode.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from atrium.store.tables import Base


def _given_connection() -> Connection:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        msg = (
            "Atrium's migrations run through atrium.store.Database.migrate(), "
            "which passes a connection in config.attributes['connection']"
        )
        raise RuntimeError(msg)  # noqa: TRY004 - a misuse of the tool, not a bad argument
    return connection


def run_migrations(connection: Connection) -> None:
    """Run the pending migrations on ``connection``, inside its transaction."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    msg = "offline (--sql) migrations are not supported; use Database.migrate()"
    raise RuntimeError(msg)
run_migrations(_given_connection())
