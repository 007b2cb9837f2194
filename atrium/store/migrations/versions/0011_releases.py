"""Create the release pipeline's tables: detections, releases, deployments, experiments.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Detections, releases, persisted deployments and A/B experiments."""
    op.create_table(
        "release_detections",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("watcher", sa.String(100), nullable=False),
        sa.Column("key", sa.String(1000), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("detected_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release_detections")),
        sa.UniqueConstraint("watcher", "key", name="uq_release_detections_watcher_key"),
    )
    _create_releases()
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("desired", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deployments")),
    )
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("verdict", sa.JSON(), nullable=True),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiments")),
        sa.UniqueConstraint("name", name=op.f("uq_experiments_name")),
    )


def _create_releases() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("release_ref", sa.String(500), nullable=False),
        sa.Column("uri", sa.String(2000), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("stage", sa.String(30), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("timeline", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
    )
    op.create_index(
        "ix_releases_model_created_at", "releases", ["model", "created_at"], unique=False
    )


def downgrade() -> None:
    """Drop the release pipeline's tables."""
    op.drop_table("experiments")
    op.drop_table("deployments")
    op.drop_index("ix_releases_model_created_at", table_name="releases")
    op.drop_table("releases")
    op.drop_table("release_detections")
