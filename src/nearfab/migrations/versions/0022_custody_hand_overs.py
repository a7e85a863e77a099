"""custody hand-overs, unit holds, storage log readings and in-use periods

Issue 15 part 2 (custody): every hand-over of a unit between the steps of its family's chain
records the identity scanned on both sides; a refused hand-over or a storage excursion holds
the unit until a QP judges it; a prepared unit has an in-use period. Four new tables, no
change to existing ones.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def _unit() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("unit_id", sa.String(length=32), nullable=False)


def upgrade() -> None:
    op.create_table(
        "custody_hand_overs",
        sa.Column("id", sa.String(length=32), nullable=False),
        _unit(),
        sa.Column("from_step", sa.String(length=32), nullable=False),
        sa.Column("to_step", sa.String(length=32), nullable=False),
        sa.Column("giver_scan", sa.String(length=200), nullable=False),
        sa.Column("receiver_scan", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _at("handed_at"),
        sa.Column("handed_by", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["unit_id"], ["serial_units.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_custody_hand_overs_unit_id", "custody_hand_overs", ["unit_id"])
    op.create_table(
        "custody_unit_holds",
        sa.Column("id", sa.String(length=32), nullable=False),
        _unit(),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _at("held_at"),
        sa.Column("held_by", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=True),
        _at("decided_at", nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["unit_id"], ["serial_units.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_custody_unit_holds_unit_id", "custody_unit_holds", ["unit_id"])
    op.create_table(
        "custody_storage_readings",
        sa.Column("id", sa.String(length=32), nullable=False),
        _unit(),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        _at("read_at"),
        _at("recorded_at"),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("excursion", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("hold_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["unit_id"], ["serial_units.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_custody_storage_readings_unit_id", "custody_storage_readings", ["unit_id"])
    op.create_table(
        "custody_in_use_periods",
        _unit(),
        _at("prepared_at"),
        sa.Column("prepared_by", sa.String(length=64), nullable=False),
        _at("use_by", nullable=True),
        sa.ForeignKeyConstraint(["unit_id"], ["serial_units.id"]),
        sa.PrimaryKeyConstraint("unit_id"),
    )


def downgrade() -> None:
    op.drop_table("custody_in_use_periods")
    op.drop_index("ix_custody_storage_readings_unit_id", table_name="custody_storage_readings")
    op.drop_table("custody_storage_readings")
    op.drop_index("ix_custody_unit_holds_unit_id", table_name="custody_unit_holds")
    op.drop_table("custody_unit_holds")
    op.drop_index("ix_custody_hand_overs_unit_id", table_name="custody_hand_overs")
    op.drop_table("custody_hand_overs")
