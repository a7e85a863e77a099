"""cell_therapy's prescription part (orders.kit.PrescriptionKit): a dose of viable cells per kg
of body weight becomes the patient's whole dose, dose per kg × weight, counted in cells; a mass,
a dose not per kg, or a dose per kg without the weight is refused naming the FHIR field.

Expected values are hand calculations written beside each case."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.families.cell_therapy.prescription import CellTherapyPrescription, cells_multiplier
from nearfab.orders.fhir import parse_prescriptions
from nearfab.orders.kit import DoseIn, PrescriptionKit

UCUM = "http://unitsofmeasure.org"
PATIENT = "urn:uuid:0c7e1d7a-3a52-4f0e-9d5e-1c2b3a4d5e01"
MR = "Bundle.entry[1].resource"
DOSE_FIELD = f"{MR}.dosageInstruction[0].doseAndRate[0].doseQuantity"

KIT = CellTherapyPrescription()


def bundle(dose: dict[str, Any], weight_kg: float | None = 70.0) -> dict[str, Any]:
    """A synthetic FHIR Bundle: a patient, one MedicationRequest for an autologous cell product
    with `dose`, and (unless None) the patient's body weight Observation (LOINC 29463-7)."""
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": PATIENT,
            "resource": {
                "resourceType": "Patient",
                "id": "pt-ct-1",
                "name": [{"family": "Synthetic", "given": ["Alex"]}],
                "birthDate": "1980-02-14",
            },
        },
        {
            "fullUrl": "urn:uuid:0c7e1d7a-3a52-4f0e-9d5e-1c2b3a4d5e02",
            "resource": {
                "resourceType": "MedicationRequest",
                "id": "rx-ct-1",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": "Autologous T cells, expanded"},
                "subject": {"reference": PATIENT},
                "dosageInstruction": [
                    {"text": "one infusion", "doseAndRate": [{"doseQuantity": copy.deepcopy(dose)}]}
                ],
            },
        },
    ]
    if weight_kg is not None:
        entries.append(
            {
                "fullUrl": "urn:uuid:0c7e1d7a-3a52-4f0e-9d5e-1c2b3a4d5e03",
                "resource": {
                    "resourceType": "Observation",
                    "id": "w-ct-1",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": {"reference": PATIENT},
                    "valueQuantity": {
                        "value": weight_kg,
                        "unit": "kg",
                        "system": UCUM,
                        "code": "kg",
                    },
                },
            }
        )
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def read(dose: dict[str, Any], weight_kg: float | None = 70.0) -> DoseIn:
    [rx] = parse_prescriptions(bundle(dose, weight_kg))
    return rx.dose


def test_the_part_is_a_prescription_kit() -> None:
    assert isinstance(KIT, PrescriptionKit)


@pytest.mark.parametrize(
    ("dose", "weight_kg", "cells"),
    [
        # 2 × 10^6 cells/kg × 70 kg = 1.4 × 10^8 cells
        ({"value": 2.0e6, "unit": "{cells}/kg", "system": UCUM, "code": "{cells}/kg"}, 70.0, 1.4e8),
        # the same dose written per 10^6 cells: 2 × 10^6 × 70 = 1.4 × 10^8
        (
            {"value": 2, "unit": "10*6{cells}/kg", "system": UCUM, "code": "10*6{cells}/kg"},
            70.0,
            1.4e8,
        ),
        # UCUM's multiplication dot: 0.5 × 10^6 × 18 kg = 9 × 10^6
        (
            {"value": 0.5, "unit": "10*6.{cells}/kg", "system": UCUM, "code": "10*6.{cells}/kg"},
            18.0,
            9.0e6,
        ),
        # written in words, no code: 3 × 10^6 × 45.5 kg = 1.365 × 10^8
        ({"value": 3.0e6, "unit": "cells/kg"}, 45.5, 1.365e8),
    ],
)
def test_a_dose_per_kg_becomes_the_patients_dose_in_cells(
    dose: dict[str, Any], weight_kg: float, cells: float
) -> None:
    accepted = KIT.accept_dose(read(dose, weight_kg))
    assert accepted.unit == "{cells}"
    assert accepted.value == pytest.approx(cells, rel=1e-12)


