"""central QA: CAPAs, complaints, owners and due dates of quality items, change controls of
master files

Issue 19 part 3: deviations, CAPAs, change controls and complaints across all sites in one
place; a master-file change goes through change control with its impact on every site.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0028"
down_revision: str | None = "0027"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def _s(name: str, length: int, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.String(length=length), nullable=nullable)


def _t(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Text(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "qa_capas",
        _s("id", 32),
        _s("site_id", 32, True),
        _s("master_file_code", 64, True),
        _s("title", 200),
        _t("description"),
        _s("source_kind", 32),
        _s("source_id", 32, True),
        _s("status", 16),
        _at("opened_at"),
        _s("opened_by", 64),
        _at("closed_at", True),
        _s("closed_by", 64, True),
        _t("effectiveness", True),
        _s("signature_id", 32, True),
        sa.PrimaryKeyConstraint("id"),
    )
    for col in ("site_id", "master_file_code", "status"):
        op.create_index(f"ix_qa_capas_{col}", "qa_capas", [col])
    op.create_table(
        "qa_complaints",
        _s("id", 32),
        _s("site_id", 32),
        _s("master_file_code", 64, True),
        _s("batch_id", 32, True),
        _s("batch_number", 20, True),
        _s("pack_serial", 20, True),
        _s("reporter", 200),
        _t("description"),
        _s("status", 16),
        _at("received_at"),
        _s("recorded_by", 64),
        _t("investigation", True),
        _t("conclusion", True),
        _s("capa_id", 32, True),
        _at("closed_at", True),
        _s("closed_by", 64, True),
        sa.PrimaryKeyConstraint("id"),
    )
    for col in ("site_id", "master_file_code", "status"):
        op.create_index(f"ix_qa_complaints_{col}", "qa_complaints", [col])
    op.create_table(
        "qa_assignments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _s("item_kind", 32),
        _s("item_id", 32),
        _s("owner", 64),
        sa.Column("due_date", sa.Date(), nullable=False),
        _at("assigned_at"),
        _s("assigned_by", 64),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("item_kind", "item_id", name="uq_qa_assignment_item"),
    )
    op.create_table(
        "change_controls",
        _s("id", 32),
        _s("master_file_code", 64),
        sa.Column("from_version", sa.Integer(), nullable=True),
        _s("proposed_master_file_id", 32),
        sa.Column("to_version", sa.Integer(), nullable=False),
        _s("title", 200),
        _t("description"),
        _t("reason"),
        _s("status", 16),
        sa.Column("impact", sa.JSON(), nullable=False),
        _at("raised_at"),
        _s("raised_by", 64),
        _at("decided_at", True),
        _s("decided_by", 64, True),
        _t("decision_reason", True),
        _s("signature_id", 32, True),
        _at("implemented_at", True),
        _s("implemented_by", 64, True),
        sa.PrimaryKeyConstraint("id"),
    )
    for col in ("master_file_code", "status"):
        op.create_index(f"ix_change_controls_{col}", "change_controls", [col])


def downgrade() -> None:
    for col in ("master_file_code", "status"):
        op.drop_index(f"ix_change_controls_{col}", table_name="change_controls")
    op.drop_table("change_controls")
    op.drop_table("qa_assignments")
    for col in ("site_id", "master_file_code", "status"):
        op.drop_index(f"ix_qa_complaints_{col}", table_name="qa_complaints")
    op.drop_table("qa_complaints")
    for col in ("site_id", "master_file_code", "status"):
        op.drop_index(f"ix_qa_capas_{col}", table_name="qa_capas")
    op.drop_table("qa_capas")
