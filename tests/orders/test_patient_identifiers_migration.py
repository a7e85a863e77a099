"""Migration 0024 (issue 20): the identifier-hash table and the sites' identification rule come
and go; a patient whose hashes were lost with a downgrade is matched from its encrypted identity
after the upgrade, and by its pseudonym as before. SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine, inspect
from tests import flow_helpers as fh
from tests.patient_helpers import ALICE, BOB, submit_for

from nearfab.bootstrap import App
from nearfab.identity import Permission
from nearfab.migrations import alembic_config, upgrade
from nearfab.orders import PresentedIdentifiers

seeded = fh.seeded


def _schema(url: str) -> tuple[set[str], set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            return set(found.get_table_names()), {c["name"] for c in found.get_columns("sites")}
    finally:
        engine.dispose()


def test_0024_downgrade_and_upgrade(seeded: App) -> None:
    order_id = submit_for(seeded, ALICE)
    with seeded.uow() as uow:
        ref = seeded.orders.patient(uow, seeded.orders.get(uow, order_id).patient_id).ref
    url = seeded.engine.url.render_as_string(hide_password=False)
    seeded.engine.dispose()
    tables, columns = _schema(url)
    assert "patient_identifier_hashes" in tables
    assert {"birth_date_required", "mrn_system"} <= columns

    command.downgrade(alembic_config(url), "0023")
    tables, columns = _schema(url)
    assert "patient_identifier_hashes" not in tables
    assert not {"birth_date_required", "mrn_system"} & columns
    assert "totp_for_signing" in columns  # the rest of the table is left as it was

    upgrade(url)
    tables, columns = _schema(url)
    assert "patient_identifier_hashes" in tables
    for presented, matched in [
        (PresentedIdentifiers(patient_ref=ref), True),
        (PresentedIdentifiers(nhs_number=ALICE.nhs_number), True),
        (PresentedIdentifiers(nhs_number=BOB.nhs_number), False),
    ]:
        with seeded.uow() as uow:
            answer = seeded.orders.match_patient(
                uow,
                fh.actor(seeded, "pharmacist"),
                order_id,
                presented,
                purpose="dispense",
                permission=Permission.DISPENSE,
            )
            uow.commit()
        assert answer.matched is matched
