"""custody alerts: a follow-up status (who and when it last changed) and the history of steps

Issue 17: a pharmacist records what was done about an alert (acknowledged, patient contacted,
pack recovered or not recoverable, closed with its outcome), each step with a note, who and
when (docs/custody.md, "Following up an alert"). Alerts raised before are `open` (nobody
recorded anything about them). The downgrade drops the history and the new columns.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("custody_alerts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("row_version", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(
            sa.Column("status", sa.String(length=32), server_default="open", nullable=False)
        )
        batch_op.add_column(_at("status_changed_at", nullable=True))
        batch_op.add_column(sa.Column("status_changed_by", sa.String(length=64), nullable=True))
    op.create_table(
        "custody_alert_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=False),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        _at("acted_at"),
        sa.Column("acted_by", sa.String(length=64), nullable=False),
        sa.Column("acted_by_name", sa.String(length=200), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["custody_alerts.id"],
            name="fk_custody_alert_actions_alert_id_custody_alerts",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_custody_alert_actions"),
    )
    op.create_index(
        "ix_custody_alert_actions_alert_id", "custody_alert_actions", ["alert_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_custody_alert_actions_alert_id", table_name="custody_alert_actions")
    op.drop_table("custody_alert_actions")
    with op.batch_alter_table("custody_alerts", schema=None) as batch_op:
        batch_op.drop_column("status_changed_by")
        batch_op.drop_column("status_changed_at")
        batch_op.drop_column("status")
        batch_op.drop_column("row_version")
