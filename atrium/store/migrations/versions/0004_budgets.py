"""Budgets on keys and teams.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add budget_usd and budget_period to keys and teams."""
    for table in ("api_keys", "teams"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))
            batch.add_column(sa.Column("budget_period", sa.String(8), nullable=True))


def downgrade() -> None:
    """Drop the budget columns."""
    for table in ("api_keys", "teams"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("budget_period")
            batch.drop_column("budget_usd")
