"""Migration 0018 on SQLite and PostgreSQL: each lot's drug loading moves into its attributes
({"drug_loading": ...}) unchanged, and the downgrade moves it back; a lot whose attributes hold
no drug loading stops the downgrade, named, with nothing changed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from nearfab.migrations import alembic_config, upgrade

from ..conftest import PG_ADMIN_URL

NOW = "2026-12-06 10:00:00"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    request.getfixturevalue("pg_server")  # the test cluster (skips when there is none)
    import psycopg

    admin = PG_ADMIN_URL.replace("+psycopg", "")
    name = f"nearfab_m18_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _insert_lots(url: str, loadings: dict[str, float]) -> None:
    """A site and one lot per loading, as revision 0017 stores them."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO sites (id, code, name, kind, status, created_at, row_version,"
                " totp_for_signing) VALUES ('site_1', 'GSTT-PH', 'GSTT', 'clinic', 'active',"
                " :now, 1, false)"
            ),
            {"now": NOW},
        )
        for lot_id, loading in loadings.items():
            conn.execute(
                sa.text(
                    "INSERT INTO material_lots (id, lot_number, material_code, description,"
                    " site_id, supplier, expiry, status, quantity_g, drug_loading, assay_pct,"
                    " received_at, row_version) VALUES (:id, :id, 'HC-FIL-2.5', 'filament',"
                    " 'site_1', 'Filament Pharma Ltd', '2027-12-06', 'approved', 500.0,"
                    " :loading, 99.6, :now, 1)"
                ),
                {"id": lot_id, "loading": loading, "now": NOW},
            )
    engine.dispose()


def _rows(url: str, column: str) -> dict[str, Any]:
    engine = sa.create_engine(url)
    lots = sa.table("material_lots", sa.column("id"), sa.column(column, sa.JSON()))
    if column == "drug_loading":
        lots = sa.table("material_lots", sa.column("id"), sa.column(column, sa.Double()))
    with engine.connect() as conn:
        rows = {row[0]: row[1] for row in conn.execute(sa.select(lots.c.id, lots.c[column]))}
    engine.dispose()
    return rows


def _columns(url: str) -> set[str]:
    engine = sa.create_engine(url)
    names = {c["name"] for c in sa.inspect(engine).get_columns("material_lots")}
    engine.dispose()
    return names


def test_drug_loading_moves_into_attributes_and_back(empty_database: str) -> None:
    url = empty_database
    upgrade(url, "0017")
    _insert_lots(url, {"lot_a": 0.025, "lot_b": 0.1})

    upgrade(url, "0018")
    assert "drug_loading" not in _columns(url)
    assert _rows(url, "attributes") == {
        "lot_a": {"drug_loading": 0.025},
        "lot_b": {"drug_loading": 0.1},
    }

    command.downgrade(alembic_config(url), "0017")
    assert "attributes" not in _columns(url)
    assert _rows(url, "drug_loading") == {"lot_a": 0.025, "lot_b": 0.1}


def test_downgrade_stops_on_a_lot_without_a_drug_loading(empty_database: str) -> None:
    url = empty_database
    upgrade(url, "0017")
    _insert_lots(url, {"lot_a": 0.025, "lot_b": 0.1})
    upgrade(url, "0018")
    engine = sa.create_engine(url)
    lots = sa.table("material_lots", sa.column("id"), sa.column("attributes", sa.JSON()))
    with engine.begin() as conn:  # a lot of a family whose lots have no drug loading
        conn.execute(lots.update().where(lots.c.id == "lot_b").values(attributes={"cells": 1}))
    engine.dispose()

    with pytest.raises(RuntimeError, match=r"1 material lot\(s\) have no drug loading.*lot_b"):
        command.downgrade(alembic_config(url), "0017")
    assert "drug_loading" not in _columns(url)  # nothing changed
    assert _rows(url, "attributes")["lot_a"] == {"drug_loading": 0.025}
