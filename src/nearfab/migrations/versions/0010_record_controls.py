"""batch records: step sequence, second-person verification, audit-trail review

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("master_files") as batch:
        batch.add_column(sa.Column("record_steps", sa.JSON(), nullable=True))
    with op.batch_alter_table("deviations") as batch:
        batch.add_column(sa.Column("step_code", sa.String(length=32), nullable=True))
    op.create_table(
        "master_file_qps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("master_file_code", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _time("assigned_at"),
        sa.Column("assigned_by", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _time("unassigned_at", nullable=True),
        sa.Column("unassigned_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_master_file_qps_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_master_file_qps"),
        sa.UniqueConstraint(
            "master_file_code", "user_id", name="uq_master_file_qps_master_file_code"
        ),
    )
    op.create_index("ix_master_file_qps_master_file_code", "master_file_qps", ["master_file_code"])
    op.create_table(
        "batch_step_signoffs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("row_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("entry", sa.JSON(), nullable=True),
        sa.Column("performed_by", sa.String(length=32), nullable=False),
        sa.Column("performed_by_name", sa.String(length=200), nullable=False),
        _time("performed_at"),
        sa.Column("performed_meaning", sa.String(length=200), nullable=False),
        sa.Column("signature_id", sa.String(length=32), nullable=False),
        sa.Column("deviation_id", sa.String(length=32), nullable=True),
        sa.Column("verified_by", sa.String(length=32), nullable=True),
        sa.Column("verified_by_name", sa.String(length=200), nullable=True),
        _time("verified_at", nullable=True),
        sa.Column("verified_meaning", sa.String(length=200), nullable=True),
        sa.Column("verify_signature_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch_records.id"], name="fk_batch_step_signoffs_batch_id_batch_records"
        ),
        sa.ForeignKeyConstraint(
            ["performed_by"], ["users.id"], name="fk_batch_step_signoffs_performed_by_users"
        ),
        sa.ForeignKeyConstraint(
            ["verified_by"], ["users.id"], name="fk_batch_step_signoffs_verified_by_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_batch_step_signoffs"),
        sa.UniqueConstraint("batch_id", "code", name="uq_batch_step_signoffs_batch_id"),
    )
    op.create_index("ix_batch_step_signoffs_batch_id", "batch_step_signoffs", ["batch_id"])
    op.create_table(
        "audit_trail_reviews",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("reviewed_by", sa.String(length=32), nullable=False),
        sa.Column("reviewed_by_name", sa.String(length=200), nullable=False),
        _time("reviewed_at"),
        sa.Column("last_audit_id", sa.Integer(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("trail_hash", sa.String(length=64), nullable=False),
        sa.Column("signature_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batch_records.id"], name="fk_audit_trail_reviews_batch_id_batch_records"
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_audit_trail_reviews_site_id_sites"
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"], ["users.id"], name="fk_audit_trail_reviews_reviewed_by_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_audit_trail_reviews"),
    )
    op.create_index("ix_audit_trail_reviews_batch_id", "audit_trail_reviews", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_trail_reviews_batch_id", table_name="audit_trail_reviews")
    op.drop_table("audit_trail_reviews")
    op.drop_index("ix_batch_step_signoffs_batch_id", table_name="batch_step_signoffs")
    op.drop_table("batch_step_signoffs")
    op.drop_index("ix_master_file_qps_master_file_code", table_name="master_file_qps")
    op.drop_table("master_file_qps")
    with op.batch_alter_table("deviations") as batch:
        batch.drop_column("step_code")
    with op.batch_alter_table("master_files") as batch:
        batch.drop_column("record_steps")
