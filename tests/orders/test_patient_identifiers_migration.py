"""Migration 0024 (issue 20), on its own: on an empty database brought to 0024, with a site and a
patient holding identifier hashes, the downgrade to 0023 drops the hash table and the sites'
identification rule and keeps the site; the upgrade to head brings them back. SQLite and
PostgreSQL. (The test runs 0024 alone, not a downgrade from head, so that a later revision's
own downgrade does not decide it.) A patient without hashes, as the downgrade leaves it, is
matched from its identity: tests/orders/test_patient_matching.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from nearfab.migrations import alembic_config, upgrade

from ..conftest import PG_ADMIN_URL

NOW = "2026-01-05 08:00:00+00:00"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    request.getfixturevalue("pg_server")
    import psycopg

    admin = PG_ADMIN_URL.replace("+psycopg", "")
    name = f"nearfab_m_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _state(url: str) -> tuple[set[str], set[str], list[tuple[str, str]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            sites = conn.execute(text("SELECT id, code FROM sites")).all()
            return (
                set(found.get_table_names()),
                {c["name"] for c in found.get_columns("sites")},
                [(str(i), str(c)) for i, c in sites],
            )
    finally:
        engine.dispose()


def test_0024_down_and_up(empty_database: str) -> None:
    url = empty_database
    config = alembic_config(url)
    command.upgrade(config, "0024")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO sites (id, row_version, code, name, kind, status, created_at, "
                    "totp_for_signing, birth_date_required, mrn_system) VALUES ('site_1', 1, "
                    "'GSTT-PH', 'St Thomas', 'hospital_pharmacy', 'active', :now, false, true, "
                    "'https://trust.example/mrn')"
                ),
                {"now": NOW},
            )
            conn.execute(
                text(
                    "INSERT INTO patients (id, ref, lookup_hash, created_at) "
                    "VALUES ('pat_1', 'PT-1', :h, :now)"
                ),
                {"h": "a" * 64, "now": NOW},
            )
            conn.execute(
                text(
                    "INSERT INTO patient_identifier_hashes (id, patient_id, kind, site_id, "
                    "prescription_id, hash, created_at) VALUES ('pih_1', 'pat_1', 'mrn', "
                    "'site_1', NULL, :h, :now)"
                ),
                {"h": "b" * 64, "now": NOW},
            )
    finally:
        engine.dispose()
    tables, columns, _ = _state(url)
    assert "patient_identifier_hashes" in tables
    assert {"birth_date_required", "mrn_system"} <= columns

    command.downgrade(config, "0023")
    tables, columns, sites = _state(url)
    assert "patient_identifier_hashes" not in tables
    assert not {"birth_date_required", "mrn_system"} & columns
    assert "totp_for_signing" in columns and sites == [("site_1", "GSTT-PH")]

    upgrade(url)  # to head
    tables, columns, sites = _state(url)
    assert "patient_identifier_hashes" in tables
    assert {"birth_date_required", "mrn_system"} <= columns and sites == [("site_1", "GSTT-PH")]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # the rule starts off for a site that had it before the downgrade: nothing invented
            assert not conn.execute(text("SELECT birth_date_required FROM sites")).scalar()
    finally:
        engine.dispose()
