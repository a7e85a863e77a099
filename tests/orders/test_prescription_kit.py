"""The kit boundary of order intake (orders/kit.py): the FHIR reader reports the dose, and the
product family of the master file that accepts the medication decides what it takes.

A dose per kg of body weight is no longer refused by the reader: it reaches the family.
solid_dose refuses it with the words and field the reader used before; a family registered
here, in the test only, takes it and gets the dose and the patient's weight."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.demo import HYDROCORTISONE, RXNORM, SNOMED
from nearfab.families.solid_dose import SolidDoseFamily
from nearfab.identity import audit_trail
from nearfab.orders import DesignRequest, FhirInputError
from nearfab.orders.kit import DoseIn, MedicationCode, NoProductCodes

from .test_order_services import (
    DOSE_UNIT,
    TEST_PASSWORD,
    actor,
    bundle,
    request_of,
    submit,
)
from .test_order_services import rejected as rejected_storing_nothing

UCUM = "http://unitsofmeasure.org"
MR = "Bundle.entry[1].resource"  # the MedicationRequest of test_order_services.bundle()
TESTAMAB = {"system": SNOMED, "code": "999000111", "display": "Testamab"}


def per_kg(doc: dict[str, Any], value: float = 0.25, weight_kg: float | None = 18.0) -> None:
    """The bundle's dose becomes `value` mg/kg, with the patient's body weight Observation."""
    mr = request_of(doc)
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {
        "value": value,
        "unit": "mg/kg",
        "system": UCUM,
        "code": "mg/kg",
    }
    if weight_kg is not None:
        doc["entry"].append(
            {
                "fullUrl": "urn:uuid:weight-1",
                "resource": {
                    "resourceType": "Observation",
                    "id": "weight-1",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": mr["subject"],
                    "valueQuantity": {"value": weight_kg, "unit": "kg", "system": UCUM},
                },
            }
        )


def test_solid_dose_refuses_a_dose_per_kg_with_the_readers_former_words(seeded: App) -> None:
    doc = bundle()
    per_kg(doc)
    error = rejected_storing_nothing(seeded, doc, FhirInputError)
    field = f"{MR}.{DOSE_UNIT}"
    assert (error.code, error.field) == ("fhir_invalid", field)
    # the message the FHIR reader gave before the kit (orders/fhir.py at 445253d), verbatim
    assert error.message == (
        f"{field}: dose unit 'mg/kg' is a ratio (per body weight, area or time): an absolute "
        "dose per administration is required"
    )


# --- a family that takes a dose per kg (registered in this test only) ------------------------


class PerKgPrescription(NoProductCodes):
    """Takes a dose per kg only with the patient's weight: dose × weight, in the numerator's
    unit; one unit (a single bag) per course, whatever the schedule."""

    def __init__(self) -> None:
        self.seen: list[DoseIn] = []

    def accept_dose(self, dose: DoseIn) -> Quantity:
        self.seen.append(dose)
        if not dose.per_kg or dose.weight is None or dose.ucum is None:
            raise ValidationFailed(f"{dose.field}: a dose per kg and a weight", field=dose.field)
        return Quantity(dose.value * dose.weight.value, dose.ucum)

    def units_for_course(self, stated: int | None, *, field: str) -> int:
        return 1


class PerKgFamily:
    name = "per_kg_test"
    machine_types: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.prescription = PerKgPrescription()
        # the other parts are borrowed: this test is about the prescription part only
        solid = SolidDoseFamily()
        self.machines, self.release = solid.machines, solid.release
        self.labels, self.simulation = solid.labels, solid.simulation

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        pass

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        return {"dose": str(request.dose), "units": request.units}, None

    def material_needed_g(self, design: Mapping[str, Any]) -> float:
        return 0.0

    def duration_s(self, design: Mapping[str, Any]) -> float:
        return 0.0


@pytest.fixture
def per_kg_family(seeded: App) -> PerKgFamily:
    """The family registered, and an effective master file of it accepting Testamab."""
    family = PerKgFamily()
    seeded.families.register(family)
    qp = actor(seeded, "qp")
    with seeded.uow() as uow:
        hc = seeded.master_files.effective_for_code(uow, HYDROCORTISONE)
        data = {**hc.content(), "code": "MF-PER-KG", "product_family": family.name}
    data.pop("version")
    data["accepted_codes"] = [TESTAMAB]
    with seeded.uow() as uow:
        mf = seeded.master_files.draft(uow, qp, data)
    with seeded.uow() as uow:
        seeded.master_files.approve(uow, qp, mf.id, password=TEST_PASSWORD)
    with seeded.uow() as uow:
        seeded.master_files.make_effective(uow, qp, mf.id)
    return family


def as_testamab(doc: dict[str, Any]) -> None:
    request_of(doc)["medicationCodeableConcept"] = {"coding": [TESTAMAB]}


def test_a_family_taking_a_dose_per_kg_gets_the_dose_and_the_weight(
    seeded: App, per_kg_family: PerKgFamily
) -> None:
    doc = bundle(days=7)  # 3 a day for 7 days: the prescription implies 21 doses
    per_kg(doc, value=0.25, weight_kg=18.0)
    as_testamab(doc)
    [order] = submit(seeded, doc)

    [seen] = per_kg_family.prescription.seen
    assert (seen.value, seen.unit, seen.per_kg, seen.ucum) == (0.25, "mg/kg", True, "mg")
    assert seen.weight == Quantity(18.0, "kg")
    assert seen.field == f"{MR}.{DOSE_UNIT}"
    # 0.25 mg/kg × 18 kg = 4.5 mg; one unit for the course (the family's rule, not 21)
    assert (order.product_family, order.status) == ("per_kg_test", "designed")
    assert (order.dose_value, order.dose_unit, order.units) == (4.5, "mg", 1)
    assert order.dose == Quantity(4.5, "mg")
    assert order.design == {"dose": "4.5 mg", "units": 1}
    with seeded.uow() as uow:
        [created, _designed] = audit_trail(uow, "order", order.id)
    assert created.new is not None and created.new["dose"] == "4.5 mg"


def test_the_family_refusal_names_the_field_and_stores_nothing(
    seeded: App, per_kg_family: PerKgFamily
) -> None:
    doc = bundle()
    per_kg(doc, weight_kg=None)  # no body weight in the prescription
    as_testamab(doc)
    error = rejected_storing_nothing(seeded, doc, ValidationFailed)
    assert error.field == f"{MR}.{DOSE_UNIT}"
    assert per_kg_family.prescription.seen[0].weight is None


def test_what_a_product_code_means_is_the_familys_knowledge() -> None:
    # RxNorm 856448 is "propranolol hydrochloride 10 MG Oral Tablet": 10 mg in one unit
    scd = MedicationCode(RXNORM, "856448", None)
    ingredient = MedicationCode(SNOMED, "372772003", "Propranolol")
    two = DoseIn(2.0, "tablet", "tablet", "count", None, False, None, "D")
    solid = SolidDoseFamily().prescription
    [known] = solid.product_codes([ingredient, scd, scd])
    assert (known.code, known.display) == ("856448", "propranolol hydrochloride 10 MG Oral Tablet")
    made, per_dose = solid.product_dose(two, [ingredient, scd], medication_field="M")
    assert (made.value, made.unit, made.kind, per_dose) == (20.0, "mg", "mass", 2)  # 2 × 10 mg
    solid.check_product(Quantity(30.0, "mg"), [scd], medication_field="M", dose_field="D")
    with pytest.raises(ValidationFailed) as exc:
        solid.check_product(Quantity(25.0, "mg"), [scd], medication_field="M", dose_field="D")
    assert exc.value.field == "D" and "2.5 tablets" in exc.value.message
    # a family that knows no product codes: none named, the dose as written, one dose a unit
    other = PerKgPrescription()
    assert other.product_codes([scd]) == []
    assert other.product_dose(two, [scd], medication_field="M") == (two, 1)
    other.check_product(Quantity(25.0, "mg"), [scd], medication_field="M", dose_field="D")
