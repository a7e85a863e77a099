"""Shared steps for chain-of-custody tests: the custody chain wired onto a seeded app (as the
composition root will), a released batch's packs, scans."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.custody import CustodyChain, SerialUnit, make_identifier
from nearfab.designs import FamilyRegistry


def chain(app: App) -> CustodyChain:
    built = CustodyChain.build(app.custody, app.settings.data_dir / "keys")
    app.custody_chain = built  # type: ignore[attr-defined]
    return built


def units(app: App, batch_id: str) -> list[SerialUnit]:
    with app.uow() as uow:
        found = app.custody.units_of_batch(uow, batch_id)
        for unit in found:
            uow.session.expunge(unit)
        return found


def scan(unit: SerialUnit, *, batch: str | None = None) -> str:
    ident = make_identifier(unit.gtin, unit.serial, batch or unit.batch_number, unit.expiry)
    return "]d2" + ident.datamatrix_data()


def patient_ref(app: App, unit: SerialUnit) -> str:
    with app.uow() as uow:
        return app.orders.patient(uow, unit.patient_id).ref


def released_batch(app: App, **order: Any) -> tuple[str, list[SerialUnit]]:
    batch_id = fh.make_batch(app, **order)
    fh.release(app, batch_id)
    return batch_id, units(app, batch_id)


class _Relabelled:
    """A family as it is in every part but its labels."""

    def __init__(self, base: Any, labels: Any) -> None:
        self._base = base
        self.labels = labels

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def relabel_solid_dose(app: App, labels: Any) -> App:
    """Swap a test-only labels object into solid_dose on the app's custody pack families."""
    registry = FamilyRegistry()
    for family in app.custody.packs.families:
        registry.register(_Relabelled(family, labels) if family.name == "solid_dose" else family)
    app.custody.packs.families = registry
    return app


def dispense(app: App, unit: SerialUnit, username: str = "pharmacist") -> Any:
    with app.uow() as uow:
        return app.custody.dispense(
            uow, fh.actor(app, username), scan=scan(unit), patient_ref=patient_ref(app, unit)
        )


@pytest.fixture(autouse=True)
def flushed_verification_log(seeded: App) -> Iterator[None]:
    """Commit the queued verification log rows before the test's database goes away (use as
    `flushed_verification_log = ch.flushed_verification_log` in a module)."""
    yield
    seeded.custody.flush_verification_log()
