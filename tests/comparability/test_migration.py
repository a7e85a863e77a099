"""Migration 0026 (issue 19): the proficiency tables and the master file's comparability column
come and go; master files made before keep their content, with a made batch referencing them
(SQLite refuses to rebuild a referenced table under foreign_keys=ON). SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.migrations import alembic_config, upgrade

seeded = fh.seeded
TABLES = {"proficiency_rounds", "proficiency_results", "proficiency_suspensions"}


def _schema(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            return (
                set(found.get_table_names()),
                {c["name"] for c in found.get_columns("master_files")},
            )
    finally:
        engine.dispose()


def _master_files(url: str) -> list[tuple[str, int, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT code, version, status FROM master_files"))
            return sorted((str(a), int(b), str(c)) for a, b, c in rows)
    finally:
        engine.dispose()


def test_0026_downgrade_and_upgrade(seeded: App) -> None:
    batch = fh.make_batch(seeded)  # an order and a batch record reference the master file
    with seeded.uow() as uow:
        code = seeded.orders.get(uow, fh.batch(seeded, batch).order_id).master_file_code
        seeded.comparability.open_round(
            uow,
            fh.actor(seeded, "qp"),
            {
                "master_file_code": code,
                "attribute": "assay",
                "unit": "%",
                "reference": "PT",
                "site_ids": ["GSTT-PH", "MAN-PH", "CTRL"],
            },
        )
    url = seeded.engine.url.render_as_string(hide_password=False)
    seeded.engine.dispose()
    tables, columns = _schema(url)
    assert tables >= TABLES and "comparability" in columns
    before = _master_files(url)
    assert before

    command.downgrade(alembic_config(url), "0025")
    tables, columns = _schema(url)
    assert not TABLES & tables
    assert "comparability" not in columns and "record_steps" in columns  # the rest stays
    assert _master_files(url) == before

    upgrade(url)
    tables, columns = _schema(url)
    assert tables >= TABLES and "comparability" in columns
    assert _master_files(url) == before
