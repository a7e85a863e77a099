"""Order intake on both databases: FHIR in, pseudonymised patients, all-or-nothing, designs."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, Refused, ValidationFailed
from nearfab.demo import HYDROCORTISONE, NHS_NUMBER, SNOMED, prescription_bundle
from nearfab.identity import Actor, AuditEntry, actor_of, audit_trail
from nearfab.orders import FhirInputError, Order, Patient, PatientIdentity, Prescription
from nearfab.uow import UnitOfWork

TEST_PASSWORD = "correct-horse-42"  # the demo users' password (tests/conftest.py)
TODAY = date(2026, 1, 5)  # the ManualClock's date
NHS, GIVEN, FAMILY = "9434765919", "Zebadiah", "Quillfeather"
CHILD = 5 * 365 + 2  # age in days
MODELS = (Patient, PatientIdentity, Prescription, Order, AuditEntry)
DOSE_UNIT = "dosageInstruction[0].doseAndRate[0].doseQuantity"


def bundle(
    dose_mg: float = 2.5,
    *,
    days: int = 7,
    age_days: int | None = CHILD,
    seed: int = 1,
    nhs: str = NHS,
) -> dict[str, Any]:
    """A Bundle (Patient + hydrocortisone MedicationRequest, 3 doses a day) for a known patient."""
    born = TODAY - timedelta(days=age_days or 0)
    doc = prescription_bundle(
        random.Random(seed), today=TODAY, dose_mg=dose_mg, days=days, birth_date=born
    )
    patient = doc["entry"][0]["resource"]
    patient["identifier"][0]["value"] = nhs
    patient["name"] = [{"family": FAMILY, "given": [GIVEN]}]
    if age_days is None:
        del patient["birthDate"]
    return doc


def request_of(doc: dict[str, Any], index: int = 1) -> dict[str, Any]:
    resource: dict[str, Any] = doc["entry"][index]["resource"]
    return resource


def add_request(doc: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    second = copy.deepcopy(request_of(doc))
    second["id"] = "rx-second"
    change(second)
    doc["entry"].append({"fullUrl": "urn:uuid:rx-second", "resource": second})
    return doc


def paracetamol(mr: dict[str, Any]) -> None:
    mr["medicationCodeableConcept"] = {
        "coding": [{"system": SNOMED, "code": "387517004", "display": "Paracetamol"}]
    }


def millilitres(mr: dict[str, Any]) -> None:
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {
        "value": 5,
        "unit": "mL",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    }


def no_dose(mr: dict[str, Any]) -> None:
    del mr["dosageInstruction"][0]["doseAndRate"]


def actor(app: App, username: str) -> Actor:
    with app.uow() as uow:
        user = app.users.by_username(uow, username)
        assert user is not None
        return actor_of(user, uow.session)


def submit(app: App, doc: Any, username: str = "clinician", site: str | None = None) -> list[Order]:
    who = actor(app, username)
    with app.uow() as uow:
        return app.orders.submit(uow, who, doc, site_id=site)


def refused(app: App, error: type[DomainError], use_case: Callable[[UnitOfWork], Any]) -> Any:
    with pytest.raises(error) as info, app.uow() as uow:
        use_case(uow)
    return info.value


def rejected(app: App, doc: Any, error: type[DomainError], username: str = "clinician") -> Any:
    """Submit, expect `error`, and check that not one row was stored (audit rows included)."""
    before = counts(app)
    who = actor(app, username)
    found = refused(app, error, lambda uow: app.orders.submit(uow, who, doc))
    assert counts(app) == before
    return found


def counts(app: App) -> dict[str, int]:
    with app.uow() as uow:
        return {
            m.__tablename__: int(uow.session.scalar(select(func.count()).select_from(m)) or 0)
            for m in MODELS
        }


def trail(app: App, entity_type: str, entity_id: str) -> list[AuditEntry]:
    with app.uow() as uow:
        return audit_trail(uow, entity_type, entity_id)


def test_valid_bundle_becomes_a_designed_order_with_its_audit_trail(seeded: App) -> None:
    clinician = actor(seeded, "clinician")
    [order] = submit(seeded, bundle(2.5, days=7))
    assert (order.status, order.master_file_code, order.master_file_version) == (
        "designed",
        HYDROCORTISONE,
        1,
    )
    assert (order.medication, order.dose_value, order.dose_unit) == ("Hydrocortisone", 2.5, "mg")
    assert (order.doses_per_day, order.units) == (3.0, 21)
    assert order.patient_group == "child" and order.stop_reason is None
    assert order.design is not None
    assert order.design["target_mass_mg"] == pytest.approx(2.5 / 0.025)
    assert order.design["units"] == 21 and order.design["patient_group"] == "child"
    with seeded.uow() as uow:
        rx = uow.session.get(Prescription, order.prescription_id)
        assert rx is not None
        assert (rx.dose_value, rx.dose_unit, rx.supply_days) == (2.5, "mg", 7.0)
        assert (rx.prescriber_reference, rx.prescriber_display) == (
            "Practitioner/demo-prescriber",
            "Dr Clare Nice",
        )
        assert rx.received_by == clinician.user_id and rx.patient_id == order.patient_id
    [rx_created] = trail(seeded, "prescription", order.prescription_id)
    assert rx_created.action == "create" and rx_created.new is not None
    assert rx_created.new["dose"] == "2.5 mg" and rx_created.new["units"] == 21
    created, designed = trail(seeded, "order", order.id)
    assert created.action == "create" and created.new is not None
    assert created.new["status"] == "received"
    assert (designed.action, designed.old) == ("transition", {"status": "received"})
    assert designed.new is not None and designed.new["status"] == "designed"
    assert designed.new["design"] == order.design
    assert {created.actor_id, designed.actor_id} == {clinician.user_id}


def test_patient_is_pseudonymised_and_identity_is_kept_apart(seeded: App) -> None:
    doc = bundle()
    born = doc["entry"][0]["resource"]["birthDate"]
    [order] = submit(seeded, doc)
    with seeded.engine.connect() as conn:
        for table in ("patients", "patient_identities", "prescriptions", "orders", "audit_entries"):
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                cells = " ".join(
                    bytes(v).decode("latin-1")
                    if isinstance(v, bytes | memoryview)
                    else json.dumps(v, default=str)
                    for v in row
                )
                for secret in (NHS, GIVEN, FAMILY, born):
                    assert secret not in cells, (table, secret)
    with seeded.uow() as uow:
        patient = seeded.orders.patient(uow, order.patient_id)
    assert patient.ref.startswith("PT-")
    identity = None
    for username in ("pharmacist", "clinician"):
        reader = actor(seeded, username)
        with seeded.uow() as uow:
            identity = seeded.orders.patient_identity(uow, reader, order.patient_id)
    assert identity is not None
    assert identity["identifiers"] == [f"{NHS_NUMBER}|{NHS}"]
    assert identity["name"] == f"{GIVEN} {FAMILY}" and identity["birth_date"] == born
    reads = [e for e in trail(seeded, "patient", order.patient_id) if e.action == "read_identity"]
    assert len(reads) == 2
    for username in ("operator", "planner", "qp"):
        someone = actor(seeded, username)
        refused(
            seeded,
            Forbidden,
            lambda uow, who=someone: seeded.orders.patient_identity(uow, who, order.patient_id),
        )


def test_the_same_nhs_number_reuses_the_pseudonym(seeded: App) -> None:
    [first] = submit(seeded, bundle(seed=1))
    [again] = submit(seeded, bundle(seed=2))  # other resource ids, same NHS number
    [other] = submit(seeded, bundle(seed=3, nhs="9876543210"))
    assert again.patient_id == first.patient_id != other.patient_id
    assert again.prescription_id != first.prescription_id
    assert counts(seeded)["patients"] == counts(seeded)["patient_identities"] == 2


def test_unknown_medication_is_refused_naming_it_and_nothing_is_stored(seeded: App) -> None:
    doc = bundle()
    paracetamol(request_of(doc))
    error = rejected(seeded, doc, ValidationFailed)
    assert error.code == "medication_not_accepted" and "Paracetamol" in error.message
    # an invalid prescription like any other (422), naming the element inside the Bundle
    assert error.http_status == 422
    assert error.field == "Bundle.entry[1].resource.medicationCodeableConcept"
    assert counts(seeded)["orders"] == counts(seeded)["patients"] == 0


@pytest.mark.parametrize(
    "second", [paracetamol, millilitres, no_dose, lambda mr: mr.update(status="cancelled")]
)
def test_a_bundle_is_stored_whole_or_not_at_all(seeded: App, second: Any) -> None:
    rejected(seeded, add_request(bundle(), second), ValidationFailed)
    assert counts(seeded)["prescriptions"] == 0
    orders = submit(seeded, add_request(bundle(), lambda mr: None))
    assert [o.status for o in orders] == ["designed", "designed"]
    assert orders[0].patient_id == orders[1].patient_id
    assert counts(seeded)["patients"] == 1 and counts(seeded)["orders"] == 2


def test_malformed_input_is_refused_naming_the_field(seeded: App) -> None:
    bad_dose, ml_dose = bundle(), bundle()
    no_dose(request_of(bad_dose))
    millilitres(request_of(ml_dose))
    cases: list[tuple[Any, type[DomainError], str]] = [
        ("{not json", FhirInputError, "$"),
        ([], FhirInputError, "$"),
        (json.dumps({"resourceType": "Patient", "id": "p"}), FhirInputError, "resourceType"),
        (bad_dose, FhirInputError, f"Bundle.entry[1].resource.{DOSE_UNIT}"),
    ]
    for doc, error_type, field in cases:
        error = rejected(seeded, doc, error_type)
        assert error.field == field and field in error.message
    error = rejected(seeded, ml_dose, ValidationFailed)
    assert error.field.endswith(f"{DOSE_UNIT}.unit") and "'mL'" in error.message


def test_dose_unit_refusal_names_the_fhir_path_inside_a_bundle(seeded: App) -> None:
    doc = add_request(bundle(), millilitres)
    error = rejected(seeded, doc, ValidationFailed)
    assert error.field == f"Bundle.entry[2].resource.{DOSE_UNIT}.unit"


def test_outside_the_envelope_the_order_is_stored_stopped_with_the_reason(seeded: App) -> None:
    cases = [
        (bundle(12.0), "dose 12 mg is outside the validated range 0.5–10 mg"),
        (bundle(2.0, age_days=10), "patient group neonate is not validated"),
        (bundle(10.0, age_days=200), "fits no validated geometry (Ø ≤ 6 mm for infant)"),
        (bundle(2.0, age_days=None), "patient group unknown (no birth date)"),
        (bundle(1.0, days=100), "300 units is outside the validated course size 1–200"),
    ]
    for index, (doc, reason) in enumerate(cases):
        [order] = submit(seeded, doc, "pharmacist")
        assert order.status == "stopped" and order.design is None, index
        assert order.stop_reason is not None and reason in order.stop_reason, order.stop_reason
        last = trail(seeded, "order", order.id)[-1]
        assert (last.old, last.new, last.reason) == (
            {"status": "received"},
            {"status": "stopped"},
            order.stop_reason,
        )
    assert counts(seeded)["orders"] == len(cases)
    [infant] = submit(seeded, bundle(2.0, age_days=200))  # a small dose fits an infant
    assert infant.status == "designed" and infant.patient_group == "infant"
    assert infant.design is not None and infant.design["diameter_mm"] <= 6


def test_clinicians_pharmacists_and_admins_submit_others_are_forbidden(seeded: App) -> None:
    for username in ("operator", "qp", "planner", "auditor"):
        rejected(seeded, bundle(), Forbidden, username)
    for index, username in enumerate(("clinician", "pharmacist", "admin")):
        # the admin has no home site: names the ordering site (tests/orders/test_intake_attacks)
        site = "GSTT-PH" if username == "admin" else None
        [order] = submit(seeded, bundle(seed=index), username, site)
        assert order.status == "designed"
        assert trail(seeded, "order", order.id)[0].actor_id == actor(seeded, username).user_id


def test_two_master_files_accepting_one_medication_is_refused(seeded: App) -> None:
    qp = actor(seeded, "qp")
    with seeded.uow() as uow:
        hc = seeded.master_files.effective_for_code(uow, HYDROCORTISONE)
        data = {**hc.content(), "code": "MF-HC-COPY"}
    for key in ("version",):
        data.pop(key)
    with seeded.uow() as uow:
        copy_mf = seeded.master_files.draft(uow, qp, data)
    with seeded.uow() as uow:
        seeded.master_files.approve(uow, qp, copy_mf.id, password=TEST_PASSWORD)
    with seeded.uow() as uow:
        seeded.master_files.make_effective(uow, qp, copy_mf.id)
    error = rejected(seeded, bundle(), Refused)
    assert error.code == "ambiguous_master_file" and "MF-HC-COPY" in error.message


def test_only_a_failed_order_is_planned_again(seeded: App) -> None:
    from nearfab.common.errors import Refused
    from nearfab.identity import system_actor
    from nearfab.orders import Order

    planner = system_actor("test-planner")
    with seeded.uow() as uow:
        (order,) = seeded.orders.submit(uow, planner, _bundle_for_replan(seeded), site_id="GSTT-PH")
    with seeded.uow() as uow, pytest.raises(Refused) as caught:
        seeded.orders.replan(uow, planner, order.id, reason="try again")
    assert caught.value.code == "not_failed"
    with seeded.uow() as uow:  # as if its batch had failed at the machine
        uow.session.get(Order, order.id).status = "failed"
        uow.commit()
    with seeded.uow() as uow:
        again = seeded.orders.replan(uow, planner, order.id, reason="machine refused the ticket")
    assert again.status == "designed"
    with seeded.uow() as uow:
        last = audit_trail(uow, "order", order.id)[-1]
    assert (last.old, last.new["status"], last.reason) == (
        {"status": "failed"},
        "designed",
        "machine refused the ticket",
    )


def _bundle_for_replan(app: App) -> dict[str, object]:
    import random

    from nearfab.demo import prescription_bundle

    return prescription_bundle(random.Random(5), today=app.clock.now().date(), days=7)
