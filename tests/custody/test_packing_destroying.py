"""Packing into shipping containers (EPCIS AggregationEvent with an SSCC parent) and unpacking
on receipt; destroying rejected, recalled or expired packs (the `destroyed` state, and what
verification and dispensing answer for it); a recall marks the material lot itself recalled.
Service level on SQLite and PostgreSQL, plus the HTTP routes and CLI commands."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from typer.testing import CliRunner

from nearfab.api.custody import router
from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Forbidden, NotFound, Refused, ValidationFailed
from nearfab.custody import (
    Container,
    CustodyAlert,
    CustodyChain,
    LedgerEntry,
    SerialUnit,
    VerifyStatus,
)
from nearfab.identity import AuditEntry
from nearfab.web.server import create_web_app

flushed_verification_log = ch.flushed_verification_log
DAY = 86_400


@dataclass(frozen=True)
class Made:
    """The batches of the world every test starts from (`_made`), by id."""

    waiting: str  # made, not yet released (its packs in quarantine)
    released: str  # released: the packs a test packs, ships, dispenses or recalls
    stock: str  # released after `released`: expires no later than it
    rejected: str  # rejected by the QP


def _made(app: App) -> Made:
    """The batches the tests used to make in their own bodies, made once per backend and
    worker (flow_helpers.world_fixture), in the order the tests made them: a batch awaiting
    release, two released, one rejected. Each test gets its own copy of the database."""
    waiting = fh.make_batch(app)
    released, _ = ch.released_batch(app)
    stock, _ = ch.released_batch(app)
    rejected = fh.make_batch(app)
    fh.reject(app, rejected)
    return Made(waiting=waiting, released=released, stock=stock, rejected=rejected)


world = fh.world_fixture(_made)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    """The test's own copy of the demo network with `_made`'s batches in it."""
    return world.app


@pytest.fixture
def made(world: fh.Built) -> Made:
    return world.data  # type: ignore[no-any-return]


@pytest.fixture
def chain(seeded: App) -> CustodyChain:
    return ch.chain(seeded)


def _check_digit(body: str) -> str:
    """GS1 mod-10, written out again here so the test does not trust the code under test."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def _events(chain: CustodyChain, app: App, epc: str) -> list[dict[str, Any]]:
    with app.uow() as uow:
        return chain.epcis.query(uow, epc=epc)


def _status(app: App, unit_id: str) -> str:
    with app.uow() as uow:
        unit = uow.session.get(SerialUnit, unit_id)
        assert unit is not None
        return unit.status


def _pack(app: App, unit_ids: list[str], to: str = "MAN-PH", who: str = "pharmacist") -> Container:
    with app.uow() as uow:
        return app.custody.pack(
            uow, fh.actor(app, who), unit_ids=unit_ids, to_site_id=fh.site_id(app, to)
        )


def _unpack(app: App, sscc: str, at: str | None = None, who: str = "operator-man") -> Container:
    """Unpacking is done by the staff of the site the container was packed for (MAN-PH)."""
    with app.uow() as uow:
        return app.custody.unpack(
            uow,
            fh.actor(app, who),
            sscc=sscc,
            at_site_id=fh.site_id(app, at) if at else None,
        )


def _destroy(
    app: App, units: list[SerialUnit], reason: str = "expired stock", who: str = "qp"
) -> Any:
    with app.uow() as uow:
        return app.custody.destroy(
            uow,
            fh.actor(app, who),
            unit_ids=[u.id for u in units],
            site_id=fh.site_id(app, "GSTT-PH"),
            reason=reason,
        )


def _ledger_refs(app: App) -> set[str]:
    with app.uow() as uow:
        return set(uow.session.scalars(select(LedgerEntry.ref)))


