"""Master-file services on both databases: draft validation, versions, QP approval, lifecycle."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from nearfab.bootstrap import App
from nearfab.common.errors import (
    DomainError,
    Forbidden,
    InvalidTransition,
    NotFound,
    Refused,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.demo import SNOMED, hydrocortisone_master_file
from nearfab.identity import (
    Actor,
    AuditEntry,
    Signature,
    actor_of,
    audit_trail,
    record_hash,
    system_actor,
)
from nearfab.masterfiles import MasterFile
from nearfab.uow import UnitOfWork

BOOT = system_actor("test-admin")
PASSWORD = "a-long-secret-42"
HC_SNOMED = (SNOMED, "396458002")


@dataclass(frozen=True)
class World:
    site_id: str
    qp: Actor
    pharmacist: Actor


@pytest.fixture
def world(app: App, monkeypatch: pytest.MonkeyPatch) -> World:
    """One site, a QP and a pharmacist (cheap argon2: only the speed differs). The control
    site: master files are network records, changed by its staff only (a site QP is refused,
    tests/identity/test_network_level_attacks.py)."""
    with app.uow() as uow:
        site = app.network.create_site(uow, BOOT, code="GSTT", name="GSTT", kind="control")
    people = {}
    for username, role in (("qp", "qp"), ("pharmacist", "pharmacist")):
        with app.uow() as uow:
            people[username] = actor_of(
                app.users.create_user(
                    uow,
                    BOOT,
                    username=username,
                    full_name=f"{username.title()} Person",
                    roles=[role],
                    password=PASSWORD,
                    home_site_id=site.id,
                ),
                uow.session,
            )
    return World(site.id, people["qp"], people["pharmacist"])


def spec(world: World, code: str = "MF-TEST", **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(hydrocortisone_master_file([world.site_id]))
    return {**data, "code": code, **changes}


def refused(app: App, error: type[DomainError], use_case: Callable[[UnitOfWork], Any]) -> Any:
    with pytest.raises(error) as info, app.uow() as uow:
        use_case(uow)
    return info.value


def draft(app: App, world: World, data: dict[str, Any] | None = None) -> MasterFile:
    with app.uow() as uow:
        return app.master_files.draft(uow, world.qp, data or spec(world))


def approve(app: App, world: World, mf: MasterFile) -> MasterFile:
    with app.uow() as uow:
        return app.master_files.approve(uow, world.qp, mf.id, password=PASSWORD)


def make_effective(app: App, world: World, mf: MasterFile) -> MasterFile:
    with app.uow() as uow:
        return app.master_files.make_effective(uow, world.qp, mf.id)


def reload(app: App, mf: MasterFile) -> MasterFile:
    with app.uow() as uow:
        return app.master_files.get(uow, mf.id)


def approval_valid(app: App, mf: MasterFile) -> bool:
    with app.uow() as uow:
        return app.master_files.approval_is_valid(uow, app.master_files.get(uow, mf.id))


def trail(app: App, mf: MasterFile) -> list[AuditEntry]:
    with app.uow() as uow:
        return audit_trail(uow, "master_file", mf.id)


def count(app: App, model: type[Any]) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["design_envelope"].pop(key)


def test_draft_validation_errors_name_the_field(app: App, world: World) -> None:
    def set_param(d: dict[str, Any]) -> None:
        d["process_parameters"]["nozzle_temperature_c"].update(low=185.0, high=175.0)

    cases: list[tuple[Callable[[dict[str, Any]], Any], type[DomainError], str]] = [
        (lambda d: d.update(gtin="09506000134353"), ValidationFailed, "master_file.gtin"),
        (lambda d: d.update(gtin="0950600013435"), ValidationFailed, "master_file.gtin"),
        (lambda d: d.update(accepted_codes=[]), ValidationFailed, "master_file.accepted_codes"),
        (set_param, ValidationFailed, "master_file.process_parameters.nozzle_temperature_c.high"),
        (
            lambda d: d.update(process_parameters={}),
            ValidationFailed,
            "master_file.process_parameters",
        ),
        (lambda d: d.update(shelf_life_days=0), ValidationFailed, "master_file.shelf_life_days"),
        (lambda d: d.update(allowed_site_ids=[]), ValidationFailed, "master_file.allowed_site_ids"),
        (lambda d: d.update(allowed_site_ids=["NOWHERE"]), NotFound, "site_id"),
        (lambda d: d.update(product_family="gummy"), ValidationFailed, "product_family"),
        (_without("dose_mg"), ValidationFailed, "design_envelope.dose_mg"),
        (_without("drug_loading"), ValidationFailed, "design_envelope.drug_loading"),
        (_without("units"), ValidationFailed, "design_envelope.units"),
        (
            lambda d: d["design_envelope"].update(drug_loading=1.5),
            ValidationFailed,
            "design_envelope.drug_loading",
        ),
    ]
    for index, (change, error_type, field) in enumerate(cases):
        data = spec(world)
        change(data)
        error = refused(
            app, error_type, lambda uow, d=data: app.master_files.draft(uow, world.qp, d)
        )
        assert error.field == field, index
        assert error.message, index
    assert count(app, MasterFile) == 0
    with app.uow() as uow:
        assert (
            uow.session.scalar(
                select(func.count())
                .where(AuditEntry.entity_type == "master_file")
                .select_from(AuditEntry)
            )
            == 0
        )
    refused(app, Forbidden, lambda uow: app.master_files.draft(uow, world.pharmacist, spec(world)))


def test_drafts_are_versioned_per_code_and_audited(app: App, world: World) -> None:
    first, second = draft(app, world), draft(app, world)
    other = draft(app, world, spec(world, code="MF-OTHER"))
    assert [(m.code, m.version, m.status) for m in (first, second, other)] == [
        ("MF-TEST", 1, "draft"),
        ("MF-TEST", 2, "draft"),
        ("MF-OTHER", 1, "draft"),
    ]
    assert second.created_by == world.qp.user_id and second.gtin == "09506000134352"
    [entry] = trail(app, second)
    assert entry.action == "create" and entry.new == reload(app, second).content()
    assert not approval_valid(app, second)  # a draft carries no approval


def test_approval_needs_a_qp_and_their_password_and_signs_the_content(
    app: App, world: World
) -> None:
    mf = draft(app, world)
    refused(
        app,
        Forbidden,
        lambda uow: app.master_files.approve(uow, world.pharmacist, mf.id, password=PASSWORD),
    )
    refused(
        app,
        Unauthenticated,
        lambda uow: app.master_files.approve(uow, world.qp, mf.id, password="not-my-password"),
    )
    assert reload(app, mf).status == "draft" and count(app, Signature) == 0
    # the failed signing attempt is on record (the forbidden one never reached the record)
    assert [e.action for e in trail(app, mf)] == ["create", "refuse"]
    assert "password" in (trail(app, mf)[-1].reason or "")

    approved = approve(app, world, mf)
    assert approved.status == "approved" and approved.approved_at is not None
    with app.uow() as uow:
        [sig] = app.signatures.signatures_for(uow, "master_file", mf.id)
    assert sig.id == approved.approval_signature_id and sig.signer_id == world.qp.user_id
    assert sig.meaning == "QP approval of master file"
    assert sig.record_hash == record_hash(reload(app, mf).content())
    _create, _refused, transition, signed = trail(app, mf)
    assert (transition.action, transition.old, transition.new) == (
        "transition",
        {"status": "draft"},
        {"status": "approved"},
    )
    assert signed.action == "sign" and signed.new is not None
    assert signed.new["record_hash"] == sig.record_hash
    assert approval_valid(app, mf)
    refused(
        app,
        InvalidTransition,
        lambda uow: app.master_files.approve(uow, world.qp, mf.id, password=PASSWORD),
    )


@pytest.mark.parametrize(
    "alteration",
    [
        {"shelf_life_days": 365},
        {"storage": "Store anywhere."},
        {"allowed_site_ids": ["site_ELSEWHERE"]},
    ],
)
def test_content_altered_in_the_database_voids_the_approval(
    app: App, world: World, alteration: dict[str, Any]
) -> None:
    mf = approve(app, world, draft(app, world))
    assert approval_valid(app, mf)
    with app.uow() as uow:
        stored = uow.session.get(MasterFile, mf.id)
        original = {key: copy.deepcopy(getattr(stored, key)) for key in alteration}
        for key, value in alteration.items():
            setattr(stored, key, value)
        uow.commit()
    assert not approval_valid(app, mf)
    with app.uow() as uow:  # put it back: the signature matches again
        stored = uow.session.get(MasterFile, mf.id)
        for key, value in original.items():
            setattr(stored, key, value)
        stored.effective_from = uow.clock.now()  # not part of the signed content
        uow.commit()
    assert approval_valid(app, mf)


def test_make_effective_supersedes_the_previous_version(app: App, world: World) -> None:
    v1 = make_effective(app, world, approve(app, world, draft(app, world)))
    v2 = approve(app, world, draft(app, world, spec(world, shelf_life_days=60)))
    with app.uow() as uow:
        assert app.master_files.effective_for_code(uow, "MF-TEST").id == v1.id
    v3 = draft(app, world)
    refused(
        app, InvalidTransition, lambda uow: app.master_files.make_effective(uow, world.qp, v3.id)
    )  # an unapproved draft: the effective version stays
    assert reload(app, v1).status == "effective"
    v2 = make_effective(app, world, v2)
    assert v2.status == "effective" and v2.effective_from is not None
    assert reload(app, v1).status == "superseded"
    last = trail(app, v1)[-1]
    assert (last.old, last.new, last.reason) == (
        {"status": "effective"},
        {"status": "superseded"},
        "superseded by version 2",
    )
    with app.uow() as uow:
        assert app.master_files.effective_for_code(uow, "MF-TEST").id == v2.id
        assert [m.id for m in app.master_files.accepting(uow, [HC_SNOMED])] == [v2.id]
        assert [m.version for m in app.master_files.effective(uow)] == [2]
    refused(
        app, InvalidTransition, lambda uow: app.master_files.make_effective(uow, world.qp, v1.id)
    )


def test_withdraw_needs_a_qp_and_a_reason(app: App, world: World) -> None:
    mf = make_effective(app, world, approve(app, world, draft(app, world)))
    for reason in ("", "   "):
        error = refused(
            app,
            ValidationFailed,
            lambda uow, r=reason: app.master_files.withdraw(uow, world.qp, mf.id, reason=r),
        )
        assert error.field == "reason"
    refused(
        app,
        Forbidden,
        lambda uow: app.master_files.withdraw(
            uow, world.pharmacist, mf.id, reason="not mine to withdraw"
        ),
    )
    assert reload(app, mf).status == "effective"
    with app.uow() as uow:
        app.master_files.withdraw(uow, world.qp, mf.id, reason="stability failure CAPA-7")
    last = trail(app, mf)[-1]
    assert (last.old, last.new, last.reason) == (
        {"status": "effective"},
        # the withdrawal names the version and the reason (what the control signs for the
        # site nodes: docs/replication.md)
        {
            "status": "withdrawn",
            "master_file_id": mf.id,
            "code": "MF-TEST",
            "version": 1,
            "reason": "stability failure CAPA-7",
        },
        "stability failure CAPA-7",
    )
    error = refused(app, Refused, lambda uow: app.master_files.effective_for_code(uow, "MF-TEST"))
    assert error.code == "no_effective_master_file"
    with app.uow() as uow:
        assert app.master_files.accepting(uow, [HC_SNOMED]) == []
    refused(
        app, InvalidTransition, lambda uow: app.master_files.make_effective(uow, world.qp, mf.id)
    )
