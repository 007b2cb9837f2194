"""Create the workflow engine's tables.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Workflows, their versions, runs and block runs, workers and triggers."""
    _create_workflows()
    _create_runs()
    _create_workers_and_triggers()


def _create_workflows() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("draft", sa.JSON(), nullable=True),
        sa.Column("draft_updated_at", _TS, nullable=True),
        sa.Column("published_version", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(40), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
        sa.UniqueConstraint("name", name=op.f("uq_workflows_name")),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(40), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_versions")),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_versions_workflow_id_workflows"),
        ),
        sa.UniqueConstraint(
            "workflow_id", "version", name="uq_workflow_versions_workflow_id_version"
        ),
    )


def _create_runs() -> None:
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("version_id", sa.String(40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=False),
        sa.Column("trigger", sa.String(40), nullable=False),
        sa.Column("parent_run_id", sa.String(200), nullable=True),
        sa.Column("parent_node_id", sa.String(64), nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_runs")),
    )
    op.create_index(op.f("ix_workflow_runs_status"), "workflow_runs", ["status"])
    op.create_index(op.f("ix_workflow_runs_parent_run_id"), "workflow_runs", ["parent_run_id"])
    op.create_index(op.f("ix_workflow_runs_created_at"), "workflow_runs", ["created_at"])
    op.create_index(
        op.f("ix_workflow_runs_workflow_id_created_at"),
        "workflow_runs",
        ["workflow_id", "created_at"],
    )
    op.create_table(
        "workflow_node_runs",
        sa.Column("run_id", sa.String(200), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("block_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("handles", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "node_id", name=op.f("pk_workflow_node_runs")),
    )


def _create_workers_and_triggers() -> None:
    op.create_table(
        "workflow_workers",
        sa.Column("executor_id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("heartbeat_at", _TS, nullable=False),
        sa.Column("taken_over_by", sa.String(200), nullable=True),
        sa.Column("taken_over_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("executor_id", name=op.f("pk_workflow_workers")),
    )
    op.create_table(
        "workflow_triggers",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_fire_at", _TS, nullable=True),
        sa.Column("last_fired_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_triggers")),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_workflow_triggers_workflow_id_workflows"),
        ),
    )
    op.create_index(
        op.f("ix_workflow_triggers_next_fire_at"), "workflow_triggers", ["next_fire_at"]
    )


def downgrade() -> None:
    """Drop the workflow engine's tables."""
    op.drop_index(op.f("ix_workflow_triggers_next_fire_at"), table_name="workflow_triggers")
    op.drop_table("workflow_triggers")
    op.drop_table("workflow_workers")
    op.drop_table("workflow_node_runs")
    for index in ("workflow_id_created_at", "created_at", "parent_run_id", "status"):
        op.drop_index(op.f(f"ix_workflow_runs_{index}"), table_name="workflow_runs")
    op.drop_table("workflow_runs")
    op.drop_table("workflow_versions")
    op.drop_table("workflows")