# --- packing ---------------------------------------------------------------------------------
def test_packing_makes_an_sscc_container_and_an_aggregation_event(
    seeded: App, chain: CustodyChain, made: Made
) -> None:
    batch_id, packs = made.released, ch.units(seeded, made.released)
    before = _ledger_refs(seeded)
    container = _pack(seeded, [u.id for u in packs])
    sscc = container.sscc
    assert len(sscc) == 18 and sscc.isdigit()
    assert sscc.startswith("0" + chain.epcis.company_prefix)
    assert sscc[17] == _check_digit(sscc[:17])
    assert container.status == "packed"
    assert container.from_site_id == fh.batch(seeded, batch_id).site_id
    assert container.to_site_id == fh.site_id(seeded, "MAN-PH")
    (event,) = _events(chain, seeded, f"https://id.gs1.org/00/{sscc}")
    assert (event["type"], event["action"], event["bizStep"]) == (
        "AggregationEvent",
        "ADD",
        "packing",
    )
    assert event["parentID"] == f"https://id.gs1.org/00/{sscc}"
    assert sorted(event["childEPCs"]) == sorted(
        f"https://id.gs1.org/01/{u.gtin}/21/{u.serial}" for u in packs
    )
    assert event["disposition"] == "container_closed"
    with seeded.uow() as uow:
        man = chain.epcis.sgln(uow, fh.site_id(seeded, "MAN-PH"))
    assert event["destinationList"] == [{"type": "location", "destination": man}]
    # a pack's own history names the container event too
    assert "packing" in {
        e["bizStep"]
        for e in _events(
            chain, seeded, f"https://id.gs1.org/01/{packs[0].gtin}/21/{packs[0].serial}"
        )
    }
    # chained in the making site's ledger, audited
    added = _ledger_refs(seeded) - before
    assert len(added) == 1
    with seeded.uow() as uow:
        assert chain.ledger.verify(uow).ok
        trail = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "container")
        ).all()
    assert [(a.action, a.entity_id) for a in trail] == [("create", sscc)]


def test_packing_refuses_what_may_not_be_shipped(
    seeded: App, chain: CustodyChain, made: Made
) -> None:
    packs = ch.units(seeded, made.released)
    quarantined = ch.units(seeded, made.waiting)[0]
    with pytest.raises(Refused) as exc:
        _pack(seeded, [quarantined.id])
    assert exc.value.code == "not_released"
    fh.assert_refusal_audited(seeded, exc.value, "container", quarantined.id)
    _pack(seeded, [packs[0].id])
    with pytest.raises(Refused) as exc:
        _pack(seeded, [packs[0].id])
    assert exc.value.code == "already_packed"
    with pytest.raises(ValidationFailed):
        _pack(seeded, [])
    with pytest.raises(NotFound), seeded.uow() as uow:
        seeded.custody.pack(
            uow, fh.actor(seeded, "qp"), unit_ids=[packs[-1].id], to_site_id="site_nope"
        )
    with pytest.raises(Forbidden):
        _pack(seeded, [packs[-1].id], who="auditor")
    assert fh.count(seeded, Container) == 1


def test_unpacking_on_receipt(seeded: App, chain: CustodyChain, made: Made) -> None:
    packs = ch.units(seeded, made.released)
    sscc = _pack(seeded, [u.id for u in packs]).sscc
    with pytest.raises(Forbidden) as refused:  # another site's staff cannot receive it
        _unpack(seeded, sscc, who="pharmacist")
    assert refused.value.code == "other_site"
    with pytest.raises(Refused) as exc:
        _unpack(seeded, sscc, at="GSTT-PH")
    assert exc.value.code == "wrong_site"
    with pytest.raises(ValidationFailed):
        _unpack(seeded, sscc[:17] + str((int(sscc[17]) + 1) % 10))  # wrong check digit
    done = _unpack(seeded, sscc, at="MAN-PH")
    assert done.status == "unpacked" and done.unpacked_at is not None
    events = _events(chain, seeded, f"https://id.gs1.org/00/{sscc}")
    by_action = {e["action"]: e for e in events}
    assert set(by_action) == {"ADD", "DELETE"}
    delete = by_action["DELETE"]
    assert (delete["type"], delete["bizStep"]) == ("AggregationEvent", "unpacking")
    assert len(delete["childEPCs"]) == len(packs)
    with seeded.uow() as uow:
        assert delete["readPoint"]["id"] == chain.epcis.sgln(uow, fh.site_id(seeded, "MAN-PH"))
        assert chain.ledger.verify(uow).ok
    with pytest.raises(Refused) as exc:
        _unpack(seeded, sscc)
    assert exc.value.code == "not_packed"
    # out of the container, the packs can be packed again
    assert _pack(seeded, [packs[0].id], to="GSTT-PH").sscc != sscc


