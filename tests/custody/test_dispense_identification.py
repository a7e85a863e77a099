"""Dispense and check-only verification with the patient identified as the hospital knows them
(issue 20): NHS number, hospital number (MRN), wristband GSRN (AI 8018) or plain NHS-number
barcode, prescription ID, and the birth date where the site requires it. The right pack is
handed over; another patient's pack is refused naming the identifier, never the patient; every
look-up is audited. Service, HTTP and command line, on SQLite and PostgreSQL.

Two patients, each with a released pack (built once per backend): Alice (NHS 943 476 5919) and
Bob (NHS 943 476 5870), both valid under the modulus-11 rule (tests/orders/
test_patient_identifiers.py works them by hand)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch
from tests.patient_helpers import ALICE, BOB, Person, require_birth_date, submit_for

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, Refused, ValidationFailed
from nearfab.custody import SerialUnit, VerifyStatus
from nearfab.identity import AuditEntry
from nearfab.orders import PresentedIdentifiers
from nearfab.web.server import create_web_app


def _build(app: App) -> dict[str, dict[str, str]]:
    out = {}
    for name, person in (("alice", ALICE), ("bob", BOB)):
        order_id = submit_for(app, person)
        batch_id = fh.start(app, fh.ticketed_job(app, order_id=order_id))
        fh.finish(app, batch_id)
        fh.prepare_release(app, batch_id)
        fh.release(app, batch_id)
        out[name] = {"order": order_id, "batch": batch_id}
    return out


world = fh.world_fixture(_build)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    app: App = world.app
    return app


flushed_verification_log = ch.flushed_verification_log


def _pack(world: fh.Built, name: str) -> SerialUnit:
    return ch.units(world.app, world.data[name]["batch"])[0]


def _dispense(app: App, unit: SerialUnit, username: str = "pharmacist", **presented: Any) -> Any:
    with app.uow() as uow:
        return app.custody.dispense(
            uow,
            fh.actor(app, username),
            scan=ch.scan(unit),
            patient=PresentedIdentifiers(**presented),
        )


def _refused(app: App, unit: SerialUnit, kind: type[DomainError] = Refused, **kw: Any) -> Any:
    with pytest.raises(kind) as caught:
        _dispense(app, unit, **kw)
    return caught.value


def _undo(app: App, unit: SerialUnit) -> None:
    with app.uow() as uow:
        app.custody.undo_dispense(
            uow, fh.actor(app, "pharmacist"), unit_id=unit.id, reason="handed back unopened"
        )


def _audits(app: App, after: int = 0) -> list[AuditEntry]:
    with app.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq)
            )
        )
        for r in rows:
            uow.session.expunge(r)
        return rows


def _last_seq(app: App) -> int:
    rows = _audits(app)
    return rows[-1].seq if rows else 0


def _no_identifier_in(rows: list[AuditEntry], *people: Person) -> None:
    text = repr([(r.new, r.old, r.reason, r.entity_id) for r in rows])
    for p in people:
        for secret in (p.nhs_number, p.mrn, p.gsrn, p.birth_date.isoformat(), p.name):
            assert secret not in text


# --- service ---------------------------------------------------------------------------------


def test_right_pack_by_each_identifier_and_other_patients_pack_refused(
    world: fh.Built,
) -> None:
    app = world.app
    alice, bob = _pack(world, "alice"), _pack(world, "bob")
    start = _last_seq(app)
    # Bob's pack, presented with each of Alice's identifiers: refused, naming the identifier
    for presented, field in [
        ({"nhs_number": ALICE.nhs_number}, "nhs_number"),
        ({"mrn": ALICE.mrn}, "mrn"),
        ({"wristband": f"]d28018{ALICE.gsrn}"}, "wristband"),
        ({"wristband": ALICE.nhs_number}, "wristband"),  # a plain NHS-number barcode
        # an NHS wristband's GSRN: company prefix 1234567, Alice's NHS number, check digit 9
        # (DCB1077; worked in tests/orders/test_patient_identifiers.py)
        ({"wristband": "(8018)123456794347659199"}, "wristband"),
        ({"prescription_id": ALICE.prescription_id}, "prescription_id"),
        ({"patient": "943 476 5919"}, "nhs_number"),
    ]:
        exc = _refused(app, bob, **presented)
        assert (exc.code, exc.field) == ("wrong_patient", field), presented
        assert "another patient" in exc.message
        for secret in (BOB.name, BOB.nhs_number, ALICE.name):
            assert secret not in exc.message
    refusals = [a for a in _audits(app, start) if a.entity_type == "dispense"]
    assert [(a.action, (a.new or {})["field"]) for a in refusals] == [
        ("refuse", f)
        for f in (
            "nhs_number",
            "mrn",
            "wristband",
            "wristband",
            "wristband",
            "prescription_id",
            "nhs_number",
        )
    ]
    # an NHS number that fails its check digit (9434765918: modulus 11 gives 9) is refused as
    # unreadable, before any look-up
    exc = _refused(app, alice, ValidationFailed, nhs_number="9434765918")
    assert exc.field == "nhs_number" and "modulus-11" in exc.message

    # Alice's pack with each of her identifiers: handed over (undone between, to try the next)
    for presented in [
        {"nhs_number": "943 476 5919"},
        {"mrn": "k123456"},
        {"wristband": f"(8018){ALICE.gsrn}"},
        {"wristband": f"]C0{ALICE.nhs_number}"},
        {"wristband": "]d28018123456794347659199"},
        {"prescription_id": ALICE.prescription_id},
        {"patient": f"]d28018{ALICE.gsrn}"},
    ]:
        done = _dispense(app, alice, **presented)
        assert done.unit.status == "dispensed"
        match = done.patient_match
        assert match.matched and match.identity == {
            "name": ALICE.name,
            "birth_date": ALICE.birth_date.isoformat(),
        }
        _undo(app, alice)
    looked_up = [a for a in _audits(app, start) if a.action == "identify_patient"]
    # the refusals' look-ups were rolled back with them (their refusal rows stand for them);
    # each dispense's look-up is committed with it
    assert [(a.new or {})["matched"] for a in looked_up] == [True] * 7
    assert {a.entity_id for a in looked_up} == {world.data["alice"]["order"]}
    _no_identifier_in(_audits(app, start), ALICE, BOB)


def test_site_requiring_the_birth_date_at_dispense(world: fh.Built) -> None:
    app = world.app
    alice = _pack(world, "alice")
    require_birth_date(app, "GSTT-PH")
    exc = _refused(app, alice, nhs_number=ALICE.nhs_number)
    assert (exc.code, exc.field) == ("birth_date_required", "birth_date")
    exc = _refused(app, alice, nhs_number=ALICE.nhs_number, birth_date=BOB.birth_date)
    assert (exc.code, exc.field) == ("wrong_patient", "birth_date")
    # the pseudonym alone is not enough either where the site requires the birth date
    ref = ch.patient_ref(app, alice)
    assert _refused(app, alice, patient_ref=ref).code == "birth_date_required"
    done = _dispense(app, alice, mrn=ALICE.mrn, birth_date=ALICE.birth_date)
    assert done.patient_match.checked == ("mrn", "birth_date")


def test_other_sites_pharmacist_and_the_old_pseudonym(world: fh.Built) -> None:
    app = world.app
    alice = _pack(world, "alice")
    fh.create_user(app, "pharm-man", ["pharmacist"], "MAN-PH")
    with pytest.raises(Forbidden):
        _dispense(app, alice, "pharm-man", nhs_number=ALICE.nhs_number)
    # nearfab's pseudonym still works, alone (as `patient_ref`, and typed in `patient`)
    assert _refused(app, alice, patient_ref="PT-NOTTHEM").field == "patient"
    with app.uow() as uow:
        done = app.custody.dispense(
            uow,
            fh.actor(app, "pharmacist"),
            scan=ch.scan(alice),
            patient_ref=ch.patient_ref(app, alice),
        )
    assert done.patient_match.checked == ("patient_ref",)


def test_check_only_with_identifiers(world: fh.Built) -> None:
    app = world.app
    alice = _pack(world, "alice")
    pharmacist = fh.actor(app, "pharmacist")

    def verify(**presented: Any) -> Any:
        with app.uow() as uow:
            return app.custody.verify(
                uow, pharmacist, scan=ch.scan(alice), patient=PresentedIdentifiers(**presented)
            )

    ok = verify(nhs_number=ALICE.nhs_number)
    assert ok.status == VerifyStatus.OK and ok.patient["identity"]["name"] == ALICE.name
    wrong = verify(wristband=f"(8018){BOB.gsrn}")
    assert wrong.status == VerifyStatus.WRONG_PATIENT and wrong.patient["failed"] == "wristband"
    assert "the wristband does not match" in wrong.message and BOB.name not in wrong.message
    app.custody.flush_verification_log()
    looked_up = [a for a in _audits(app) if a.action == "identify_patient"]
    assert [(a.new or {})["matched"] for a in looked_up] == [True, False]
    logged = [a for a in _audits(app) if a.action == "verify"]
    assert [(a.new or {}).get("patient_failed") for a in logged[-2:]] == [None, "wristband"]


# --- HTTP --------------------------------------------------------------------------------------


@pytest.fixture
def client(seeded: App) -> Iterator[TestClient]:
    ch.chain(seeded)
    with TestClient(create_web_app(seeded)) as test_client:
        yield test_client


OWN_PASSWORD = "manchester-pharmacy-77"


def _auth(client: TestClient, username: str, password: str = fh.TEST_PASSWORD) -> dict[str, str]:
    res = client.post("/api/v1/auth/token", json={"username": username, "password": password})
    assert res.status_code == 200, res.text
    return {"Authorization": f"Bearer {res.json()['access_token']}"}


def test_dispense_over_http_attacked(world: fh.Built, client: TestClient) -> None:
    app = world.app
    alice, bob = _pack(world, "alice"), _pack(world, "bob")
    ph = _auth(client, "pharmacist")
    fh.create_user(app, "pharm-man", ["pharmacist"], "MAN-PH")
    with app.uow() as uow:  # an administrator's password is temporary: the user sets their own
        app.users.change_password(uow, "pharm-man", fh.TEST_PASSWORD, OWN_PASSWORD)
    other_site = _auth(client, "pharm-man", OWN_PASSWORD)
    start = _last_seq(app)

    def post(unit: SerialUnit, headers: dict[str, str], **body: Any) -> Any:
        return client.post(
            "/api/v1/dispense", json={"scan": ch.scan(unit), **body}, headers=headers
        )

    # another site's pharmacist: refused before any look-up of the patient
    res = post(alice, other_site, nhs_number=ALICE.nhs_number)
    assert res.status_code == 403, res.text
    # the wrong patient: Bob's pack for Alice's identifiers
    for body, field in [
        ({"nhs_number": ALICE.nhs_number}, "nhs_number"),
        ({"mrn": ALICE.mrn}, "mrn"),
        ({"wristband": f"(8018){ALICE.gsrn}"}, "wristband"),
        ({"prescription_id": ALICE.prescription_id}, "prescription_id"),
    ]:
        res = post(bob, ph, **body)
        assert res.status_code == 409, res.text
        error = res.json()["error"]
        assert (error["code"], error["field"]) == ("wrong_patient", field)
        assert BOB.name not in res.text and BOB.nhs_number not in res.text
    # not an NHS number at all (check digit 8; modulus 11 gives 9)
    res = post(alice, ph, nhs_number="943 476 5918")
    assert res.status_code == 422 and res.json()["error"]["field"] == "nhs_number"
    # the wrong birth date where the site requires it (set by the network's admin), then none
    site_id = fh.site_id(app, "GSTT-PH")
    rule = {"birth_date_required": True, "reason": "trust policy: positive patient ID"}
    path = f"/api/v1/sites/{site_id}/patient-identification"
    assert client.post(path, json=rule, headers=ph).status_code == 403
    res = client.post(path, json=rule, headers=_auth(client, "admin"))
    assert res.status_code == 200, res.text
    assert res.json()["birth_date_required"] is True
    res = post(alice, ph, nhs_number=ALICE.nhs_number, birth_date=BOB.birth_date.isoformat())
    assert res.status_code == 409 and res.json()["error"]["field"] == "birth_date"
    res = post(alice, ph, nhs_number=ALICE.nhs_number)
    assert res.status_code == 409 and res.json()["error"]["code"] == "birth_date_required"
    # the right patient
    res = post(alice, ph, wristband=f"]d28018{ALICE.gsrn}", birth_date="2017-03-14")
    assert res.status_code == 200, res.text
    answer = res.json()
    assert answer["status"] == "dispensed"
    assert answer["patient"]["checked"] == ["wristband", "birth_date"]
    assert answer["patient"]["identity"] == {"name": ALICE.name, "birth_date": "2017-03-14"}
    # an audit row for each look-up: the refusals' (field and code) and the dispense's
    rows = _audits(app, start)
    refused = [r for r in rows if r.entity_type == "dispense" and r.action == "refuse"]
    assert [(r.new or {})["field"] for r in refused] == [
        "site_id",  # the other site's pharmacist (code forbidden)
        "nhs_number",
        "mrn",
        "wristband",
        "prescription_id",
        "nhs_number",
        "birth_date",
        "birth_date",
    ]
    identified = [r for r in rows if r.action == "identify_patient"]
    assert len(identified) == 1 and (identified[0].new or {})["matched"] is True
    # the other site's attempt is on the trail too, under its own name
    assert refused[0].actor_id == fh.actor(app, "pharm-man").user_id
    _no_identifier_in(rows, ALICE, BOB)


def test_verify_over_http_shows_identity_only_to_roles_that_may_read_it(
    world: fh.Built, client: TestClient
) -> None:
    alice = _pack(world, "alice")
    body = {"scan": ch.scan(alice), "nhs_number": ALICE.nhs_number}
    as_pharmacist = client.post("/api/v1/verify", json=body, headers=_auth(client, "pharmacist"))
    assert as_pharmacist.json()["patient"]["identity"]["name"] == ALICE.name
    as_qp = client.post("/api/v1/verify", json=body, headers=_auth(client, "qp"))
    assert as_qp.status_code == 200 and as_qp.json()["status"] == "ok"
    assert as_qp.json()["patient"]["identity"] is None and ALICE.name not in as_qp.text
    wrong = client.post(
        "/api/v1/verify",
        json={"scan": ch.scan(alice), "mrn": BOB.mrn},
        headers=_auth(client, "pharmacist"),
    )
    assert wrong.json()["status"] == "wrong_patient" and wrong.json()["patient"]["failed"] == "mrn"


# --- command line ------------------------------------------------------------------------------


def test_dispense_from_the_command_line(world: fh.Built, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import cli_helpers

    import nearfab.cli.context as cli_context

    app = world.app
    alice, bob = _pack(world, "alice"), _pack(world, "bob")
    real_build = cli_context.build_app
    # the command runs on the test's clock (time is injected: DESIGN.md §4), so the packs made
    # on it are in date
    monkeypatch.setattr(
        cli_context,
        "build_app",
        lambda *a, **kw: real_build(*a, **{**kw, "clock": app.clock}),
    )
    env = {"NEARFAB_DATABASE_URL": app.engine.url.render_as_string(hide_password=False)}

    def nearfab(unit: SerialUnit, *args: str) -> Any:
        login = ["--user", "pharmacist", "--password", fh.TEST_PASSWORD, "--json"]
        done = cli_helpers.run(
            ["dispense", "--scan", ch.scan(unit), *args, *login],
            env=env,
            data_dir=app.settings.data_dir,
        )
        return done.returncode, json.loads(done.stdout)

    code, out = nearfab(bob, "--nhs-number", ALICE.nhs_number)
    assert code == 2 and out["error"]["code"] == "wrong_patient"
    assert out["error"]["field"] == "nhs_number"
    code, out = nearfab(bob, "--patient", ALICE.mrn)
    assert code == 2 and out["error"]["field"] == "mrn"
    code, out = nearfab(alice, "--nhs-number", "9434765918")
    assert code == 2 and out["error"]["field"] == "nhs_number"
    code, out = nearfab(alice, "--prescription-id", BOB.prescription_id)
    assert code == 2 and out["error"]["field"] == "prescription_id"
    code, out = nearfab(alice, "--wristband", f"(8018){ALICE.gsrn}")
    assert code == 0, out
    assert out["status"] == "dispensed" and out["patient"]["identity"]["name"] == ALICE.name

    # the network's admin makes the site require the birth date, from the command line
    def rule(username: str) -> Any:
        done = cli_helpers.run(
            ["users", "patient-identification", "--site", "GSTT-PH", "--birth-date-required",
             "--reason", "trust policy", "--user", username, "--password", fh.TEST_PASSWORD,
             "--json"],
            env=env,
            data_dir=app.settings.data_dir,
        )  # fmt: skip
        return done.returncode, json.loads(done.stdout)

    assert rule("pharmacist")[0] == 2
    code, out = rule("admin")
    assert code == 0 and out["birth_date_required"] is True, out
    code, out = nearfab(bob, "--prescription-id", BOB.prescription_id)
    assert code == 2 and out["error"]["code"] == "birth_date_required"
    code, out = nearfab(bob, "--prescription-id", BOB.prescription_id, "--birth-date", "2016-11-02")
    assert code == 0, out
    assert out["patient"]["checked"] == ["prescription_id", "birth_date"]


def test_the_prescription_id_finds_the_order_over_http(world: fh.Built, client: TestClient) -> None:
    ph = _auth(client, "pharmacist")
    res = client.get("/api/v1/orders", params={"prescription_id": BOB.prescription_id}, headers=ph)
    assert res.status_code == 200, res.text
    assert [o["id"] for o in res.json()] == [world.data["bob"]["order"]]
    none = client.get("/api/v1/orders", params={"prescription_id": " "}, headers=ph)
    assert none.status_code == 422 and none.json()["error"]["field"] == "prescription_id"


def test_the_issue_flow_through_the_old_patient_ref_field(
    world: fh.Built, client: TestClient
) -> None:
    """Issue 20 as reported: the pharmacist typed the NHS number, then the prescription's
    subject reference, where the pseudonym used to go."""
    alice, bob = _pack(world, "alice"), _pack(world, "bob")
    ph = _auth(client, "pharmacist")

    def post(unit: SerialUnit, patient_ref: str) -> Any:
        body = {"scan": ch.scan(unit), "patient_ref": patient_ref}
        return client.post("/api/v1/dispense", json=body, headers=ph)

    subject = post(alice, "Patient/pat-123")
    assert subject.status_code == 422 and "sender's FHIR reference" in subject.text
    wrong = post(bob, "9434765919")
    assert wrong.status_code == 409 and wrong.json()["error"]["field"] == "nhs_number"
    checked = client.post(
        "/api/v1/verify", json={"scan": ch.scan(alice), "patient_ref": "9434765919"}, headers=ph
    )
    assert checked.json()["status"] == "ok"
    done = post(alice, "9434765919")
    assert done.status_code == 200 and done.json()["patient"]["checked"] == ["nhs_number"]


def test_unreadable_identifiers_are_not_written_to_the_audit_trail(world: fh.Built) -> None:
    """A misread identifier is refused as unreadable, and the refusal's audit row (its reason is
    the refusal's message) keeps none of it: an NHS wristband whose GSRN check digit was misread
    still carries the patient's valid NHS number, and an NHS number one digit off is a near
    identifier. The person at the counter sees which identifier and why, not the digits."""
    app = world.app
    alice = _pack(world, "alice")
    start = _last_seq(app)
    # company prefix 1234567 + Alice's NHS number + check digit 9 (worked by hand in
    # tests/orders/test_patient_identifiers.py); 0 is the misread check digit
    misread = f"1234567{ALICE.nhs_number}0"
    for kw in (
        {"wristband": f"]d28018{misread}"},
        {"patient": f"(8018){misread}"},
        {"nhs_number": "943 476 5918"},
        {"patient": "943-476-5918"},
        {"patient_ref": "9434765918"},
    ):
        exc = _refused(app, alice, ValidationFailed, **kw)
        assert exc.field in {"wristband", "nhs_number", "patient", "patient_ref"}
        assert "check digit" in exc.message
    rows = _audits(app, start)
    assert len(rows) == 5 and {r.action for r in rows} == {"refuse"}
    text = repr([(r.new, r.old, r.reason, r.entity_id) for r in rows]).replace(" ", "")
    text = text.replace("-", "")
    for secret in (ALICE.nhs_number, misread, "9434765918"):
        assert secret not in text


def test_the_making_site_cannot_check_another_sites_patient(world: fh.Built) -> None:
    """A pack made at GSTT-PH for an order of MAN-PH: GSTT-PH's pharmacist may check the pack
    (its own batch) but not whether an NHS number is its patient's, which would make the
    making site an oracle of another site's patients (identifier in, yes/no out). Refused
    before any look-up, naming the patient field and nobody; MAN-PH's pharmacist matches."""
    from nearfab.orders import Order

    app = world.app
    alice = _pack(world, "alice")
    order_id = world.data["alice"]["order"]
    with app.uow() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        own_site = order.site_id
        order.site_id = app.network.get_site(uow, "MAN-PH").id
        uow.commit()
    fh.create_user(app, "pharmacist-ordering", ["pharmacist"], "MAN-PH")
    try:
        start = _last_seq(app)

        def verify(username: str) -> Any:
            with app.uow() as uow:
                return app.custody.verify(
                    uow,
                    fh.actor(app, username),
                    scan=ch.scan(alice),
                    patient=PresentedIdentifiers(nhs_number=ALICE.nhs_number),
                )

        with pytest.raises(Forbidden) as caught:
            verify("pharmacist")  # GSTT-PH: the making site
        assert caught.value.field == "patient" and caught.value.code == "other_site"
        assert ALICE.name not in caught.value.message
        assert [a for a in _audits(app, start) if a.action == "identify_patient"] == []
        plain = None
        with app.uow() as uow:  # the pack itself it may still check
            plain = app.custody.verify(uow, fh.actor(app, "pharmacist"), scan=ch.scan(alice))
        assert plain.status == VerifyStatus.OK
        assert verify("pharmacist-ordering").patient["matched"] is True
    finally:
        with app.uow() as uow:
            order = uow.session.get(Order, order_id)
            assert order is not None
            order.site_id = own_site
            uow.commit()
