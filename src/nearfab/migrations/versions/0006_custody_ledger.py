"""custody: EPCIS events, the signed hash-chained ledger, site keys and GLNs, recalls, alerts

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nearfab.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, nearfab.db.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "custody_site_locations",
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("gln", sa.String(length=13), nullable=False),
        sa.Column("company_prefix_length", sa.Integer(), nullable=False),
        _time("assigned_at"),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_custody_site_locations_site_id_sites"
        ),
        sa.PrimaryKeyConstraint("site_id", name="pk_custody_site_locations"),
        sa.UniqueConstraint("gln", name="uq_custody_site_locations_gln"),
    )
    op.create_table(
        "custody_epcis_events",
        sa.Column("event_hash", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        _time("event_time"),
        _time("record_time"),
        sa.Column("action", sa.String(length=16), nullable=True),
        sa.Column("biz_step", sa.String(length=200), nullable=True),
        sa.Column("disposition", sa.String(length=200), nullable=True),
        sa.Column("read_point", sa.String(length=300), nullable=True),
        sa.Column("biz_location", sa.String(length=300), nullable=True),
        sa.Column("site_id", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("event_hash", name="pk_custody_epcis_events"),
    )
    op.create_index("ix_custody_epcis_time", "custody_epcis_events", ["event_time"])
    op.create_index("ix_custody_epcis_biz_step", "custody_epcis_events", ["biz_step"])
    op.create_index("ix_custody_epcis_events_read_point", "custody_epcis_events", ["read_point"])
    op.create_index(
        "ix_custody_epcis_events_biz_location", "custody_epcis_events", ["biz_location"]
    )
    op.create_table(
        "custody_epcis_epcs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_hash", sa.String(length=100), nullable=False),
        sa.Column("epc", sa.String(length=300), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_hash"],
            ["custody_epcis_events.event_hash"],
            name="fk_custody_epcis_epcs_event_hash_custody_epcis_events",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_custody_epcis_epcs"),
    )
    op.create_index("ix_custody_epc", "custody_epcis_epcs", ["epc"])
    op.create_index("ix_custody_epcis_epcs_event_hash", "custody_epcis_epcs", ["event_hash"])
    op.create_table(
        "custody_site_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=False),
        _time("created_at"),
        _time("retired_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"], ["sites.id"], name="fk_custody_site_keys_site_id_sites"
        ),
        sa.PrimaryKeyConstraint("key_id", name="pk_custody_site_keys"),
    )
    op.create_index("ix_custody_site_keys_site_id", "custody_site_keys", ["site_id"])
    op.create_table(
        "custody_ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=100), nullable=False),
        _time("recorded_at"),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"], name="fk_custody_ledger_site_id_sites"),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["custody_site_keys.key_id"],
            name="fk_custody_ledger_key_id_custody_site_keys",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_custody_ledger"),
        sa.UniqueConstraint("site_id", "seq", name="uq_custody_ledger_site_id"),
    )
    op.create_index("ix_custody_ledger_ref", "custody_ledger", ["ref"])
    op.create_table(
        "custody_recalls",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("scope_ref", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _time("created_at"),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_custody_recalls"),
    )
    op.create_table(
        "custody_recall_units",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("recall_id", sa.String(length=32), nullable=False),
        sa.Column("unit_id", sa.String(length=32), nullable=False),
        sa.Column("status_before", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["recall_id"],
            ["custody_recalls.id"],
            name="fk_custody_recall_units_recall_id_custody_recalls",
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["serial_units.id"], name="fk_custody_recall_units_unit_id_serial_units"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_custody_recall_units"),
        sa.UniqueConstraint("recall_id", "unit_id", name="uq_custody_recall_units_recall_id"),
    )
    op.create_index("ix_custody_recall_units_recall_id", "custody_recall_units", ["recall_id"])
    op.create_index("ix_custody_recall_units_unit_id", "custody_recall_units", ["unit_id"])
    op.create_table(
        "custody_alerts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("unit_id", sa.String(length=32), nullable=True),
        sa.Column("scan", sa.String(length=200), nullable=False),
        _time("raised_at"),
        sa.Column("raised_by", sa.String(length=64), nullable=False),
        sa.Column("site_id", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_custody_alerts"),
    )


def downgrade() -> None:
    op.drop_table("custody_alerts")
    op.drop_table("custody_recall_units")
    op.drop_table("custody_recalls")
    op.drop_table("custody_ledger")
    op.drop_table("custody_site_keys")
    op.drop_table("custody_epcis_epcs")
    op.drop_table("custody_epcis_events")
    op.drop_table("custody_site_locations")
