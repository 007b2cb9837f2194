"""Per-key response-cache choice.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``cache`` to keys: true (cache by default), false (never), null (the setting)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("cache", sa.Boolean(), nullable=True))


def downgrade() -> None:
    """Drop the column."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("cache")
