"""Create the RAG engine's tables and the keys' access groups.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Knowledge bases, their sources and documents, answered queries and feedback."""
    op.create_table(
        "knowledge_bases",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_knowledge_bases")),
        sa.UniqueConstraint("name", name=op.f("uq_knowledge_bases_name")),
    )
    op.create_table(
        "kb_sources",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kb_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_sync_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_sources")),
        sa.ForeignKeyConstraint(
            ["kb_id"], ["knowledge_bases.id"], name=op.f("fk_kb_sources_kb_id_knowledge_bases")
        ),
        sa.UniqueConstraint("kb_id", "name", name="uq_kb_sources_kb_id_name"),
    )
    op.create_table(
        "kb_documents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kb_id", sa.String(40), nullable=False),
        sa.Column("source_id", sa.String(40), nullable=False),
        sa.Column("key", sa.String(1000), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("title", sa.String(500), nullable=True),
        sa.Column("uri", sa.String(2000), nullable=True),
        sa.Column("doc_type", sa.String(20), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_documents")),
        sa.ForeignKeyConstraint(
            ["source_id"], ["kb_sources.id"], name=op.f("fk_kb_documents_source_id_kb_sources")
        ),
        sa.UniqueConstraint("source_id", "key", name="uq_kb_documents_source_id_key"),
    )
    op.create_index(op.f("ix_kb_documents_kb_id"), "kb_documents", ["kb_id"])
    op.create_table(
        "kb_queries",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kb_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("retrieved", sa.JSON(), nullable=False),
        sa.Column("query_vector", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_queries")),
    )
    op.create_index(op.f("ix_kb_queries_kb_id"), "kb_queries", ["kb_id"])
    op.create_table(
        "kb_feedback",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kb_id", sa.String(40), nullable=False),
        sa.Column("query_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("useful", sa.JSON(), nullable=False),
        sa.Column("not_useful", sa.JSON(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_feedback")),
        sa.ForeignKeyConstraint(
            ["query_id"], ["kb_queries.id"], name=op.f("fk_kb_feedback_query_id_kb_queries")
        ),
    )
    op.create_index(op.f("ix_kb_feedback_kb_id"), "kb_feedback", ["kb_id"])
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("access_groups", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop the RAG tables and the keys' access groups."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("access_groups")
    op.drop_index(op.f("ix_kb_feedback_kb_id"), table_name="kb_feedback")
    op.drop_table("kb_feedback")
    op.drop_index(op.f("ix_kb_queries_kb_id"), table_name="kb_queries")
    op.drop_table("kb_queries")
    op.drop_index(op.f("ix_kb_documents_kb_id"), table_name="kb_documents")
    op.drop_table("kb_documents")
    op.drop_table("kb_sources")
    op.drop_table("knowledge_bases")
