"""pharmacovigilance: adverse events reported against a pack

Issue 19 part 4 (pharmacovigilance): an adverse event (FHIR AdverseEvent or a form) kept with
the pack, order, patient, site and batch it names; traced through custody.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "adverse_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("unit_id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("seriousness", sa.String(length=32), nullable=True),
        sa.Column("actuality", sa.String(length=16), nullable=False),
        _at("onset_at", nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.String(length=128), nullable=True),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        _at("reported_at"),
        sa.Column("reported_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("unit_id", "order_id", "site_id", "batch_id"):
        op.create_index(f"ix_adverse_events_{column}", "adverse_events", [column])


def downgrade() -> None:
    for column in ("unit_id", "order_id", "site_id", "batch_id"):
        op.drop_index(f"ix_adverse_events_{column}", table_name="adverse_events")
    op.drop_table("adverse_events")
