"""batch leases: a running batch's lease, renewed by machine reports; an expired lease makes
the batch an orphan the runner abandons (with a deviation for a person)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batch_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_expires_at", nearfab.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("batch_records", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