# --- destroying ------------------------------------------------------------------------------
def test_rejected_and_recalled_packs_are_destroyed(
    seeded: App, chain: CustodyChain, made: Made
) -> None:
    rejected = ch.units(seeded, made.rejected)
    with pytest.raises(ValidationFailed):
        _destroy(seeded, rejected, reason="  ")
    with pytest.raises(Forbidden):
        _destroy(seeded, rejected, who="operator")
    before = _ledger_refs(seeded)
    event = _destroy(seeded, rejected, reason="rejected batch, incinerated")
    assert {_status(seeded, u.id) for u in rejected} == {"destroyed"}
    assert (event.action, event.biz_step, event.disposition) == (
        "DELETE",
        "destroying",
        "destroyed",
    )
    assert len(_ledger_refs(seeded) - before) == 1
    with seeded.uow() as uow:
        transitions = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "unit",
                AuditEntry.entity_id == rejected[0].id,
                AuditEntry.action == "transition",
            )
        ).all()
        assert transitions[-1].new == {"status": "destroyed"}
        assert chain.ledger.verify(uow).ok
    with pytest.raises(Refused) as exc:
        _destroy(seeded, rejected[:1])
    assert exc.value.code == "destroyed"
    # recalled
    batch_id, packs = made.released, ch.units(seeded, made.released)
    with seeded.uow() as uow:
        chain.recalls.create(
            uow, fh.actor(seeded, "qp"), lot=fh.batch(seeded, batch_id).material_lot_number,
            reason="assay",
        )  # fmt: skip
    _destroy(seeded, packs[:1], who="pharmacist")
    assert _status(seeded, packs[0].id) == "destroyed"


def test_released_packs_in_date_and_dispensed_packs_are_not_destroyed(
    seeded: App, chain: CustodyChain, clock: ManualClock, made: Made
) -> None:
    packs, stock = ch.units(seeded, made.released), ch.units(seeded, made.stock)
    with pytest.raises(Refused) as exc:
        _destroy(seeded, packs[:1])
    assert exc.value.code == "not_destroyable"
    fh.assert_refusal_audited(seeded, exc.value, "destruction", packs[0].id)
    ch.dispense(seeded, packs[0])
    clock.advance(((packs[0].expiry - clock.now().date()).days + 1) * DAY)
    with pytest.raises(Refused) as exc:
        _destroy(seeded, packs[:1])  # dispensed, even though now expired
    assert exc.value.code == "not_destroyable"
    assert _status(seeded, packs[0].id) == "dispensed"
    # a released pack past its expiry may be destroyed
    assert stock[0].expiry < clock.now().date()
    _destroy(seeded, stock[:1])
    assert _status(seeded, stock[0].id) == "destroyed"


def test_verification_and_dispense_of_a_destroyed_pack(
    seeded: App, chain: CustodyChain, made: Made
) -> None:
    rejected_batch = made.rejected
    unit = ch.units(seeded, rejected_batch)[0]
    _destroy(seeded, [unit])
    with seeded.uow() as uow:
        answer = seeded.custody.verify(uow, fh.actor(seeded, "pharmacist"), scan=ch.scan(unit))
    assert answer.status == VerifyStatus.UNKNOWN
    assert answer.unit_status == "destroyed" and "destroyed" in answer.message
    assert answer.alert_id
    with pytest.raises(Refused) as exc:
        ch.dispense(seeded, unit)
    assert exc.value.code == "destroyed"
    with seeded.uow() as uow:
        kinds = [
            (a.kind, a.unit_id)
            for a in uow.session.scalars(select(CustodyAlert).order_by(CustodyAlert.raised_at))
        ]
    assert kinds == [("suspected_falsified", unit.id)] * 2
    # a destroyed pack is not recalled again, nor put back
    with seeded.uow() as uow:
        chain.recalls.create(
            uow, fh.actor(seeded, "qp"), lot=fh.batch(seeded, rejected_batch).material_lot_number,
            reason="lot recall",
        )  # fmt: skip
    assert _status(seeded, unit.id) == "destroyed"


