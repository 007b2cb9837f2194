"""OpenID Connect subjects of users: (issuer, sub) as bound at the first sign-in.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """``user_identities``: keyed by (issuer, subject), one subject per user and issuer."""
    op.create_table(
        "user_identities",
        sa.Column("issuer", sa.String(500), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "subject", name=op.f("pk_user_identities")),
        sa.UniqueConstraint("user_id", "issuer", name=op.f("uq_user_identities_user_id")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_identities_user_id_users"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    """Drop the table (sign-in falls back to matching by e-mail)."""
    op.drop_table("user_identities")
