"""Migration 0028 (issue 19 part 3): the central QA tables come and go; the master files and
the rest stay. SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.migrations import alembic_config, upgrade

seeded = fh.seeded
TABLES = {"qa_capas", "qa_complaints", "qa_assignments", "change_controls"}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_0028_downgrade_and_upgrade(seeded: App) -> None:
    with seeded.uow() as uow:
        seeded.qms.open_capa(
            uow,
            fh.actor(seeded, "qp"),
            {
                "title": "migration",
                "description": "a CAPA of the network",
                "source_kind": "audit",
                "owner": "qp",
                "due_date": seeded.clock.now().date().isoformat(),
            },
        )
    url = seeded.engine.url.render_as_string(hide_password=False)
    seeded.engine.dispose()
    assert _tables(url) >= TABLES and _count(url, "qa_capas") == 1
    before = _count(url, "master_files")

    command.downgrade(alembic_config(url), "0027")
    assert not TABLES & _tables(url)
    assert _count(url, "master_files") == before

    upgrade(url)
    assert _tables(url) >= TABLES and _count(url, "qa_capas") == 0
    assert _count(url, "master_files") == before