# --- recall of the material lot ---------------------------------------------------------------
def _lot(app: App, batch_id: str) -> Any:
    with app.uow() as uow:
        lot = app.materials.get(uow, fh.batch(app, batch_id).material_lot_id)
        uow.session.expunge(lot)
        return lot


def test_a_recall_marks_the_material_lot_recalled(
    seeded: App, chain: CustodyChain, made: Made
) -> None:
    waiting = made.waiting  # made, not yet released
    batch_id = made.released
    lot = _lot(seeded, batch_id)
    assert lot.status == "approved"
    with seeded.uow() as uow:
        chain.recalls.create(uow, fh.actor(seeded, "qp"), lot=lot.lot_number, reason="assay")
    assert _lot(seeded, batch_id).status == "recalled"
    with seeded.uow() as uow:
        trail = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "material_lot", AuditEntry.entity_id == lot.id
            )
        ).all()
    assert trail[-1].new == {"status": "recalled"} and "assay" in (trail[-1].reason or "")
    assert trail[-1].actor_id == fh.actor(seeded, "qp").user_id
    # no new batch may use it
    with seeded.uow() as uow, pytest.raises(Refused) as exc:
        seeded.materials.consume(uow, fh.actor(seeded, "operator"), lot.id, 1.0, batch_id="b")
    assert exc.value.code == "lot_not_usable"
    # and a batch made from it before the recall is not released
    if fh.batch(seeded, waiting).material_lot_id == lot.id:
        with pytest.raises(Refused) as exc:
            fh.release(seeded, waiting)
        assert exc.value.code == "lot_not_releasable"
    # a second recall of the lot leaves it recalled
    with seeded.uow() as uow:
        chain.recalls.create(uow, fh.actor(seeded, "admin"), lot=lot.lot_number, reason="again")
    assert _lot(seeded, batch_id).status == "recalled"


def test_an_admins_recall_marks_the_lot_as_the_recall_component(
    seeded: App, chain: CustodyChain, made: Made
) -> None:
    batch_id = made.released
    lot = _lot(seeded, batch_id)
    with seeded.uow() as uow:
        recall = chain.recalls.create(
            uow, fh.actor(seeded, "admin"), lot=lot.lot_number, reason="supplier notice"
        )
    assert _lot(seeded, batch_id).status == "recalled"
    with seeded.uow() as uow:
        last = uow.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.entity_type == "material_lot", AuditEntry.entity_id == lot.id)
            .order_by(AuditEntry.id.desc())
        ).first()
    assert last is not None and last.actor_id == "system:recall"
    assert recall.id in (last.reason or "") and "admin" in (last.reason or "")


