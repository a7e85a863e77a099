"""the chain of identity from the collection: pre-collection records, the collection recorded
with its chain identifier, hand-overs with the identifier each side scanned

Issue 15 (cell therapy chain of identity): an order's family may require records before the
collection (the patient's eligibility and consent, e-signed by a clinician); the collection is
recorded as having happened, with the family's chain identifier scanned from its label; each
hand-over keeps the identifier scanned on each side and whether the patient was checked.
One new table and nullable (or defaulted) columns on two existing ones.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "pre_collection_records",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        _at("recorded_at"),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("recorded_by_name", sa.String(length=200), nullable=False),
        sa.Column("signature_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", "kind", name="uq_pre_collection_kind"),
    )
    op.create_index("ix_pre_collection_records_order_id", "pre_collection_records", ["order_id"])
    with op.batch_alter_table("collection_appointments") as batch:
        batch.add_column(_at("collected_at", nullable=True))
        batch.add_column(sa.Column("collected_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("chain_identifier", sa.String(length=64), nullable=True))
    with op.batch_alter_table("custody_hand_overs") as batch:
        batch.add_column(sa.Column("giver_identifier", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("receiver_identifier", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("patient_checked", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("custody_hand_overs") as batch:
        batch.drop_column("patient_checked")
        batch.drop_column("receiver_identifier")
        batch.drop_column("giver_identifier")
    with op.batch_alter_table("collection_appointments") as batch:
        batch.drop_column("chain_identifier")
        batch.drop_column("collected_by")
        batch.drop_column("collected_at")
    op.drop_index("ix_pre_collection_records_order_id", table_name="pre_collection_records")
    op.drop_table("pre_collection_records")
