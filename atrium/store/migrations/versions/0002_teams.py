"""Create teams; keys get a team and a parallel-request limit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the teams table and the keys' team_id and max_parallel columns."""
    op.create_table(
        "teams",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("max_parallel", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_parallel", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("team_id", sa.String(32), nullable=True))
        batch.create_foreign_key(op.f("fk_api_keys_team_id_teams"), "teams", ["team_id"], ["id"])
        batch.create_index(op.f("ix_api_keys_team_id"), ["team_id"])


def downgrade() -> None:
    """Drop the keys' new columns and the teams table."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index(op.f("ix_api_keys_team_id"))
        batch.drop_constraint(op.f("fk_api_keys_team_id_teams"), type_="foreignkey")
        batch.drop_column("team_id")
        batch.drop_column("max_parallel")
    op.drop_table("teams")
