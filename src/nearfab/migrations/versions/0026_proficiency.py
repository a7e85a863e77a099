"""comparability across the network: proficiency rounds, their results, the suspensions they
cause, and the master file's comparability section

Issue 19 (one quality system across the network): the control site sends blind reference
samples to sites; results are scored with ISO 13528 z-scores and a site with |z| > 3 is
suspended from the master file until its CAPA closes. The master file gains a nullable
`comparability` section (equivalence margins per attribute), added and dropped in place
(ALTER TABLE ... ADD / DROP COLUMN: PostgreSQL, and SQLite since 3.35), not by a batch table
rebuild: SQLite with foreign_keys=ON (as nearfab connects) refuses to drop `master_files`, which
orders and batch records reference.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "proficiency_rounds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("master_file_code", sa.String(length=64), nullable=False),
        sa.Column("attribute", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("site_ids", sa.JSON(), nullable=False),
        sa.Column("assigned_value", sa.Float(), nullable=True),
        sa.Column("sd_pt", sa.Float(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        _at("opened_at"),
        sa.Column("opened_by", sa.String(length=64), nullable=False),
        _at("scored_at", nullable=True),
        sa.Column("scored_by", sa.String(length=64), nullable=True),
        sa.Column("robust_mean", sa.Float(), nullable=True),
        sa.Column("robust_sd", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_proficiency_rounds_master_file_code", "proficiency_rounds", ["master_file_code"]
    )
    op.create_table(
        "proficiency_results",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("round_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        _at("entered_at"),
        sa.Column("entered_by", sa.String(length=64), nullable=False),
        sa.Column("z", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["round_id"], ["proficiency_rounds.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("round_id", "site_id", name="uq_proficiency_result_site"),
    )
    op.create_index("ix_proficiency_results_round_id", "proficiency_results", ["round_id"])
    op.create_table(
        "proficiency_suspensions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("master_file_code", sa.String(length=64), nullable=False),
        sa.Column("round_id", sa.String(length=32), nullable=False),
        sa.Column("z", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _at("opened_at"),
        sa.Column("capa_reference", sa.String(length=100), nullable=True),
        sa.Column("capa_summary", sa.Text(), nullable=True),
        _at("closed_at", nullable=True),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.Column("signature_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["round_id"], ["proficiency_rounds.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_proficiency_suspensions_site_id", "proficiency_suspensions", ["site_id"])
    op.create_index(
        "ix_proficiency_suspensions_master_file_code",
        "proficiency_suspensions",
        ["master_file_code"],
    )
    op.add_column("master_files", sa.Column("comparability", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.execute(sa.text("ALTER TABLE master_files DROP COLUMN comparability"))
    op.drop_index("ix_proficiency_suspensions_master_file_code", "proficiency_suspensions")
    op.drop_index("ix_proficiency_suspensions_site_id", "proficiency_suspensions")
    op.drop_table("proficiency_suspensions")
    op.drop_index("ix_proficiency_results_round_id", "proficiency_results")
    op.drop_table("proficiency_results")
    op.drop_index("ix_proficiency_rounds_master_file_code", "proficiency_rounds")
    op.drop_table("proficiency_rounds")
