"""Migration 0013 on a database that holds orders without a site (as 0011 allowed): each one's
site is derived from the record (the patient's other orders, else the point-of-care site whose
job made it), or the migration stops naming the order and changes nothing. SQLite and
PostgreSQL."""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from nearfab.bootstrap import build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.demo import prescription_bundle, seed
from nearfab.identity import system_actor
from nearfab.migrations import alembic_config, upgrade

from ..conftest import PG_ADMIN_URL, TEST_PASSWORD


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases of one kind: a source at head and a target to migrate."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
        return
    request.getfixturevalue("pg_server")  # the test cluster (skips when there is none)
    import psycopg

    admin = PG_ADMIN_URL.replace("+psycopg", "")
    names = [f"nearfab_m_{secrets.token_hex(4)}" for _ in range(2)]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _orders_without_site(
    source: str, target: str, tmp_path: Path, at: str = "0012"
) -> dict[str, str]:
    """Three orders made at head, copied into a database at `at` (0012: with their site
    erased): one scheduled at GSTT-PH, one more of the same patient (not scheduled), one of
    another patient with nothing to derive a site from. Returns label -> order id."""
    upgrade(source)
    settings = Settings(data_dir=tmp_path / "data", database_url=source)
    app = build_app(settings, migrate=False, clock=ManualClock())
    try:
        seed(app, TEST_PASSWORD)
        today = app.clock.now().date()
        actor = system_actor("test")
        first = prescription_bundle(random.Random(1), today=today)
        with app.uow() as uow:
            (scheduled,) = app.orders.submit(uow, actor, first, site_id="GSTT-PH")
        with app.uow() as uow:
            app.scheduling.schedule(uow, actor, scheduled.id)
        # the same patient (NHS number) again, another prescription, ordered at GSTT-PH too
        again = prescription_bundle(random.Random(1), today=today, dose_mg=1.0)
        again["entry"][1]["resource"]["id"] = "rx-again"
        with app.uow() as uow:
            (sibling,) = app.orders.submit(uow, actor, again, site_id="GSTT-PH")
        with app.uow() as uow:
            (alone,) = app.orders.submit(
                uow, actor, prescription_bundle(random.Random(2), today=today), site_id="MAN-PH"
            )
        assert sibling.patient_id == scheduled.patient_id != alone.patient_id
    finally:
        app.engine.dispose()

    upgrade(target, at)
    source_engine, target_engine = create_engine(source), create_engine(target)
    src, dst = MetaData(), MetaData()
    src.reflect(source_engine)
    dst.reflect(target_engine)
    with source_engine.connect() as read, target_engine.begin() as write:
        if target_engine.dialect.name == "sqlite":
            write.exec_driver_sql("PRAGMA foreign_keys=OFF")
        for table in dst.sorted_tables:
            # the audit chain is not needed here (and its head row exists already)
            if table.name == "alembic_version" or table.name.startswith("audit"):
                continue
            if table.name not in src.tables:
                continue
            source_table = src.tables[table.name]
            columns = [source_table.c[c.name] for c in table.columns if c.name in source_table.c]
            rows = [
                dict(r._mapping)
                for r in read.execute(source_table.select().with_only_columns(*columns))
            ]
            # a column the older schema requires and head no longer has (a later migration
            # moved it): orders' dose_mg from the dose (all in mg); any other gets a
            # placeholder of its type, which these tests do not read
            gone = [
                c
                for c in table.columns
                if c.name not in source_table.c and not c.nullable and c.server_default is None
            ]
            id_column = source_table.c.get("id")
            if gone and id_column is not None:
                kept = {r.id: r._mapping for r in read.execute(source_table.select())}
                for row in rows:
                    for column in gone:
                        row[column.name] = _moved(table.name, column, kept[row["id"]])
            if table.name == "orders" and at == "0012":
                for row in rows:
                    row["site_id"] = None  # as an intake before 0013 could leave it
            if rows:
                write.execute(table.insert(), rows)
    source_engine.dispose()
    target_engine.dispose()
    return {"scheduled": scheduled.id, "sibling": sibling.id, "alone": alone.id}


