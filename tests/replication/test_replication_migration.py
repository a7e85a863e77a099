"""Migration 0030 (replication outbox, inbox and problems) up, down and up again on a database
at 0029; the migrated tables, at head, have the columns and unique keys the models declare."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect
from tests.orders.test_order_migration import two_databases

from nearfab.db import Base
from nearfab.migrations import alembic_config
from nearfab.models import load_all

__all__ = ["two_databases"]

TABLES = {
    "replication_outbox_head",
    "replication_outbox",
    "replication_inbox",
    "replication_inbox_problems",
}


@pytest.fixture
def url(two_databases: tuple[str, str]) -> Iterator[str]:
    yield two_databases[0]


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_0030_up_down_up_and_matches_the_models(url: str) -> None:
    cfg = alembic_config(url)
    command.upgrade(cfg, "0029")
    assert not TABLES & _tables(url)
    command.upgrade(cfg, "0030")
    assert _tables(url) >= TABLES
    command.downgrade(cfg, "0029")
    assert not TABLES & _tables(url)
    command.upgrade(cfg, "0030")
    # the models are the head's: later revisions add to these tables (0033: the inbox's
    # `about`, tests/replication/test_inbox_kinds.py)
    command.upgrade(cfg, "head")
    load_all()
    engine = create_engine(url)
    try:
        found = inspect(engine)
        for name in sorted(TABLES):
            model = Base.metadata.tables[name]
            columns = {c["name"]: c["nullable"] for c in found.get_columns(name)}
            assert columns == {c.name: c.nullable for c in model.columns}, name
            uniques = {tuple(u["column_names"]) for u in found.get_unique_constraints(name)}
            assert uniques == {
                tuple(c.name for c in u.columns)
                for u in model.constraints
                if u.__class__.__name__ == "UniqueConstraint"
            }, name
    finally:
        engine.dispose()
