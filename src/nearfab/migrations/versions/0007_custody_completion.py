"""custody: shipping containers (SSCC) and the packs packed in them

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "custody_containers",
        sa.Column("sscc", sa.String(length=18), nullable=False),
        sa.Column("from_site_id", sa.String(length=32), nullable=False),
        sa.Column("to_site_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _time("packed_at"),
        sa.Column("packed_by", sa.String(length=64), nullable=False),
        _time("unpacked_at", nullable=True),
        sa.Column("unpacked_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["from_site_id"], ["sites.id"], name="fk_custody_containers_from_site_id_sites"
        ),
        sa.ForeignKeyConstraint(
            ["to_site_id"], ["sites.id"], name="fk_custody_containers_to_site_id_sites"
        ),
        sa.PrimaryKeyConstraint("sscc", name="pk_custody_containers"),
    )
    op.create_index("ix_custody_containers_to_site_id", "custody_containers", ["to_site_id"])
    op.create_index("ix_custody_containers_status", "custody_containers", ["status"])
    op.create_table(
        "custody_container_units",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("sscc", sa.String(length=18), nullable=False),
        sa.Column("unit_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["sscc"],
            ["custody_containers.sscc"],
            name="fk_custody_container_units_sscc_custody_containers",
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["serial_units.id"], name="fk_custody_container_units_unit_id_serial_units"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_custody_container_units"),
        sa.UniqueConstraint("sscc", "unit_id", name="uq_custody_container_units_sscc"),
    )
    op.create_index("ix_custody_container_units_sscc", "custody_container_units", ["sscc"])
    op.create_index("ix_custody_container_units_unit_id", "custody_container_units", ["unit_id"])


def downgrade() -> None:
    op.drop_index("ix_custody_container_units_unit_id", table_name="custody_container_units")
    op.drop_index("ix_custody_container_units_sscc", table_name="custody_container_units")
    op.drop_table("custody_container_units")
    op.drop_index("ix_custody_containers_status", table_name="custody_containers")
    op.drop_index("ix_custody_containers_to_site_id", table_name="custody_containers")
    op.drop_table("custody_containers")
