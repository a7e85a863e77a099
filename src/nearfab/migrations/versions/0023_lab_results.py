"""laboratory results: a batch's results entered by the laboratory's analyst, e-signed

Issue 15 (product families), part owned by quality: one new table, no change to existing ones.
`lab_results` holds one row per result (test key -> value, as the product's family validated
it), grouped by the signed entry that brought it (`entry_id`); a correction is a new row naming
the one it supersedes with its reason (`version` counts them per key, unique per batch and key).

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lab_results",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("entry_id", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("method", sa.Text(), nullable=False),
        sa.Column("entered_by", sa.String(length=32), nullable=False),
        sa.Column("entered_by_name", sa.String(length=200), nullable=False),
        sa.Column("entered_at", nearfab.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature_id", sa.String(length=32), nullable=False),
        sa.Column("supersedes_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["batch_records.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.ForeignKeyConstraint(["entered_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "key", "version", name="uq_lab_results_version"),
    )
    op.create_index("ix_lab_results_batch_id", "lab_results", ["batch_id"])
    op.create_index("ix_lab_results_entry_id", "lab_results", ["entry_id"])


def downgrade() -> None:
    op.drop_index("ix_lab_results_entry_id", table_name="lab_results")
    op.drop_index("ix_lab_results_batch_id", table_name="lab_results")
    op.drop_table("lab_results")
