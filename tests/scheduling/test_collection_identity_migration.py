"""Migration 0025 (issue 15, the chain of identity from the collection): the pre-collection
records table and the columns of the collection record and of the hand-over come and go; the
collection appointments made before stay. SQLite and PostgreSQL."""

from __future__ import annotations

import random

from alembic import command
from sqlalchemy import create_engine, inspect, text
from tests import flow_helpers as fh
from tests.families.cell_therapy.collect import record_collection

from nearfab.bootstrap import App
from nearfab.demo import cell_therapy_bundle
from nearfab.migrations import alembic_config, upgrade

seeded = fh.seeded


def _schema(url: str) -> tuple[set[str], set[str], set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            return (
                set(found.get_table_names()),
                {c["name"] for c in found.get_columns("collection_appointments")},
                {c["name"] for c in found.get_columns("custody_hand_overs")},
            )
    finally:
        engine.dispose()


def _appointments(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT order_id, status FROM collection_appointments"))
            return sorted((str(a), str(b)) for a, b in rows)
    finally:
        engine.dispose()


def test_0025_downgrade_and_upgrade(seeded: App) -> None:
    bundle = cell_therapy_bundle(random.Random(3), today=seeded.clock.now().date())
    with seeded.uow() as uow:
        [order] = seeded.orders.submit(uow, fh.actor(seeded, "clinician"), bundle)
        order_id = order.id
    record_collection(seeded, order_id)
    url = seeded.engine.url.render_as_string(hide_password=False)
    seeded.engine.dispose()
    tables, collection, hand_over = _schema(url)
    assert "pre_collection_records" in tables
    assert {"collected_at", "collected_by", "chain_identifier"} <= collection
    assert {"giver_identifier", "receiver_identifier", "patient_checked"} <= hand_over
    before = _appointments(url)
    assert before == [(order_id, "requested")]

    command.downgrade(alembic_config(url), "0024")
    tables, collection, hand_over = _schema(url)
    assert "pre_collection_records" not in tables
    assert not {"collected_at", "collected_by", "chain_identifier"} & collection
    assert not {"giver_identifier", "receiver_identifier", "patient_checked"} & hand_over
    assert "recorded_at" in collection and "receiver_scan" in hand_over  # the rest stays
    assert _appointments(url) == before

    upgrade(url)
    tables, collection, hand_over = _schema(url)
    assert "pre_collection_records" in tables and "chain_identifier" in collection
    assert "patient_checked" in hand_over and _appointments(url) == before
