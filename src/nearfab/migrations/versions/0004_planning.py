"""network planning: plan versions, machine downtime, operator shifts, transport, priorities

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _when(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "plan_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        _when("created_at"),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("solver", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("objective", sa.Integer(), nullable=False),
        sa.Column("weighted_tardiness", sa.Integer(), nullable=False),
        sa.Column("bound", sa.Integer(), nullable=False),
        sa.Column("gap", sa.Double(), nullable=False),
        sa.Column("solve_s", sa.Double(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("assignments", sa.JSON(), nullable=False),
        sa.Column("explanations", sa.JSON(), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_versions")),
        sa.UniqueConstraint("number", name=op.f("uq_plan_versions_number")),
    )
    op.create_table(
        "machine_downtimes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("machine_id", sa.String(length=32), nullable=False),
        _when("starts_at"),
        _when("ends_at"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machines.id"],
            name=op.f("fk_machine_downtimes_machine_id_machines"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_downtimes")),
    )
    with op.batch_alter_table("machine_downtimes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machine_downtimes_machine_id"), ["machine_id"], unique=False
        )
    op.create_table(
        "operator_shifts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        _when("starts_at"),
        _when("ends_at"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_operator_shifts_site_id_sites")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_operator_shifts_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_shifts")),
    )
    with op.batch_alter_table("operator_shifts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operator_shifts_site_id"), ["site_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_operator_shifts_user_id"), ["user_id"], unique=False)
    op.create_table(
        "transport_times",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("minutes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name=op.f("fk_transport_times_site_id_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transport_times")),
        sa.UniqueConstraint("site_id", "destination", name=op.f("uq_transport_times_site_id")),
    )
    op.create_table(
        "order_planning",
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("deliver_to", sa.String(length=64), nullable=True),
        _when("updated_at"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_order_planning_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_planning")),
    )


def downgrade() -> None:
    op.drop_table("order_planning")
    op.drop_table("transport_times")
    with op.batch_alter_table("operator_shifts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_operator_shifts_user_id"))
        batch_op.drop_index(batch_op.f("ix_operator_shifts_site_id"))
    op.drop_table("operator_shifts")
    with op.batch_alter_table("machine_downtimes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_downtimes_machine_id"))
    op.drop_table("machine_downtimes")
    op.drop_table("plan_versions")
