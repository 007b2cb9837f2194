"""Ids of the request.completed events already added to the usage totals.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-29 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """``usage_events_seen``: an event id once its usage is counted, pruned by age."""
    op.create_table(
        "usage_events_seen",
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_usage_events_seen")),
    )
    op.create_index(op.f("ix_usage_events_seen_recorded_at"), "usage_events_seen", ["recorded_at"])


def downgrade() -> None:
    """Drop the table (a redelivered event is then counted again)."""
    op.drop_index(op.f("ix_usage_events_seen_recorded_at"), table_name="usage_events_seen")
    op.drop_table("usage_events_seen")
