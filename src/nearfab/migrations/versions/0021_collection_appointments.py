"""collection appointments: starting material collected from the patient for a run

Issue 15 part 2 (scheduling): a product whose family needs starting material from the patient
gets a collection appointment booked against its machine slot, with the run's window and the
target administration date. One new table, no change to existing ones.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "collection_appointments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("row_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _at("collection_at"),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("machine_id", sa.String(length=32), nullable=True),
        sa.Column("site_id", sa.String(length=32), nullable=True),
        _at("run_start", nullable=True),
        _at("run_end", nullable=True),
        _at("administration_at", nullable=True),
        _at("recorded_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        _at("created_at"),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        _at("updated_at"),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.ForeignKeyConstraint(["machine_id"], ["machines.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_collection_appointments_order_id", "collection_appointments", ["order_id"])
    op.create_index("ix_collection_appointments_status", "collection_appointments", ["status"])


def downgrade() -> None:
    op.drop_index("ix_collection_appointments_status", table_name="collection_appointments")
    op.drop_index("ix_collection_appointments_order_id", table_name="collection_appointments")
    op.drop_table("collection_appointments")
