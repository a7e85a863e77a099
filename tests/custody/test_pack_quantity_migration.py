"""Migration 0019 (family kit, issue 15): a pack's `tablets` count becomes `quantity`, on a
database with packs that other tables reference (a dispense, the container history), and the
downgrade moves it back. SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect, text
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.custody import make_identifier
from nearfab.migrations import alembic_config, upgrade

seeded = fh.seeded


def _counts(url: str, column: str, batch_id: str) -> tuple[list[tuple[int, int]], set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"SELECT pack_index, {column} FROM serial_units WHERE batch_id = :b "
                    "ORDER BY pack_index"
                ),
                {"b": batch_id},
            ).all()
            found = inspect(conn)
            columns = {c["name"] for c in found.get_columns("serial_units")}
            # the table's rules survive the change
            uniques = {
                tuple(u["column_names"]) for u in found.get_unique_constraints("serial_units")
            }
            assert {("gtin", "serial"), ("batch_id", "pack_index")} <= uniques
            if engine.dialect.name == "sqlite":  # nothing left pointing at a missing pack
                assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
    finally:
        engine.dispose()
    return [(int(i), int(n)) for i, n in rows], columns


def test_0019_moves_each_packs_count_to_quantity_and_back(seeded: App) -> None:
    # 11 days at 3 a day: 33 units, packs of at most 30 (the master file): 30 and 3
    batch_id = fh.make_batch(seeded, dose_mg=2.5, days=11)
    fh.release(seeded, batch_id)
    with seeded.uow() as uow:
        first = seeded.custody.units_of_batch(uow, batch_id)[0]
        ref = seeded.orders.patient(uow, first.patient_id).ref
        scan = (
            "]d2"
            + make_identifier(
                first.gtin, first.serial, first.batch_number, first.expiry
            ).datamatrix_data()
        )
    with seeded.uow() as uow:  # a dispense row references the pack
        seeded.custody.dispense(uow, fh.actor(seeded, "pharmacist"), scan=scan, patient_ref=ref)
    url = seeded.engine.url.render_as_string(hide_password=False)
    seeded.engine.dispose()

    assert _counts(url, "quantity", batch_id)[0] == [(1, 30), (2, 3)]

    command.downgrade(alembic_config(url), "0018")
    counts, columns = _counts(url, "tablets", batch_id)
    assert counts == [(1, 30), (2, 3)]
    assert "quantity" not in columns

    upgrade(url)
    counts, columns = _counts(url, "quantity", batch_id)
    assert counts == [(1, 30), (2, 3)]
    assert "tablets" not in columns
    # the application reads the pack as it was
    with seeded.uow() as uow:
        again = seeded.custody.get_unit(uow, first.id)
        assert (again.quantity, again.status, again.serial) == (30, "dispensed", first.serial)