def test_a_weight_in_pounds_is_read_in_kg_first() -> None:
    doc = bundle({"value": 2.0e6, "unit": "{cells}/kg", "system": UCUM, "code": "{cells}/kg"})
    doc["entry"][2]["resource"]["valueQuantity"] = {
        "value": 154.0,
        "unit": "[lb_av]",
        "system": UCUM,
        "code": "[lb_av]",
    }
    [rx] = parse_prescriptions(doc)
    # 154 lb × 0.45359237 kg/lb = 69.85322498 kg; × 2 × 10^6 = 1.3970644996 × 10^8 cells
    accepted = KIT.accept_dose(rx.dose)
    assert (accepted.value, accepted.unit) == (pytest.approx(1.3970644996e8), "{cells}")


def test_no_weight_is_refused_naming_the_dose() -> None:
    dose = read({"value": 2.0e6, "unit": "{cells}/kg", "system": UCUM, "code": "{cells}/kg"}, None)
    assert dose.weight is None
    with pytest.raises(ValidationFailed) as caught:
        KIT.accept_dose(dose)
    assert caught.value.field == DOSE_FIELD
    assert "body weight" in caught.value.message and "29463-7" in caught.value.message


def test_a_mass_dose_is_refused() -> None:
    for dose in (
        {"value": 50, "unit": "mg", "system": UCUM, "code": "mg"},
        {"value": 0.25, "unit": "mg/kg", "system": UCUM, "code": "mg/kg"},
    ):
        with pytest.raises(ValidationFailed) as caught:
            KIT.accept_dose(read(dose))
        assert caught.value.field == f"{DOSE_FIELD}.unit"
        assert "is a mass" in caught.value.message


def test_a_dose_not_per_kg_is_refused() -> None:
    # an absolute count of cells: the FHIR reader knows no such amount and refuses it itself
    with pytest.raises(ValidationFailed) as caught:
        read({"value": 1.4e8, "unit": "{cells}", "system": UCUM, "code": "{cells}"})
    assert caught.value.field == DOSE_FIELD
    # the family refuses any dose that is not per kg (here a count the reader would know)
    dose = DoseIn(
        value=2.0,
        unit="{bags}",
        read_as="{bags}",
        kind="count",
        ucum=None,
        per_kg=False,
        weight=None,
        field=DOSE_FIELD,
    )
    with pytest.raises(ValidationFailed) as caught:
        KIT.accept_dose(dose)
    assert caught.value.field == f"{DOSE_FIELD}.unit"
    assert "not per kg of body weight" in caught.value.message


def test_a_dose_per_kg_that_counts_no_cells_is_refused() -> None:
    for dose in (
        {"value": 10, "unit": "mL/kg", "system": UCUM, "code": "mL/kg"},
        {"value": 5, "unit": "{vials}/kg"},
    ):
        with pytest.raises(ValidationFailed) as caught:
            KIT.accept_dose(read(dose))
        assert caught.value.field == f"{DOSE_FIELD}.unit"
        assert "does not count cells" in caught.value.message


@pytest.mark.parametrize(
    ("numerator", "multiplier"),
    [
        ("{cells}", 1.0),
        ("{cell}", 1.0),
        ("{CAR-T cells}", 1.0),
        ("10*6{cells}", 1e6),
        ("10*6.{cells}", 1e6),
        ("10^8 {cells}", 1e8),
        ("cells", 1.0),
        ("{vials}", None),
        ("mg", None),
        ("10*6{vials}", None),
        ("{cellsx}", None),
    ],
)
def test_what_a_dose_numerator_counts(numerator: str, multiplier: float | None) -> None:
    assert cells_multiplier(numerator) == multiplier


def test_one_infusion_per_course() -> None:
    field = f"{MR}.dispenseRequest"
    assert KIT.units_for_course(None, field=field) == 1
    assert KIT.units_for_course(1, field=field) == 1
    with pytest.raises(ValidationFailed) as caught:
        KIT.units_for_course(3, field=field)
    assert caught.value.field == field
    assert "one infusion, not 3" in caught.value.message
