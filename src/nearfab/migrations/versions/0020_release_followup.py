"""release follow-up and exceptional release: results pending at release and their follow-up,
notices to prescribers, and the exceptional release of an out-of-specification batch

Family kit (issue 15 part 2), part owned by quality: four new tables, no change to existing
ones. `release_followups` (one per test pending when the QP certified), its signed entries
`release_followup_results` (a correction is a new row), `prescriber_notices` (what the treating
prescriber is told) and `exceptional_releases` (the physician's signed request, the QP's
signed release).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "release_followups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("row_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("review_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("test", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _at("opened_at"),
        sa.Column("result_id", sa.String(length=32), nullable=True),
        sa.Column("deviation_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["batch_records.id"]),
        sa.ForeignKeyConstraint(["review_id"], ["release_reviews.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id", "test", name="uq_release_followups_test"),
    )
    op.create_index("ix_release_followups_batch_id", "release_followups", ["batch_id"])
    op.create_index("ix_release_followups_site_id", "release_followups", ["site_id"])
    op.create_index("ix_release_followups_status", "release_followups", ["status"])
    op.create_table(
        "release_followup_results",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("followup_id", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("entered_by", sa.String(length=32), nullable=False),
        sa.Column("entered_by_name", sa.String(length=200), nullable=False),
        _at("entered_at"),
        sa.Column("signature_id", sa.String(length=32), nullable=False),
        sa.Column("corrects_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["followup_id"], ["release_followups.id"]),
        sa.ForeignKeyConstraint(["entered_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_release_followup_results_followup_id", "release_followup_results", ["followup_id"]
    )
    op.create_table(
        "prescriber_notices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("row_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("patient_ref", sa.String(length=32), nullable=False),
        sa.Column("prescriber_reference", sa.String(length=200), nullable=True),
        sa.Column("prescriber_display", sa.String(length=200), nullable=True),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("batch_number", sa.String(length=64), nullable=False),
        sa.Column("followup_id", sa.String(length=32), nullable=True),
        sa.Column("deviation_id", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        _at("created_at"),
        _at("acknowledged_at", nullable=True),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"]),
        sa.ForeignKeyConstraint(["batch_id"], ["batch_records.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_prescriber_notices_site_id", "prescriber_notices", ["site_id"])
    op.create_table(
        "exceptional_releases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("row_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("review_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("order_site_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("circumstances", sa.Text(), nullable=False),
        sa.Column("out_of_specification", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=32), nullable=False),
        sa.Column("requested_by_name", sa.String(length=200), nullable=False),
        _at("requested_at"),
        sa.Column("physician_signature_id", sa.String(length=32), nullable=False),
        sa.Column("qp_signature_id", sa.String(length=32), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        _at("decided_at", nullable=True),
        sa.ForeignKeyConstraint(["batch_id"], ["batch_records.id"]),
        sa.ForeignKeyConstraint(["review_id"], ["release_reviews.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.ForeignKeyConstraint(["order_site_id"], ["sites.id"]),
        sa.ForeignKeyConstraint(["requested_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_id"),
    )


def downgrade() -> None:
    op.drop_table("exceptional_releases")
    op.drop_index("ix_prescriber_notices_site_id", table_name="prescriber_notices")
    op.drop_table("prescriber_notices")
    op.drop_index("ix_release_followup_results_followup_id", table_name="release_followup_results")
    op.drop_table("release_followup_results")
    op.drop_index("ix_release_followups_status", table_name="release_followups")
    op.drop_index("ix_release_followups_site_id", table_name="release_followups")
    op.drop_index("ix_release_followups_batch_id", table_name="release_followups")
    op.drop_table("release_followups")