# --- HTTP and CLI ------------------------------------------------------------------------------
def _auth(client: TestClient, username: str) -> dict[str, str]:
    res = client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    )
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_pack_unpack_and_destroy_over_http(seeded: App, made: Made) -> None:
    web = create_web_app(seeded)
    if not any(getattr(r, "path", "") == "/api/v1/containers" for r in web.routes):
        web.include_router(router)
    ch.chain(seeded)
    client = TestClient(web)
    ph, qp = _auth(client, "pharmacist"), _auth(client, "qp")
    packs = ch.units(seeded, made.released)
    body = {"unit_ids": [u.id for u in packs], "to_site_id": "MAN-PH"}
    packed = client.post("/api/v1/containers", json=body, headers=ph)
    assert packed.status_code == 201, packed.text
    sscc = packed.json()["sscc"]
    assert packed.json()["digital_link"] == f"https://id.gs1.org/00/{sscc}"
    assert {u["unit_id"] for u in packed.json()["units"]} == {u.id for u in packs}
    again = client.post("/api/v1/containers", json=body, headers=ph)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_packed"
    done = client.post(
        f"/api/v1/containers/{sscc}/unpack",
        json={"at_site_id": "MAN-PH"},
        headers=_auth(client, "operator-man"),  # the receiving site's staff
    )
    assert done.status_code == 200 and done.json()["status"] == "unpacked"
    rejected = ch.units(seeded, made.rejected)
    kill = {"unit_ids": [rejected[0].id], "site_id": "GSTT-PH", "reason": "rejected"}
    assert (
        client.post(
            "/api/v1/packs/destroy", json=kill, headers=_auth(client, "operator")
        ).status_code
        == 403
    )
    gone = client.post("/api/v1/packs/destroy", json=kill, headers=qp)
    assert gone.status_code == 200 and gone.json()["status"] == "destroyed"
    no_reason = client.post("/api/v1/packs/destroy", json=kill | {"reason": ""}, headers=qp)
    assert no_reason.status_code == 422
    assert _status(seeded, rejected[0].id) == "destroyed"


def test_pack_unpack_destroy_and_recall_from_the_cli(
    seeded: App, monkeypatch: pytest.MonkeyPatch, made: Made
) -> None:
    ch.chain(seeded)
    monkeypatch.setenv(
        "NEARFAB_DATABASE_URL", str(seeded.engine.url.render_as_string(hide_password=False))
    )
    # the CLI runs on the real clock; the seeded world set its passwords on the test's clock
    monkeypatch.setenv("NEARFAB_PASSWORD_MAX_AGE_DAYS", "3650")
    runner = CliRunner()
    base = ["--data-dir", str(seeded.settings.data_dir)]
    who = ["--user", "pharmacist", "--password", fh.TEST_PASSWORD]
    batch_id, packs = made.released, ch.units(seeded, made.released)
    res = runner.invoke(
        cli, [*base, "custody", "pack", *[u.id for u in packs], "--to", "MAN-PH", *who, "--json"]
    )
    assert res.exit_code == 0, res.output
    sscc = json.loads(res.stdout)["sscc"]
    assert sscc[17] == _check_digit(sscc[:17])
    receiver = ["--user", "operator-man", "--password", fh.TEST_PASSWORD]  # at MAN-PH
    res = runner.invoke(
        cli, [*base, "custody", "unpack", sscc, "--at", "MAN-PH", *receiver, "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["status"] == "unpacked"
    rejected = ch.units(seeded, made.rejected)
    args = [*base, "custody", "destroy", rejected[0].id, "--site", "GSTT-PH", *who]
    refused = runner.invoke(cli, [*args, "--reason", " "])
    assert refused.exit_code == 2
    res = runner.invoke(cli, [*args, "--reason", "rejected batch", "--json"])
    assert res.exit_code == 0, res.output
    assert _status(seeded, rejected[0].id) == "destroyed"
    lot = _lot(seeded, batch_id)
    res = runner.invoke(cli, [*base, "recall", "create", "--lot", lot.lot_number, "--reason", "x"])
    assert res.exit_code == 0, res.output
    assert _lot(seeded, batch_id).status == "recalled"


def test_a_pack_still_in_a_container_is_not_dispensed_until_received(
    seeded: App, chain: CustodyChain, made: Made
) -> None:
    packs = ch.units(seeded, made.released)
    sscc = _pack(seeded, [u.id for u in packs]).sscc
    with pytest.raises(Refused) as exc:
        ch.dispense(seeded, packs[0])
    assert exc.value.code == "in_container" and sscc in exc.value.message
    _unpack(seeded, sscc, at="MAN-PH")
    assert ch.dispense(seeded, packs[0]) is not None
