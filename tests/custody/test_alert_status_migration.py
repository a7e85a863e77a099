"""Migration 0031 (issue 17, the follow-up of custody alerts) on a database at 0030 holding an
alert: the alert becomes `open` (nobody recorded anything about it), at row version 1, never
changed; the history table and the new columns match the models; the downgrade removes them
and keeps the alert; up again. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from tests.orders.test_order_migration import two_databases

from nearfab.db import Base
from nearfab.migrations import alembic_config
from nearfab.models import load_all

__all__ = ["two_databases"]

NEW_COLUMNS = {"row_version", "status", "status_changed_at", "status_changed_by"}


@pytest.fixture
def url(two_databases: tuple[str, str]) -> Iterator[str]:
    yield two_databases[0]


def _alerts(url: str) -> tuple[set[str], set[str], list[dict[str, object]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            columns = {c["name"] for c in found.get_columns("custody_alerts")}
            tables = set(found.get_table_names())
            rows = [dict(r) for r in conn.execute(text("SELECT * FROM custody_alerts")).mappings()]
    finally:
        engine.dispose()
    return columns, tables, rows


def test_0031_makes_existing_alerts_open_and_goes_back(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0030")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO custody_alerts (id, kind, unit_id, scan, raised_at, raised_by, "
                    "site_id, detail) VALUES ('alert_OLD', 'second_dispense', NULL, 'SCAN', "
                    ":at, 'usr_x', NULL, '{\"message\": \"m\"}')"
                ),
                {"at": datetime(2026, 1, 5, 8, 0, tzinfo=UTC)},
            )
    finally:
        engine.dispose()

    command.upgrade(cfg, "0031")
    columns, tables, rows = _alerts(url)
    assert columns >= NEW_COLUMNS and "custody_alert_actions" in tables
    (row,) = rows
    assert (row["id"], row["status"], row["row_version"]) == ("alert_OLD", "open", 1)
    assert (row["status_changed_at"], row["status_changed_by"]) == (None, None)

    load_all()
    engine = create_engine(url)
    try:
        found = inspect(engine)
        for name in ("custody_alerts", "custody_alert_actions"):
            model = Base.metadata.tables[name]
            columns_found = {c["name"]: c["nullable"] for c in found.get_columns(name)}
            assert columns_found == {c.name: c.nullable for c in model.columns}, name
        indexes = {i["name"] for i in found.get_indexes("custody_alert_actions")}
        assert "ix_custody_alert_actions_alert_id" in indexes
        keys = found.get_foreign_keys("custody_alert_actions")
        assert [(k["referred_table"], k["constrained_columns"]) for k in keys] == [
            ("custody_alerts", ["alert_id"])
        ]
    finally:
        engine.dispose()

    command.downgrade(cfg, "0030")
    columns, tables, rows = _alerts(url)
    assert not NEW_COLUMNS & columns and "custody_alert_actions" not in tables
    assert [r["id"] for r in rows] == ["alert_OLD"]
    command.upgrade(cfg, "0031")
    columns, tables, rows = _alerts(url)
    assert columns >= NEW_COLUMNS and [r["status"] for r in rows] == ["open"]
