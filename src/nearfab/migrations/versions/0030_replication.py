"""replication: a node's outbox (and its head), its inbox and the inbox's problems

Issue 17, first slice: sites as nodes. Records a node owns (audit rows, ledger entries) are
appended to its outbox in the transaction that writes them; other nodes' records are applied
into its inbox once, with gaps, duplicates and forks named (docs/replication.md). New tables
only: the downgrade drops them.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def _record_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("id", sa.String(length=160), nullable=False),
        sa.Column("origin_site", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source_ref", sa.String(length=120), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("record_hash", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        _at("created_at"),
    ]


def upgrade() -> None:
    op.create_table(
        "replication_outbox_head",
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("ledger_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site_id"),
    )
    op.create_table(
        "replication_outbox",
        *_record_columns(),
        _at("published_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("origin_site", "seq", name="uq_replication_outbox_seq"),
    )
    op.create_index("ix_replication_outbox_pending", "replication_outbox", ["published_at", "seq"])
    op.create_table(
        "replication_inbox",
        *_record_columns(),
        _at("received_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("origin_site", "seq", name="uq_replication_inbox_seq"),
    )
    op.create_table(
        "replication_inbox_problems",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("origin_site", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("record_id", sa.String(length=160), nullable=True),
        sa.Column("record_hash", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        _at("detected_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_replication_problems_origin", "replication_inbox_problems", ["origin_site", "seq"]
    )


def downgrade() -> None:
    op.drop_index("ix_replication_problems_origin", table_name="replication_inbox_problems")
    op.drop_table("replication_inbox_problems")
    op.drop_table("replication_inbox")
    op.drop_index("ix_replication_outbox_pending", table_name="replication_outbox")
    op.drop_table("replication_outbox")
    op.drop_table("replication_outbox_head")
