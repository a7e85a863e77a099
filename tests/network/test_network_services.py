"""Network services on both databases: site lifecycle, machines, qualification, training."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from nearfab.identity import Actor, AuditEntry, audit_trail, system_actor
from nearfab.network import Machine, Site, SiteStatus
from nearfab.uow import UnitOfWork

BOOT = system_actor("test-admin")
OPERATOR = Actor(user_id="usr_OP", username="olu", full_name="Olu Operator", roles=("operator",))
QP = Actor(user_id="usr_QP", username="qp", full_name="Quentin Parr", roles=("qp",))
P, AP, AC, PA, CE, RS = (
    SiteStatus.PROPOSED,
    SiteStatus.APPROVED,
    SiteStatus.ACTIVE,
    SiteStatus.PAUSED,
    SiteStatus.CEASED,
    SiteStatus.REGULATOR_SUSPENDED,
)
# legal routes from proposed to each status
ROUTE = {P: [], AP: [AP], AC: [AP, AC], PA: [AP, AC, PA], CE: [AP, AC, CE]}


def refused(app: App, error: type[DomainError], use_case: Callable[[UnitOfWork], Any]) -> Any:
    with pytest.raises(error) as info, app.uow() as uow:
        use_case(uow)
    return info.value


def trail(app: App, entity_type: str, entity_id: str) -> list[AuditEntry]:
    with app.uow() as uow:
        return audit_trail(uow, entity_type, entity_id)


def new_site(app: App, code: str = "GSTT", status: SiteStatus = P) -> Site:
    with app.uow() as uow:
        site = app.network.create_site(
            uow, BOOT, code=code, name=f"{code} pharmacy", kind="hospital_pharmacy"
        )
    for target in ROUTE[status]:
        move(app, site.id, target)
    return site


def move(
    app: App,
    site_id: str,
    target: SiteStatus,
    *,
    reason: str = "inspection passed",
    ref: str | None = None,
    actor: Actor = QP,
) -> Site:
    with app.uow() as uow:
        return app.network.transition_site(
            uow, actor, site_id, target, reason=reason, regulatory_reference=ref
        )


def status_of(app: App, site_id: str) -> str:
    with app.uow() as uow:
        return app.network.get_site(uow, site_id).status


def new_machine(app: App, site_id: str, *, actor: Actor = BOOT, **changes: str) -> Machine:
    data = {
        "name": "printer A",
        "machine_type": "tablet_printer",
        "firmware": "fw 2.4.1",
        "serial_number": "PR-0001",
        **changes,
    }
    with app.uow() as uow:
        return app.network.register_machine(uow, actor, site_id=site_id, **data)


def new_site_as(app: App, actor: Actor, code: str, kind: str = "clinic") -> Site:
    with app.uow() as uow:
        return app.network.create_site(uow, actor, code=code, name=code, kind=kind)


def fails(error: type[DomainError], step: Callable[[], Any]) -> Any:
    with pytest.raises(error) as info:
        step()
    return info.value


# --- sites -----------------------------------------------------------------------------------
def test_site_lifecycle_writes_one_audit_row_per_transition(app: App, clock: ManualClock) -> None:
    site = new_site(app)
    assert site.status == "proposed"
    steps = [
        (AP, "inspection passed"),
        (AC, "site opened"),
        (PA, "staff shortage"),
        (AC, "staff back"),
        (CE, "service moved"),
    ]
    for target, reason in steps:
        clock.advance(60)
        assert move(app, site.id, target, reason=reason).status == target.value
    created, *moves = trail(app, "site", site.id)
    assert created.action == "create" and created.new is not None
    assert created.new["status"] == "proposed" and created.site_id == site.id
    assert [(e.old, e.new, e.reason) for e in moves] == [
        ({"status": old.value}, {"status": new.value, "regulatory_reference": None}, reason)
        for old, (new, reason) in zip([P, AP, AC, PA, AC], steps, strict=True)
    ]
    assert all(e.action == "transition" and e.actor_id == QP.user_id for e in moves)
    assert [e.at for e in moves] == sorted({e.at for e in moves})  # each at its own time


def test_illegal_site_transitions_are_refused_and_not_audited(app: App) -> None:
    cases = [(P, AC), (P, PA), (AP, PA), (AC, AP), (PA, P), (CE, AC), (CE, AP), (AC, AC)]
    for index, (start, target) in enumerate(cases):
        site = new_site(app, code=f"S{index}", status=start)
        before = len(trail(app, "site", site.id))
        error = fails(InvalidTransition, lambda s=site, t=target: move(app, s.id, t))
        assert error.field == "status"
        assert f"from {start.value} to {target.value}" in error.message
        assert status_of(app, site.id) == start.value
        assert len(trail(app, "site", site.id)) == before


def test_regulator_suspension_from_any_open_status_needs_a_reference(app: App) -> None:
    for index, start in enumerate([P, AP, AC, PA]):
        site = new_site(app, code=f"S{index}", status=start)
        before = len(trail(app, "site", site.id))
        for ref in (None, "  "):
            error = fails(ValidationFailed, lambda s=site, r=ref: move(app, s.id, RS, ref=r))
            assert error.field == "regulatory_reference"
        assert status_of(app, site.id) == start.value
        assert len(trail(app, "site", site.id)) == before
        suspended = move(app, site.id, RS, reason="inspection finding", ref="MHRA-2026-001")
        assert suspended.regulatory_reference == "MHRA-2026-001"
        last = trail(app, "site", site.id)[-1]
        assert last.old == {"status": start.value}
        assert last.new == {"status": RS.value, "regulatory_reference": "MHRA-2026-001"}


def test_leaving_suspension_needs_a_new_reference_and_goes_only_to_paused_or_ceased(
    app: App,
) -> None:
    site = new_site(app, status=AC)
    move(app, site.id, RS, ref="MHRA-2026-001")
    fails(InvalidTransition, lambda: move(app, site.id, AC, ref="MHRA-2026-014"))
    error = fails(ValidationFailed, lambda: move(app, site.id, PA))
    assert error.field == "regulatory_reference" and status_of(app, site.id) == RS.value
    paused = move(app, site.id, PA, reason="suspension lifted", ref="MHRA-2026-014")
    assert paused.regulatory_reference == "MHRA-2026-014"
    last = trail(app, "site", site.id)[-1]
    assert (last.old, last.reason) == ({"status": "regulator_suspended"}, "suspension lifted")
    assert last.new == {"status": "paused", "regulatory_reference": "MHRA-2026-014"}
    assert move(app, site.id, AC, reason="reopened").status == "active"


def test_a_ceased_site_never_becomes_active_again(app: App) -> None:
    site = new_site(app, status=CE)
    with pytest.raises(InvalidTransition):
        move(app, site.id, RS, ref="MHRA-2026-001")
        move(app, site.id, PA, ref="MHRA-2026-002")
        move(app, site.id, AC)
    assert status_of(app, site.id) == "ceased"


def test_site_changes_need_a_reason_and_the_right_role_and_valid_input(app: App) -> None:
    site = new_site(app)
    assert fails(ValidationFailed, lambda: move(app, site.id, AP, reason="   ")).field == "reason"
    fails(Forbidden, lambda: move(app, site.id, AP, actor=OPERATOR))
    assert status_of(app, site.id) == "proposed" and len(trail(app, "site", site.id)) == 1
    assert (
        fails(ValidationFailed, lambda: new_site_as(app, BOOT, "X1", "spaceship")).field == "kind"
    )
    assert fails(Conflict, lambda: new_site_as(app, BOOT, "GSTT")).field == "code"
    fails(Forbidden, lambda: new_site_as(app, QP, "X2"))
    with app.uow() as uow:
        assert [s.code for s in app.network.list_sites(uow)] == ["GSTT"]


# --- machines, qualification, training -------------------------------------------------------
def test_machine_registration_is_validated_and_audited(app: App) -> None:
    site = new_site(app, status=AC)
    machine = new_machine(app, site.id)
    assert (machine.site_id, machine.status, machine.adapter) == (site.id, "available", "simulated")
    [entry] = trail(app, "machine", machine.id)
    assert entry.action == "create" and entry.site_id == site.id and entry.new is not None
    assert entry.new["firmware"] == "fw 2.4.1" and entry.new["serial_number"] == "PR-0001"
    error = fails(ValidationFailed, lambda: new_machine(app, site.id, firmware=" "))
    assert error.field == "firmware"
    assert fails(NotFound, lambda: new_machine(app, "NOWHERE")).field == "site_id"
    fails(Forbidden, lambda: new_machine(app, site.id, actor=QP))
    with app.uow() as uow:
        assert [m.id for m in app.network.list_machines(uow, site.id)] == [machine.id]
        app.network.set_machine_status(uow, BOOT, machine.id, "retired", reason="end of life")
    refused(
        app,
        InvalidTransition,
        lambda uow: app.network.set_machine_status(
            uow, BOOT, machine.id, "available", reason="revive"
        ),
    )


def test_qualification_is_per_master_file_code_and_lapses(app: App, clock: ManualClock) -> None:
    machine = new_machine(app, new_site(app, status=AC).id)
    now = clock.now()

    def qualify(code: str, valid_until: Any = None, actor: Actor = QP) -> None:
        with app.uow() as uow:
            app.network.qualify_machine(uow, actor, machine.id, code, valid_until=valid_until)

    def qualified(code: str) -> bool:
        with app.uow() as uow:
            return app.network.is_qualified(uow, machine.id, code)

    qualify("MF-HC")
    qualify("MF-OLD", now - timedelta(days=1))
    qualify("MF-PROP", now + timedelta(hours=1))
    assert (qualified("MF-HC"), qualified("MF-OLD"), qualified("MF-PROP")) == (True, False, True)
    assert not qualified("MF-OTHER")
    with pytest.raises(Forbidden):
        qualify("MF-OTHER", actor=OPERATOR)
    clock.advance(2 * 3600)
    assert not qualified("MF-PROP")
    with app.uow() as uow:
        assert app.network.qualified_codes(uow, machine.id) == ["MF-HC"]
    qualify("MF-OLD", now + timedelta(days=365))  # requalified: the row is updated, audited
    assert qualified("MF-OLD")
    last = trail(app, "machine", machine.id)[-1]
    assert last.action == "update" and last.old == {
        "valid_until": (now - timedelta(days=1)).isoformat(),
        "revoked": False,
    }
    assert last.new == {
        "qualified_for": "MF-OLD",
        "valid_until": (now + timedelta(days=365)).isoformat(),
    }


def test_training_is_per_master_file_code_and_lapses(
    app: App, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = new_site(app, status=AC)
    with app.uow() as uow:
        user = app.users.create_user(
            uow,
            BOOT,
            username="olu",
            full_name="Olu Operator",
            roles=["operator"],
            password="a-long-secret-42",
            home_site_id=site.id,
        )

    def trained(code: str) -> bool:
        with app.uow() as uow:
            return app.network.is_trained(uow, user.id, code)

    with app.uow() as uow:
        app.network.record_training(
            uow, QP, user.id, "MF-HC", valid_until=clock.now() + timedelta(days=30)
        )
    assert trained("MF-HC") and not trained("MF-PROP")
    entry = trail(app, "user", user.id)[-1]
    assert entry.action == "create" and entry.site_id == site.id and entry.new is not None
    assert entry.new["trained_on"] == "MF-HC" and entry.actor_id == QP.user_id
    refused(app, Forbidden, lambda uow: app.network.record_training(uow, OPERATOR, user.id, "X"))
    refused(app, NotFound, lambda uow: app.network.record_training(uow, QP, "usr_NOBODY", "X"))
    with app.uow() as uow:
        assert [u.username for u in app.network.operators_at(uow, site.id)] == ["olu"]
    clock.advance(31 * 86400)
    assert not trained("MF-HC")
