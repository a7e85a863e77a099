"""The owners' reads custody uses in place of their tables (issue 15 part 3) keep the errors
custody gave before: an unknown key is NotFound naming the field the caller's form calls it,
and a site is found by id only (never by its code, unlike the network service's look-up)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.errors import NotFound
from nearfab.custody.models import SiteLocation
from nearfab.materials.reads import lot
from nearfab.network.reads import site
from nearfab.orders.reads import order, patient

seeded = fh.seeded


def test_unknown_keys_are_not_found_naming_the_field(seeded: App) -> None:
    with seeded.uow() as uow:
        for read, field in (
            (lambda key: site(uow.session, key), "site_id"),
            (lambda key: site(uow.session, key, "to_site_id"), "to_site_id"),
            (lambda key: lot(uow.session, key), "material_lot_id"),
            (lambda key: order(uow.session, key), "order_id"),
            (lambda key: patient(uow.session, key), "patient_id"),
        ):
            with pytest.raises(NotFound) as exc:
                read("nope_1")
            assert exc.value.field == field
            assert "'nope_1'" in exc.value.message
        with pytest.raises(NotFound):
            site(uow.session, "")  # no id is no site, not a query
        control = fh.site_id(seeded, "CTRL")
        assert site(uow.session, control).code == "CTRL"
        with pytest.raises(NotFound):
            site(uow.session, "CTRL")  # a code is not an id here


def test_custody_refuses_an_unknown_site_or_machine_as_before(seeded: App) -> None:
    chain = ch.chain(seeded)
    with pytest.raises(NotFound) as exc, seeded.uow() as uow:
        chain.epcis.site_location(uow, "site_nope")
    assert exc.value.field == "site_id"
    with seeded.uow() as uow:  # no GLN assigned to a site that does not exist
        assert uow.session.get(SiteLocation, "site_nope") is None
    with pytest.raises(NotFound) as exc, seeded.uow() as uow:
        chain.ledger.rotate(uow, fh.actor(seeded, "admin"), "site_nope", reason="yearly")
    assert exc.value.field == "site_id"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(NotFound) as exc, seeded.uow() as uow:
        chain.trace.machine(
            uow, fh.actor(seeded, "qp"), "machine_nope", start, start + timedelta(days=1)
        )
    assert exc.value.field == "machine_id"
