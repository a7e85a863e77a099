"""Migration 0027 (dose adjustment) alone, on an empty database at 0026: up adds the two
tables, the order's version link (`supersedes`, `prescription_version` defaulting to 1 for the
orders already held) and the master file's `dose_rule`; down takes them away; up again works.
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from nearfab.migrations import alembic_config

from .test_order_migration import two_databases

__all__ = ["two_databases"]


@pytest.fixture
def url(two_databases: tuple[str, str]) -> Iterator[str]:
    yield two_databases[0]


def _shape(url: str) -> tuple[set[str], set[str], set[str]]:
    engine = create_engine(url)
    try:
        found = inspect(engine)
        tables = set(found.get_table_names())
        orders = {c["name"] for c in found.get_columns("orders")}
        files = {c["name"] for c in found.get_columns("master_files")}
    finally:
        engine.dispose()
    return tables, orders, files


def test_0027_up_down_up(url: str, tmp_path: Path) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0026")
    tables, orders, files = _shape(url)
    assert "dose_proposals" not in tables and "supersedes" not in orders
    command.upgrade(cfg, "0027")
    tables, orders, files = _shape(url)
    assert {"patient_observations", "dose_proposals"} <= tables
    assert {"supersedes", "prescription_version"} <= orders and "dose_rule" in files
    command.downgrade(cfg, "0026")
    tables, orders, files = _shape(url)
    assert not {"patient_observations", "dose_proposals"} & tables
    assert not {"supersedes", "prescription_version"} & orders and "dose_rule" not in files
    command.upgrade(cfg, "0027")
    assert "dose_proposals" in _shape(url)[0]