def _moved(table: str, column: Any, head_row: Any) -> Any:
    if (table, column.name) == ("orders", "dose_mg"):
        assert head_row["dose_unit"] == "mg"
        return head_row["dose_value"]
    try:
        kind = column.type.python_type
    except NotImplementedError:
        return None
    return {int: 0, float: 0.0, str: ""}.get(kind)


def _sites(url: str) -> dict[str, str | None]:
    engine = create_engine(url)
    with engine.connect() as conn:
        codes = dict(conn.execute(text("SELECT id, code FROM sites")).all())
        rows = conn.execute(text("SELECT id, site_id FROM orders")).all()
    engine.dispose()
    return {order: codes.get(site) if site else None for order, site in rows}


def test_0013_derives_each_orders_site_or_stops_naming_it(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    source, target = two_databases
    ids = _orders_without_site(source, target, tmp_path)
    assert set(_sites(target).values()) == {None}

    # the order of the lone patient has no job and no sibling: not guessed
    with pytest.raises(RuntimeError) as caught:
        upgrade(target, "0013")
    assert ids["alone"] in str(caught.value)
    assert ids["scheduled"] not in str(caught.value)
    assert set(_sites(target).values()) == {None}  # nothing was changed

    # the operator sets that one by hand; the rest is derived from the records
    engine = create_engine(target)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE orders SET site_id = (SELECT id FROM sites WHERE code = 'MAN-PH') "
                "WHERE id = :o"
            ),
            {"o": ids["alone"]},
        )
    engine.dispose()
    upgrade(target, "0013")
    assert _sites(target) == {
        ids["scheduled"]: "GSTT-PH",  # the site whose job made it
        ids["sibling"]: "GSTT-PH",  # the patient's other order
        ids["alone"]: "MAN-PH",
    }
    # from now on the database itself refuses an order without a (real) site
    engine = create_engine(target)
    for value in (None, "site_NOPE"):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text("UPDATE orders SET site_id = :s WHERE id = :o"),
                {"s": value, "o": ids["alone"]},
            )
    engine.dispose()


def _doses(url: str) -> dict[str, tuple[float, str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, dose_value, dose_unit FROM orders")).all()
    engine.dispose()
    return {order: (value, unit) for order, value, unit in rows}


def test_0016_keeps_each_orders_dose_with_its_unit_and_goes_back(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    """dose_mg becomes dose_value + dose_unit 'mg' (every order before 0016 was dosed in mg);
    the downgrade restores dose_mg, and refuses, changing nothing, when a dose is not in mg."""
    source, target = two_databases
    ids = _orders_without_site(source, target, tmp_path, at="0015")
    engine = create_engine(target)
    with engine.connect() as conn:
        before = dict(conn.execute(text("SELECT id, dose_mg FROM orders")).all())
    engine.dispose()
    # the bundles above: prescription_bundle(Random(1)) twice (the second at 1.0 mg), Random(2)
    assert before[ids["sibling"]] == 1.0 and len(before) == 3

    upgrade(target, "0016")
    assert _doses(target) == {order: (mg, "mg") for order, mg in before.items()}
    # the database itself refuses an order without its dose or unit (SQLite: triggers)
    engine = create_engine(target)
    for column in ("dose_value", "dose_unit"):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(
                text(f"UPDATE orders SET {column} = NULL WHERE id = :o"), {"o": ids["alone"]}
            )
    engine.dispose()

    config = alembic_config(target)
    command.downgrade(config, "0015")
    engine = create_engine(target)
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT id, dose_mg FROM orders")).all()) == before
        assert "dose_unit" not in {c["name"] for c in inspect(conn).get_columns("orders")}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE orders SET dose_mg = NULL WHERE id = :o"), {"o": ids["alone"]})
    engine.dispose()

    upgrade(target, "0016")
    engine = create_engine(target)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE orders SET dose_unit = '10*6/kg' WHERE id = :o"), {"o": ids["alone"]}
        )
    engine.dispose()
    with pytest.raises(RuntimeError) as caught:
        command.downgrade(config, "0015")
    assert ids["alone"] in str(caught.value) and "10*6/kg" in str(caught.value)
    assert _doses(target)[ids["alone"]] == (before[ids["alone"]], "10*6/kg")
