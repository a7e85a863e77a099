"""audit checkpoints: a keyed MAC on every audit row and signed checkpoints of the head

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06

Adds `row_mac` (HMAC-SHA256 with the data folder's audit key, never stored in the database) to
`audit_entries`, and the append-only table `audit_checkpoints` (the audit head and every custody
ledger head, signed with the control site's Ed25519 key). Rows written before this migration
keep `row_mac` NULL: they are covered by the hash chain and, from the first checkpoint on, by
its signature (docs/audit-trail.md). The column is added with a plain ALTER TABLE (no batch
"move and copy" on SQLite, which would drop the append-only triggers with the old table).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db
from nearfab.identity.services.audit import append_only_ddl, drop_append_only_ddl

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_entries", sa.Column("row_mac", sa.String(length=64), nullable=True))
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("at", nearfab.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    dialect = op.get_bind().dialect.name
    for statement in append_only_ddl(dialect, "audit_checkpoints"):
        op.execute(sa.text(statement))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in drop_append_only_ddl(dialect, "audit_checkpoints"):
        op.execute(sa.text(statement))
    op.drop_table("audit_checkpoints")
    # a plain ALTER TABLE … DROP COLUMN (SQLite 3.35+): batch "move and copy" would drop the
    # triggers with the table, and the head's trigger names audit_entries
    op.drop_column("audit_entries", "row_mac")
