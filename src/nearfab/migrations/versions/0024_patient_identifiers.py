"""patient identifiers: keyed hashes of what the hospital knows a patient by; site rule

Issue 20: at dispense and at the bedside a patient is identified by NHS number, the site's
hospital number (MRN), a wristband GSRN, birth date or prescription ID. Intake stores a keyed
hash of each (never the identifier in clear) in a new table; a site says whether the birth
date must agree too and which FHIR identifier system its MRNs have. Patients taken in before
this revision have no hashes and are identified by their pseudonym, as before.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "patient_identifier_hashes",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=True),
        sa.Column("prescription_id", sa.String(length=32), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", nearfab.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_patient_identifier_hashes_patient_id", "patient_identifier_hashes", ["patient_id"]
    )
    op.create_index(
        "ix_patient_identifier_hashes_kind_hash", "patient_identifier_hashes", ["kind", "hash"]
    )
    op.add_column(
        "sites",
        sa.Column("birth_date_required", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("sites", sa.Column("mrn_system", sa.String(length=255), nullable=True))


def downgrade() -> None:
    # in place (SQLite 3.35+ and PostgreSQL): rebuilding `sites`, which most tables reference,
    # fails under foreign_keys=ON (as nearfab connects)
    for column in ("mrn_system", "birth_date_required"):
        op.execute(sa.text(f"ALTER TABLE sites DROP COLUMN {column}"))
    op.drop_index("ix_patient_identifier_hashes_kind_hash", table_name="patient_identifier_hashes")
    op.drop_index("ix_patient_identifier_hashes_patient_id", table_name="patient_identifier_hashes")
    op.drop_table("patient_identifier_hashes")
