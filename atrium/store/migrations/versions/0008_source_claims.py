"""Record when a source's sync started, so replicas can claim syncs.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add kb_sources.sync_started_at."""
    with op.batch_alter_table("kb_sources") as batch:
        batch.add_column(sa.Column("sync_started_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop kb_sources.sync_started_at."""
    with op.batch_alter_table("kb_sources") as batch:
        batch.drop_column("sync_started_at")
