"""Migration 0029 (adverse events) up, down and up again on a database at 0028."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect
from tests.orders.test_order_migration import two_databases

from nearfab.migrations import alembic_config

__all__ = ["two_databases"]


@pytest.fixture
def url(two_databases: tuple[str, str]) -> Iterator[str]:
    yield two_databases[0]


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_0029_up_down_up(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0028")
    assert "adverse_events" not in _tables(url)
    command.upgrade(cfg, "0029")
    assert "adverse_events" in _tables(url)
    command.downgrade(cfg, "0028")
    assert "adverse_events" not in _tables(url)
    command.upgrade(cfg, "0029")
    assert "adverse_events" in _tables(url)
