"""dose adjusted from outcomes: patient observations, dose proposals, order versions, the
master file's dose rule

Issue 19 part 5: observations of a patient (FHIR Observation: weight, height, a drug level)
are kept against the pseudonymous patient; a master file's `dose_rule` turns them into a
proposed dose that a clinician accepts (a new version of the order, `supersedes` the old one)
or rejects, with an e-signature.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "patient_observations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("display", sa.String(length=200), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        _at("effective_at"),
        sa.Column("source_id", sa.String(length=128), nullable=True),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        _at("recorded_at"),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"]),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_patient_observations_patient_id", "patient_observations", ["patient_id"])
    op.create_index("ix_patient_observations_order_id", "patient_observations", ["order_id"])
    op.create_table(
        "dose_proposals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("master_file_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_value", sa.Float(), nullable=False),
        sa.Column("current_unit", sa.String(length=32), nullable=False),
        sa.Column("proposed_value", sa.Float(), nullable=False),
        sa.Column("proposed_unit", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.JSON(), nullable=False),
        sa.Column("working", sa.JSON(), nullable=False),
        sa.Column("observation_ids", sa.JSON(), nullable=False),
        _at("created_at"),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        _at("decided_at", nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("signature_id", sa.String(length=32), nullable=True),
        sa.Column("new_order_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_dose_proposals_order_id", "dose_proposals", ["order_id"])
    op.create_index("ix_dose_proposals_site_id", "dose_proposals", ["site_id"])
    op.create_index("ix_dose_proposals_status", "dose_proposals", ["status"])
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("supersedes", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("prescription_version", sa.Integer(), nullable=False, server_default="1")
        )
    with op.batch_alter_table("master_files") as batch:
        batch.add_column(sa.Column("dose_rule", sa.JSON(), nullable=True))


def downgrade() -> None:
    # dropped in place (SQLite >= 3.35 and PostgreSQL): a batch rebuild of master_files or
    # orders drops the table that other tables' foreign keys name, which SQLite refuses
    for table, column in (
        ("master_files", "dose_rule"),
        ("orders", "prescription_version"),
        ("orders", "supersedes"),
    ):
        op.execute(sa.text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    op.drop_index("ix_dose_proposals_status", table_name="dose_proposals")
    op.drop_index("ix_dose_proposals_site_id", table_name="dose_proposals")
    op.drop_index("ix_dose_proposals_order_id", table_name="dose_proposals")
    op.drop_table("dose_proposals")
    op.drop_index("ix_patient_observations_order_id", table_name="patient_observations")
    op.drop_index("ix_patient_observations_patient_id", table_name="patient_observations")
    op.drop_table("patient_observations")
