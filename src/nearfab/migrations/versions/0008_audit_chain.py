"""audit trail: append-only (triggers) and hash-chained

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

Adds `seq`, `prev_hash` and `row_hash` to `audit_entries` (existing rows are numbered and
hashed in id order), the one-row `audit_chain_head`, and triggers that refuse UPDATE and DELETE
on `audit_entries` and `signatures` and let the head move only forward (docs/audit-trail.md).

A later migration that rebuilds `audit_entries` or `signatures` on SQLite (batch mode "move and
copy") drops their triggers with the old table: it must create them again with
`nearfab.identity.services.audit.append_only_ddl`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db
from nearfab.identity.services.audit import (
    GENESIS,
    PG_FUNCTIONS,
    append_only_ddl,
    drop_append_only_ddl,
    drop_head_ddl,
    entry_content,
    entry_hash,
    head_ddl,
)

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_entries = sa.table(
    "audit_entries",
    sa.column("id", sa.Integer()),
    sa.column("seq", sa.BigInteger()),
    sa.column("at", nearfab.db.UTCDateTime(timezone=True)),
    sa.column("actor_id", sa.String()),
    sa.column("actor_name", sa.String()),
    sa.column("action", sa.String()),
    sa.column("entity_type", sa.String()),
    sa.column("entity_id", sa.String()),
    sa.column("old", sa.JSON()),
    sa.column("new", sa.JSON()),
    sa.column("reason", sa.Text()),
    sa.column("site_id", sa.String()),
    sa.column("prev_hash", sa.String()),
    sa.column("row_hash", sa.String()),
)


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(sa.text(statement))


def upgrade() -> None:
    with op.batch_alter_table("audit_entries") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(length=64), nullable=True))

    # number and hash the rows already there, in the order they were written
    bind = op.get_bind()
    seq, prev = 0, GENESIS
    rows = bind.execute(sa.select(_entries).order_by(_entries.c.id)).mappings().all()
    updates = []
    for row in rows:
        seq += 1
        content = entry_content({**row, "seq": seq})
        row_hash = entry_hash(content, prev)
        updates.append({"k": row["id"], "s": seq, "p": prev, "h": row_hash})
        prev = row_hash
    if updates:
        bind.execute(
            _entries.update()
            .where(_entries.c.id == sa.bindparam("k"))
            .values(seq=sa.bindparam("s"), prev_hash=sa.bindparam("p"), row_hash=sa.bindparam("h")),
            updates,
        )

    with op.batch_alter_table("audit_entries") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("row_hash", existing_type=sa.String(length=64), nullable=False)
    op.create_index("ux_audit_entries_seq", "audit_entries", ["seq"], unique=True)
    op.create_index("ix_audit_entries_site_at", "audit_entries", ["site_id", "at"])

    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_chain_head_single_row"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_chain_head"),
    )
    op.execute(
        sa.table("audit_chain_head", sa.column("id"), sa.column("seq"), sa.column("hash"))
        .insert()
        .values(id=1, seq=seq, hash=prev)
    )

    dialect = bind.dialect.name
    if dialect == "postgresql":
        _run(PG_FUNCTIONS)
    _run(append_only_ddl(dialect, "audit_entries"))
    _run(append_only_ddl(dialect, "signatures"))
    _run(head_ddl(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    _run(drop_head_ddl(dialect))
    _run(drop_append_only_ddl(dialect, "signatures"))
    _run(drop_append_only_ddl(dialect, "audit_entries"))
    if dialect == "postgresql":
        _run(
            [
                "DROP FUNCTION IF EXISTS nearfab_audit_head_forward()",
                "DROP FUNCTION IF EXISTS nearfab_append_only()",
            ]
        )
    op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_entries_site_at", table_name="audit_entries")
    op.drop_index("ux_audit_entries_seq", table_name="audit_entries")
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_column("row_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("seq")
