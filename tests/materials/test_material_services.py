"""Material-lot services on both databases: receipt, status, usable lots, consumption."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidTransition,
    Refused,
    ValidationFailed,
)
from nearfab.identity import Actor, AuditEntry, audit_trail, system_actor
from nearfab.materials import LotStatus, MaterialLot
from nearfab.network import Site
from nearfab.uow import UnitOfWork

BOOT = system_actor("test-admin")
QP = Actor(user_id="usr_QP", username="qp", full_name="Quentin Parr", roles=("qp",))
PHARMACIST = Actor(
    user_id="usr_PH", username="phil", full_name="Phil Harmon", roles=("pharmacist",)
)
OPERATOR = Actor(user_id="usr_OP", username="olu", full_name="Olu Operator", roles=("operator",))
HC = "HC-FIL-2.5"


@pytest.fixture
def site(app: App) -> Site:
    with app.uow() as uow:
        return app.network.create_site(uow, BOOT, code="GSTT", name="GSTT", kind="clinic")


def today(app: App) -> date:
    return app.clock.now().date()


def receive(
    app: App,
    site: Site,
    lot_number: str = "L-001",
    *,
    expiry_days: int = 365,
    grams: float = 100.0,
    material: str = HC,
    approve: bool = True,
    **extra: Any,
) -> MaterialLot:
    # a material no master file names: the receipt says which family's lot it is
    extra.setdefault("product_family", "solid_dose")
    with app.uow() as uow:
        lot = app.materials.receive_lot(
            uow,
            PHARMACIST,
            lot_number=lot_number,
            material_code=material,
            description="Hydrocortisone 2.5 % filament",
            site_id=site.id,
            supplier="Filament Pharma Ltd",
            expiry=today(app) + timedelta(days=expiry_days),
            quantity_g=grams,
            attributes=extra.pop("attributes", {"drug_loading": 0.025}),
            **extra,
        )
    if approve:
        set_status(app, lot, LotStatus.APPROVED)
    return lot


def set_status(app: App, lot: MaterialLot, target: LotStatus, actor: Actor = QP) -> MaterialLot:
    with app.uow() as uow:
        return app.materials.set_status(uow, actor, lot.id, target, reason="CoA reviewed")


def usable(app: App, site: Site, needed_g: float = 5.0, material: str = HC) -> str | None:
    with app.uow() as uow:
        lot = app.materials.usable_lot(
            uow, site_id=site.id, material_code=material, needed_g=needed_g
        )
        return lot.lot_number if lot else None


def consume(app: App, lot: MaterialLot, grams: float, *, commit: bool = True) -> MaterialLot:
    with app.uow() as uow:
        drawn = app.materials.consume(uow, OPERATOR, lot.id, grams, batch_id="bat_1")
        if commit:
            uow.commit()
    return drawn


def grams_left(app: App, lot: MaterialLot) -> float:
    with app.uow() as uow:
        return app.materials.get(uow, lot.id).quantity_g


def refused(app: App, error: type[DomainError], use_case: Callable[[UnitOfWork], Any]) -> Any:
    with pytest.raises(error) as info, app.uow() as uow:
        use_case(uow)
    return info.value


def test_receive_lot_refuses_bad_input_naming_the_field(app: App, site: Site) -> None:
    cases = [
        ({"grams": 0.0}, "quantity_g"),
        ({"grams": -5.0}, "quantity_g"),
        ({"attributes": {"drug_loading": 1.2}}, "attributes.drug_loading"),
        ({"attributes": {"drug_loading": 0.0}}, "attributes.drug_loading"),
        ({"assay_pct": 79.9}, "assay_pct"),
        ({"assay_pct": 120.5}, "assay_pct"),
    ]
    for changes, field in cases:
        with pytest.raises(ValidationFailed) as info:
            receive(app, site, approve=False, **changes)
        assert info.value.field == field, changes
    with app.uow() as uow:
        assert uow.session.scalar(select(func.count()).select_from(MaterialLot)) == 0
        assert (
            uow.session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.entity_type == "material_lot")
            )
            == 0
        )
    receive(app, site, approve=False, assay_pct=80.0, attributes={"drug_loading": 1.0})  # limits
    with pytest.raises(Conflict):
        receive(app, site, approve=False)


def test_nan_quantity_is_a_validation_error(app: App, site: Site) -> None:
    with pytest.raises(ValidationFailed) as info:
        receive(app, site, approve=False, grams=math.nan)
    assert info.value.field == "quantity_g"


def test_received_lot_waits_in_quarantine_and_is_not_usable(app: App, site: Site) -> None:
    lot = receive(app, site, approve=False)
    assert lot.status == "quarantine"
    [entry] = audit_trail_of(app, lot)
    assert entry.action == "create" and entry.actor_id == PHARMACIST.user_id
    assert entry.new is not None and entry.new["status"] == "quarantine"
    assert entry.new["expiry"] == lot.expiry.isoformat() and entry.site_id == site.id
    assert usable(app, site) is None
    error = refused(
        app,
        Refused,
        lambda uow: app.materials.consume(uow, OPERATOR, lot.id, 1.0, batch_id="bat_1"),
    )
    assert error.code == "lot_not_usable" and "quarantine" in error.message
    refused(
        app,
        Forbidden,
        lambda uow: app.materials.set_status(
            uow, OPERATOR, lot.id, LotStatus.APPROVED, reason="looks fine"
        ),
    )
    set_status(app, lot, LotStatus.APPROVED)
    assert usable(app, site) == "L-001"
    last = audit_trail_of(app, lot)[-1]
    assert (last.old, last.new, last.reason) == (
        {"status": "quarantine"},
        {"status": "approved"},
        "CoA reviewed",
    )
    refused(
        app,
        InvalidTransition,
        lambda uow: app.materials.set_status(uow, QP, lot.id, LotStatus.QUARANTINE, reason="back"),
    )
    set_status(app, lot, LotStatus.ON_HOLD)
    assert usable(app, site) is None


def test_usable_lot_is_the_earliest_expiring_approved_lot_with_enough(app: App, site: Site) -> None:
    with app.uow() as uow:
        other_site = app.network.create_site(uow, BOOT, code="MAN", name="MAN", kind="clinic")
    receive(app, site, "L-SMALL", expiry_days=100, grams=10.0)
    receive(app, site, "L-LATE", expiry_days=300, grams=100.0)
    receive(app, site, "L-MID", expiry_days=200, grams=100.0)
    receive(app, site, "L-QUAR", expiry_days=50, grams=100.0, approve=False)
    receive(app, site, "L-PROP", expiry_days=20, grams=100.0, material="PROP-FIL-10")
    receive(app, other_site, "L-MAN", expiry_days=10, grams=100.0)
    assert usable(app, site, 5.0) == "L-SMALL"
    assert usable(app, site, 10.0) == "L-SMALL"
    assert usable(app, site, 10.5) == "L-MID"
    assert usable(app, site, 150.0) is None
    assert usable(app, site, 5.0, material="PROP-FIL-10") == "L-PROP"
    assert usable(app, other_site, 5.0) == "L-MAN"


def test_expired_lot_is_not_usable(app: App, site: Site, clock: ManualClock) -> None:
    lot = receive(app, site, expiry_days=10)
    clock.advance(9 * 86400)
    assert usable(app, site) == "L-001"
    consume(app, lot, 1.0)
    clock.advance(86400)  # expiry day itself: no longer usable
    assert usable(app, site) is None
    error = refused(
        app,
        Refused,
        lambda uow: app.materials.consume(uow, OPERATOR, lot.id, 1.0, batch_id="bat_2"),
    )
    assert error.code == "lot_not_usable" and "expired" in error.message
    assert grams_left(app, lot) == pytest.approx(99.0)


def test_consume_draws_in_the_callers_transaction_and_is_audited(app: App, site: Site) -> None:
    lot = receive(app, site, grams=100.0)
    assert consume(app, lot, 30.25).quantity_g == pytest.approx(69.75)
    last = audit_trail_of(app, lot)[-1]
    assert (last.action, last.old, last.new) == (
        "update",
        {"quantity_g": 100.0},
        {"quantity_g": 69.75},
    )
    assert last.reason == "consumed by batch bat_1" and last.actor_id == OPERATOR.user_id
    consume(app, lot, 10.0, commit=False)  # the batch's use case failed: nothing drawn
    assert grams_left(app, lot) == pytest.approx(69.75)
    error = refused(
        app,
        Refused,
        lambda uow: app.materials.consume(uow, OPERATOR, lot.id, 70.0, batch_id="bat_3"),
    )
    assert error.code == "lot_not_usable" and "70.00 g needed" in error.message
    set_status(app, lot, LotStatus.RECALLED)
    refused(
        app,
        Refused,
        lambda uow: app.materials.consume(uow, OPERATOR, lot.id, 1.0, batch_id="bat_4"),
    )
    assert grams_left(app, lot) == pytest.approx(69.75)


def audit_trail_of(app: App, lot: MaterialLot) -> list[AuditEntry]:
    with app.uow() as uow:
        return audit_trail(uow, "material_lot", lot.id)
