"""FHIR R4 prescription intake on our own synthetic fixtures.

Fixtures live in tests/fixtures/fhir: synthetic, CC0-style, no real people.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.families.solid_dose.prescription import SolidDosePrescription
from nearfab.orders.fhir import (
    RXNORM,
    SNOMED,
    FhirInputError,
    MedicationCode,
    PrescriptionIn,
    parse_prescriptions,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"
MR = "MedicationRequest"
DOSE = "dosageInstruction[0].doseAndRate[0].doseQuantity"
UCUM = "http://unitsofmeasure.org"
DRUG_FORM = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def hydrocortisone_bundle() -> dict[str, Any]:
    return load("hydrocortisone-paediatric-bundle.json")


def hydrocortisone_request() -> dict[str, Any]:
    """The Bundle's MedicationRequest alone (subject rewritten as a plain Patient reference)."""
    mr = copy.deepcopy(hydrocortisone_bundle()["entry"][2]["resource"])
    mr["subject"] = {"reference": "Patient/pt-hc-1", "display": "Robin Testchild"}
    mr["requester"] = {"reference": "Practitioner/pr-hc-1", "display": "Dr Jo Synthetic"}
    return mr


def in_mg(rx: PrescriptionIn) -> float | None:
    """The dose in mg as solid_dose takes it (its prescription part converts masses), or None
    when it does not take the dose as a mass."""
    try:
        dose = SolidDosePrescription().accept_dose(rx.dose)
    except ValidationFailed:
        return None
    assert dose.unit == "mg"
    return dose.value


def refused(doc: Any) -> FhirInputError:
    with pytest.raises(FhirInputError) as info:
        parse_prescriptions(doc)
    err = info.value
    assert err.code == "fhir_invalid"
    assert isinstance(err, ValidationFailed)
    assert err.field and err.message.startswith(err.field + ":")
    return err


# --------------------------------------------------------------------------------------------
# accepted prescriptions


def test_hydrocortisone_paediatric_bundle_maps_every_field() -> None:
    doc = hydrocortisone_bundle()
    [rx] = parse_prescriptions(json.dumps(doc))
    assert isinstance(rx, PrescriptionIn)
    assert rx.source_id == "rx-hc-0001"
    assert rx.identifiers == ("https://nearfab.example.org/prescription-id|HC-0001",)
    assert (rx.status, rx.intent) == ("active", "order")
    assert rx.medication_codes == (
        MedicationCode(SNOMED, "396458002", "Hydrocortisone"),
        MedicationCode(RXNORM, "5492", "hydrocortisone"),
    )
    assert rx.medication_text == "Hydrocortisone 2.5 mg oral capsules, made for the patient"
    # urn:uuid reference resolved inside the Bundle, reported in the usual Type/id form
    assert rx.patient_reference == "Patient/pt-hc-1"
    assert rx.patient_display == "Robin Testchild"
    assert rx.patient_birth_date == date(2019, 3, 14)
    assert rx.patient_identifiers == ("https://fhir.nhs.uk/Id/nhs-number|9990000018",)
    assert rx.patient_name == "Robin Alex Testchild"
    assert rx.prescriber_reference == "Practitioner/pr-hc-1"
    assert rx.prescriber_display == "Jo Synthetic"  # from the Practitioner in the Bundle
    assert rx.authored_on == datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
    assert rx.authored_on.tzinfo is not None
    assert (rx.dose_value, rx.dose_unit, in_mg(rx)) == (2.5, "mg", 2.5)
    assert rx.doses_per_day == 3.0
    assert (rx.quantity_value, rx.quantity_unit) == (None, None)
    assert rx.supply_days == 28.0
    assert rx.units_for_course == 84  # 3 a day × 28 days
    assert rx.note == "Synthetic test prescription; no real person."
    assert rx.raw == doc["entry"][2]["resource"]


def test_bytes_str_and_mapping_inputs_agree_and_raw_is_a_copy() -> None:
    doc = hydrocortisone_bundle()
    text = json.dumps(doc)
    from_bytes = parse_prescriptions(text.encode("utf-8"))
    from_str = parse_prescriptions(text)
    from_mapping = parse_prescriptions(MappingProxyType(doc))
    assert from_bytes == from_str == from_mapping
    from_mapping[0].raw["status"] = "changed"
    assert doc["entry"][2]["resource"]["status"] == "active"


def test_single_resource_with_contained_medication_bid_and_tablets() -> None:
    [rx] = parse_prescriptions((FIXTURES / "contained-medication-bid.json").read_bytes())
    assert rx.source_id == "rx-para-0002"
    assert rx.identifiers == ("https://nearfab.example.org/prescription-id|PA-0002", "|local-77")
    assert (rx.status, rx.intent) == ("draft", "original-order")
    assert rx.medication_codes == (
        MedicationCode(SNOMED, "387517004", "Paracetamol"),
        MedicationCode(RXNORM, "161", "acetaminophen"),
    )
    assert rx.medication_text == "Paracetamol 250 mg tablets"  # Medication.code.text wins
    assert rx.patient_reference == "Patient/synthetic-2"
    assert rx.patient_birth_date is None and rx.patient_identifiers == ()
    assert rx.patient_name is None
    assert (rx.prescriber_reference, rx.prescriber_display) == (
        "Practitioner/pr-2",
        "Dr Lee Synthetic",
    )
    assert rx.authored_on == datetime(2024, 6, 1, tzinfo=UTC)  # date only → midnight UTC
    assert (rx.dose_value, rx.dose_unit, in_mg(rx)) == (1.0, "tablet", None)
    assert rx.doses_per_day == 2.0  # timing.code BID
    assert (rx.quantity_value, rx.quantity_unit) == (56.0, "tablet")
    assert rx.supply_days == 28.0  # 4 wk
    assert rx.units_for_course == 56  # the quantity counts tablets
    assert rx.note is None


def test_contained_patient_text_only_medication_and_micrograms() -> None:
    [rx] = parse_prescriptions(load("levothyroxine-micrograms.json"))
    assert rx.medication_codes == ()
    assert rx.medication_text == "Levothyroxine 25 microgram oral solution, made for the patient"
    assert rx.patient_reference == "#pt"
    assert rx.patient_birth_date == date(2023, 11, 5)
    assert rx.patient_identifiers == ("https://fhir.nhs.uk/Id/nhs-number|9990000026",)
    assert rx.patient_name == "Charlie Testinfant"
    assert rx.authored_on == datetime(2024, 7, 15, 16, 45, tzinfo=UTC)
    assert (rx.dose_value, rx.dose_unit, in_mg(rx)) == (25.0, "microgram", 0.025)
    assert rx.doses_per_day == 1.0
    assert rx.supply_days == 84.0  # boundsDuration 12 wk
    assert rx.units_for_course == 84
    assert rx.prescriber_reference is None and rx.identifiers == ()


@pytest.mark.parametrize(
    ("value", "unit", "code", "expected_mg"),
    [
        (0.0025, "g", "g", 2.5),
        (2500, "ug", "ug", 2.5),
        (75, "mcg", "mcg", 0.075),
        (500000, "ng", "ng", 0.5),
        (12.5, "mg", "mg", 12.5),
        (3, "milligram", None, 3.0),
    ],
)
def test_mass_units_convert_to_mg(
    value: float, unit: str, code: str | None, expected_mg: float
) -> None:
    mr = hydrocortisone_request()
    quantity: dict[str, Any] = {"value": value, "unit": unit}
    if code:
        quantity |= {"system": UCUM, "code": code}
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = quantity
    [rx] = parse_prescriptions(mr)
    assert rx.dose_value == float(value)
    assert rx.dose_unit == unit
    assert in_mg(rx) == expected_mg


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [
        ({"value": 5, "unit": "mL", "system": UCUM, "code": "mL"}, "mL"),
        ({"value": 4, "unit": "U", "system": UCUM, "code": "U"}, "U"),
        ({"value": 2, "unit": "capsule", "system": UCUM, "code": "{capsule}"}, "capsule"),
        ({"value": 1, "unit": "TAB", "system": DRUG_FORM, "code": "TAB"}, "TAB"),
        ({"value": 1, "system": UCUM, "code": "1"}, "1"),
    ],
)
def test_non_mass_doses_parse_without_mg(quantity: dict[str, Any], unit: str) -> None:
    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = quantity
    [rx] = parse_prescriptions(mr)
    assert rx.dose_unit == unit
    assert rx.dose_value == float(quantity["value"])
    assert in_mg(rx) is None


@pytest.mark.parametrize(
    ("timing", "per_day"),
    [
        ({"code": {"coding": [{"code": "TID"}]}}, 3.0),
        ({"code": {"coding": [{"code": "QID"}]}}, 4.0),
        ({"code": {"coding": [{"code": "QD"}]}}, 1.0),
        ({"code": {"coding": [{"code": "QOD"}]}}, 0.5),
        ({"code": {"coding": [{"code": "AM"}]}}, 1.0),
        ({"code": {"coding": [{"code": "Q4H"}]}}, 6.0),
        ({"code": {"coding": [{"code": "Q8H"}]}}, 3.0),
        ({"code": {"coding": [{"code": "WHENEVER"}]}}, None),
        (
            {
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/v3/GTSAbbreviation", "code": "BID"}]
                }
            },
            2.0,
        ),
        ({"code": {"coding": [{"system": "http://example.org/local", "code": "BID"}]}}, None),
        ({"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}}, 3.0),
        ({"repeat": {"frequency": 2, "period": 1, "periodUnit": "wk"}}, 2 / 7),
        ({"repeat": {"period": 2, "periodUnit": "d"}}, 0.5),
        ({"repeat": {"timeOfDay": ["08:00:00", "20:00:00"]}}, 2.0),
        ({"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "dayOfWeek": ["mon"]}}, None),
        ({}, None),
    ],
)
def test_doses_per_day(timing: dict[str, Any], per_day: float | None) -> None:
    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["timing"] = timing
    [rx] = parse_prescriptions(mr)
    assert rx.doses_per_day == per_day
    expected_units = None if per_day is None else -(-per_day * 28 // 1)
    assert rx.units_for_course == expected_units


def test_supply_days_fallbacks_and_units_for_course() -> None:
    mr = hydrocortisone_request()
    del mr["dispenseRequest"]
    mr["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"] = {
        "start": "2024-05-03",
        "end": "2024-05-09",
    }
    [rx] = parse_prescriptions(mr)
    assert rx.supply_days == 7.0  # a date-only end counts its whole day
    assert rx.units_for_course == 21

    mr["dispenseRequest"] = {"validityPeriod": {"start": "2024-05-01", "end": "2024-05-31"}}
    del mr["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]
    [rx] = parse_prescriptions(mr)
    assert rx.supply_days == 31.0
    assert rx.units_for_course == 93

    # a quantity that counts units wins over the computed number of doses
    mr["dispenseRequest"]["quantity"] = {"value": 90, "unit": "capsules"}
    [rx] = parse_prescriptions(mr)
    assert (rx.quantity_value, rx.quantity_unit, rx.units_for_course) == (90.0, "capsules", 90)

    # a quantity in mL does not count units
    mr["dispenseRequest"]["quantity"] = {"value": 100, "unit": "mL"}
    [rx] = parse_prescriptions(mr)
    assert rx.units_for_course == 93

    # no schedule, no supply: only a repeat.count gives the course
    mr = hydrocortisone_request()
    del mr["dispenseRequest"]
    mr["dosageInstruction"][0]["timing"] = {"repeat": {"count": 5}}
    [rx] = parse_prescriptions(mr)
    assert (rx.doses_per_day, rx.supply_days, rx.units_for_course) == (None, None, 5)


def test_expected_supply_duration_units_convert_to_days() -> None:
    mr = hydrocortisone_request()
    supply = mr["dispenseRequest"]["expectedSupplyDuration"]
    for value, code, days in [(48, "h", 2.0), (2, "wk", 14.0), (1, "mo", 30.4375)]:
        supply |= {"value": value, "code": code, "unit": code}
        [rx] = parse_prescriptions(mr)
        assert rx.supply_days == days


def test_bundle_with_two_requests_and_medication_by_full_url_and_type_id() -> None:
    doc = hydrocortisone_bundle()
    second = copy.deepcopy(doc["entry"][2]["resource"])
    second["id"] = "rx-hc-0002"
    del second["medicationCodeableConcept"]
    second["medicationReference"] = {"reference": "Medication/hc-caps"}
    second["subject"] = {"reference": "Patient/pt-hc-1"}
    doc["entry"].append({"fullUrl": "urn:uuid:aaaa", "resource": second})
    doc["entry"].append(
        {
            "fullUrl": "https://nearfab.example.org/fhir/Medication/hc-caps",
            "resource": {
                "resourceType": "Medication",
                "id": "hc-caps",
                "code": {"coding": [{"system": SNOMED, "code": "396458002"}]},
            },
        }
    )
    first, other = parse_prescriptions(doc)
    assert first.source_id == "rx-hc-0001"
    assert other.source_id == "rx-hc-0002"
    assert other.medication_codes == (MedicationCode(SNOMED, "396458002", None),)
    assert other.medication_text is None
    assert other.patient_reference == "Patient/pt-hc-1"
    assert other.patient_birth_date == date(2019, 3, 14)

    # the same Medication found by its absolute fullUrl
    second["medicationReference"] = {
        "reference": "https://nearfab.example.org/fhir/Medication/hc-caps"
    }
    assert parse_prescriptions(doc)[1].medication_codes == other.medication_codes


def test_unresolved_external_medication_reference_keeps_its_display() -> None:
    mr = hydrocortisone_request()
    del mr["medicationCodeableConcept"]
    mr["medicationReference"] = {"reference": "Medication/elsewhere", "display": "hydrocortisone"}
    [rx] = parse_prescriptions(mr)
    assert (rx.medication_codes, rx.medication_text) == ((), "hydrocortisone")


# --------------------------------------------------------------------------------------------
# refusals


def test_invalid_json() -> None:
    err = refused(b'{"resourceType": "MedicationRequest",')
    assert err.field == "$"
    assert "not valid JSON" in err.message
    assert refused("NaN").field == "$"
    assert refused('{"resourceType": "Bundle", "total": NaN}').field == "$"
    assert refused(b"\xff\xfe\x00").field == "$"
    assert "JSON object" in refused("[1, 2]").message


def test_not_a_medication_request_or_bundle() -> None:
    err = refused({"resourceType": "Patient", "id": "x"})
    assert err.field == "resourceType"
    assert "Patient" in err.message
    assert "missing" in refused({"id": "x"}).message


def test_bundle_without_medication_request() -> None:
    doc = hydrocortisone_bundle()
    del doc["entry"][2]
    err = refused(doc)
    assert err.field == "Bundle.entry"
    assert "no MedicationRequest" in err.message


def test_r4b_model_failure_names_the_first_bad_field() -> None:
    mr = hydrocortisone_request()
    mr["authoredOn"] = "yesterday"
    err = refused(mr)
    assert err.field == f"{MR}.authoredOn"
    assert "not valid FHIR R4" in err.message

    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = "two"
    err = refused(mr)
    assert err.field == f"{MR}.{DOSE}.value"

    mr = hydrocortisone_request()
    mr["colour"] = "blue"
    err = refused(mr)
    assert err.field == f"{MR}.colour"
    assert "Extra" in err.message

    doc = hydrocortisone_bundle()
    doc["entry"][0]["resource"]["birthDate"] = "14/03/2019"
    err = refused(doc)
    assert err.field == "Bundle.entry[0].resource.birthDate"


def test_missing_status_and_bad_primitive_extension_are_model_failures() -> None:
    mr = hydrocortisone_request()
    del mr["status"]
    err = refused(mr)
    assert err.field == f"{MR}.status"
    assert "required" in err.message
    mr = hydrocortisone_request()
    mr["_status"] = 5
    assert refused(mr).field == f"{MR}._status"


@pytest.mark.parametrize(
    "status", ["cancelled", "completed", "entered-in-error", "stopped", "bogus"]
)
def test_status_that_cannot_be_made(status: str) -> None:
    mr = hydrocortisone_request()
    mr["status"] = status
    err = refused(mr)
    assert err.field == f"{MR}.status"
    assert f"status {status!r} cannot be made" in err.message


@pytest.mark.parametrize("intent", ["proposal", "plan", "reflex-order", "option", "nonsense"])
def test_intent_that_is_not_an_order(intent: str) -> None:
    mr = hydrocortisone_request()
    mr["intent"] = intent
    err = refused(mr)
    assert err.field == f"{MR}.intent"
    assert f"intent {intent!r}" in err.message


def test_refusal_inside_a_bundle_is_prefixed_with_the_entry() -> None:
    doc = hydrocortisone_bundle()
    doc["entry"][2]["resource"]["status"] = "cancelled"
    err = refused(doc)
    assert err.field == "Bundle.entry[2].resource.status"
    assert "cancelled" in err.message

    doc = hydrocortisone_bundle()
    del doc["entry"][2]["resource"]["dosageInstruction"][0]["doseAndRate"]
    err = refused(doc)
    assert err.field == f"Bundle.entry[2].resource.{DOSE}"


def test_bad_bundle_type_and_unknown_resource_types() -> None:
    doc = hydrocortisone_bundle()
    doc["type"] = "shoebox"
    err = refused(doc)
    assert err.field == "Bundle.type"
    assert "shoebox" in err.message

    doc = hydrocortisone_bundle()
    doc["entry"][1]["resource"]["resourceType"] = "Wizard"
    err = refused(doc)
    assert err.field == "Bundle.entry[1].resource.resourceType"
    assert "Wizard" in err.message

    mr = hydrocortisone_request()
    mr["contained"] = [{"resourceType": "Quantity", "id": "q"}]
    assert refused(mr).field == f"{MR}.contained[0].resourceType"


def test_no_medication_code_and_no_text() -> None:
    mr = hydrocortisone_request()
    mr["medicationCodeableConcept"] = {"coding": [{"display": "something"}]}
    err = refused(mr)
    assert err.field == f"{MR}.medication[x]"
    assert "no code and no text" in err.message

    mr = hydrocortisone_request()
    del mr["medicationCodeableConcept"]
    err = refused(mr)  # the R4B model requires medication[x]
    assert err.field.startswith(MR)


def test_medication_reference_that_does_not_resolve_or_is_not_a_medication() -> None:
    mr = hydrocortisone_request()
    del mr["medicationCodeableConcept"]
    mr["medicationReference"] = {"reference": "#nowhere"}
    err = refused(mr)
    assert err.field == f"{MR}.medicationReference.reference"
    assert "no contained" in err.message

    mr["contained"] = [{"resourceType": "Substance", "id": "nowhere", "code": {"text": "x"}}]
    err = refused(mr)
    assert "not a Medication" in err.message

    mr["medicationReference"] = {"reference": "Medication/elsewhere"}  # no display either
    err = refused(mr)
    assert err.field == f"{MR}.medication[x]"


def test_missing_subject() -> None:
    mr = hydrocortisone_request()
    del mr["subject"]
    err = refused(mr)
    assert err.field == f"{MR}.subject"
    assert "required" in err.message

    mr["subject"] = {"display": "someone"}
    err = refused(mr)
    assert err.field == f"{MR}.subject.reference"
    assert "no reference" in err.message


@pytest.mark.parametrize(
    ("subject", "field"),
    [
        ({"reference": "Group/ward-7"}, "subject.reference"),
        ({"reference": "https://example.org/fhir/Group/g1"}, "subject.reference"),
        ({"reference": "just some text"}, "subject.reference"),
        ({"reference": "#missing"}, "subject.reference"),
        ({"reference": "Patient/1", "type": "Group"}, "subject.type"),
    ],
)
def test_subject_not_a_patient(subject: dict[str, str], field: str) -> None:
    mr = hydrocortisone_request()
    mr["subject"] = subject
    err = refused(mr)
    assert err.field == f"{MR}.{field}"
    assert "Patient" in err.message or "contained" in err.message


def test_subject_pointing_at_a_non_patient_in_the_bundle() -> None:
    doc = hydrocortisone_bundle()
    doc["entry"][2]["resource"]["subject"] = {"reference": "Practitioner/pr-hc-1"}
    err = refused(doc)
    assert err.field == "Bundle.entry[2].resource.subject.reference"
    assert "not a Patient" in err.message


def test_patient_reference_forms() -> None:
    mr = hydrocortisone_request()
    mr["subject"] = {"reference": "https://example.org/fhir/Patient/p9/_history/3"}
    assert parse_prescriptions(mr)[0].patient_reference == "Patient/p9"


def test_partial_birth_date_is_not_invented() -> None:
    doc = hydrocortisone_bundle()
    doc["entry"][0]["resource"]["birthDate"] = "2019-03"
    [rx] = parse_prescriptions(doc)
    assert rx.patient_birth_date is None
    assert rx.patient_identifiers == ("https://fhir.nhs.uk/Id/nhs-number|9990000018",)


def test_no_dosage_instruction() -> None:
    mr = hydrocortisone_request()
    del mr["dosageInstruction"]
    err = refused(mr)
    assert err.field == f"{MR}.dosageInstruction"
    assert "no dosageInstruction" in err.message


def test_several_dosage_instructions_are_refused() -> None:
    mr = hydrocortisone_request()
    mr["dosageInstruction"].append(copy.deepcopy(mr["dosageInstruction"][0]))
    err = refused(mr)
    assert err.field == f"{MR}.dosageInstruction[1]"
    assert "2 dosage instructions" in err.message


def test_no_dose_quantity() -> None:
    mr = hydrocortisone_request()
    del mr["dosageInstruction"][0]["doseAndRate"]
    err = refused(mr)
    assert err.field == f"{MR}.{DOSE}"
    assert "no doseQuantity" in err.message

    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["doseAndRate"][0] = {
        "doseRange": {"low": {"value": 1, "unit": "mg"}, "high": {"value": 2, "unit": "mg"}}
    }
    err = refused(mr)
    assert err.field == f"{MR}.dosageInstruction[0].doseAndRate[0].doseRange"
    assert "range" in err.message and "1 to 2" in err.message


def test_a_dose_range_of_one_value_is_that_dose() -> None:
    """doseRange low = high = 2.5 mg is an exact dose (some systems send every dose so)."""
    mr = hydrocortisone_request()
    mg = {"value": 2.5, "unit": "mg", "system": UCUM, "code": "mg"}
    mr["dosageInstruction"][0]["doseAndRate"][0] = {"doseRange": {"low": mg, "high": dict(mg)}}
    [rx] = parse_prescriptions(mr)
    assert (rx.dose_value, rx.dose_unit, rx.dose_ucum) == (2.5, "mg", "mg")
    assert rx.dose_field == f"{MR}.dosageInstruction[0].doseAndRate[0].doseRange.low"
    assert in_mg(rx) == 2.5


@pytest.mark.parametrize(
    ("dose_range", "word"),
    [
        ({"low": {"value": 2.5, "unit": "mg"}}, "only a lower or an upper bound"),
        ({"high": {"value": 2.5, "unit": "mg"}}, "only a lower or an upper bound"),
        ({"low": {"value": 2.5, "unit": "mg"}, "high": {"value": 2.5, "unit": "g"}}, "same unit"),
        ({"low": {"value": 2, "unit": "mg"}, "high": {"value": 3, "unit": "mg"}}, "2 to 3"),
    ],
)
def test_other_dose_ranges_are_refused(dose_range: dict[str, Any], word: str) -> None:
    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["doseAndRate"][0] = {"doseRange": dose_range}
    err = refused(mr)
    assert err.field == f"{MR}.dosageInstruction[0].doseAndRate[0].doseRange"
    assert word in err.message


def test_the_medication_field_names_where_the_medicine_is() -> None:
    [coded] = parse_prescriptions(hydrocortisone_request())
    assert coded.medication_field == f"{MR}.medicationCodeableConcept"
    mr = hydrocortisone_request()
    concept = mr.pop("medicationCodeableConcept")
    mr["contained"] = [{"resourceType": "Medication", "id": "med", "code": concept}]
    mr["medicationReference"] = {"reference": "#med"}
    [referenced] = parse_prescriptions(mr)
    assert referenced.medication_field == f"{MR}.medicationReference"
    assert referenced.medication_codes == coded.medication_codes


@pytest.mark.parametrize(
    ("quantity", "word"),
    [
        ({"value": 0, "unit": "mg"}, "positive"),
        ({"value": -2.5, "unit": "mg"}, "positive"),
        ({"unit": "mg"}, "no numeric value"),
        ({"value": 2.5}, "no unit"),
        ({"value": 2.5, "unit": "mg", "comparator": "<"}, "comparator"),
        ({"value": 1, "unit": "mg/h", "system": UCUM, "code": "mg/h"}, "ratio"),
        ({"value": 60, "unit": "mg/m2"}, "ratio"),
        ({"value": 2, "unit": "banana"}, "not a mass"),
        ({"value": 2, "unit": "cm"}, "not a mass"),
    ],
)
def test_bad_doses(quantity: dict[str, Any], word: str) -> None:
    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = quantity
    err = refused(mr)
    assert err.field == f"{MR}.{DOSE}"
    assert word in err.message


# --------------------------------------------------------------------------------------------
# a dose per kg of body weight: read for the product family, with the patient's weight

PATIENT_URL = "urn:uuid:6f1d2c1e-0b6a-4c1e-9a57-3e2f0c9b1a01"  # the Bundle's Patient entry
MR_IN_BUNDLE = "Bundle.entry[2].resource"


def weight(value: float, unit: str = "kg", **extra: Any) -> dict[str, Any]:
    """A body weight Observation (LOINC 29463-7) of the Bundle's patient."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": PATIENT_URL},
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **extra,
    }


def per_kg_bundle(*observations: dict[str, Any]) -> dict[str, Any]:
    doc = hydrocortisone_bundle()
    doc["entry"][2]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {
        "value": 0.25,
        "unit": "mg/kg",
        "system": UCUM,
        "code": "mg/kg",
    }
    for i, obs in enumerate(observations):
        doc["entry"].append({"fullUrl": f"urn:uuid:obs-{i}", "resource": {"id": f"w{i}", **obs}})
    return doc


def test_a_dose_per_kg_is_read_not_refused_and_solid_dose_refuses_it() -> None:
    [rx] = parse_prescriptions(per_kg_bundle(weight(18.0)))
    dose = rx.dose
    assert (dose.value, dose.unit, dose.read_as) == (0.25, "mg/kg", "mg/kg")
    assert (dose.per_kg, dose.kind, dose.ucum) == (True, "mass", "mg")
    assert dose.weight == Quantity(18.0, "kg")
    assert dose.field == f"{MR_IN_BUNDLE}.{DOSE}"
    # the family decides: solid_dose refuses it as the reader did before (same words, field)
    with pytest.raises(FhirInputError) as info:
        SolidDosePrescription().accept_dose(dose)
    assert info.value.field == f"{MR_IN_BUNDLE}.{DOSE}"
    assert info.value.message == (
        f"{MR_IN_BUNDLE}.{DOSE}: dose unit 'mg/kg' is a ratio (per body weight, area or "
        "time): an absolute dose per administration is required"
    )


def test_a_dose_per_kg_with_an_unknown_amount_is_left_to_the_family() -> None:
    doc = per_kg_bundle()
    quantity = {"value": 2, "unit": "10*6.{cells}/kg", "system": UCUM, "code": "10*6.{cells}/kg"}
    doc["entry"][2]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = quantity
    [rx] = parse_prescriptions(doc)
    assert (rx.dose.per_kg, rx.dose.kind, rx.dose.ucum, rx.dose.weight) == (True, None, None, None)
    assert in_mg(rx) is None  # solid_dose does not take it


@pytest.mark.parametrize(
    ("observations", "kg"),
    [
        ([], None),
        ([weight(18.0)], 18.0),
        ([weight(18000, "g")], 18.0),
        ([weight(44, "[lb_av]")], 44 * 0.45359237),  # the international avoirdupois pound
        # the latest one counts; an undated one is the oldest
        (
            [
                weight(17.0, effectiveDateTime="2024-03-01"),
                weight(18.5, effectiveDateTime="2024-05-01T09:00:00Z"),
                weight(16.0),
            ],
            18.5,
        ),
        # not final, or another patient's, or not a body weight: not read
        (
            [
                weight(30.0, status="preliminary"),
                weight(31.0, subject={"reference": "Patient/someone-else"}),
                {
                    **weight(32.0),
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                },
            ],
            None,
        ),
    ],
)
def test_the_patients_weight_for_a_dose_per_kg(
    observations: list[dict[str, Any]], kg: float | None
) -> None:
    [rx] = parse_prescriptions(per_kg_bundle(*observations))
    assert rx.patient_weight_kg == (pytest.approx(kg) if kg is not None else None)


def test_the_weight_supporting_information_names_comes_first() -> None:
    doc = per_kg_bundle(weight(18.0, effectiveDateTime="2024-05-01"), weight(12.0))
    doc["entry"][2]["resource"]["supportingInformation"] = [{"reference": "urn:uuid:obs-1"}]
    [rx] = parse_prescriptions(doc)
    assert rx.patient_weight_kg == 12.0
    # a contained one, named by "#id", on a MedicationRequest alone
    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {"value": 1, "unit": "mg/kg"}
    mr["contained"] = [{**weight(9.5), "id": "bw", "subject": {"reference": "Patient/pt-hc-1"}}]
    mr["supportingInformation"] = [{"reference": "#bw"}]
    [rx] = parse_prescriptions(mr)
    assert rx.patient_weight_kg == 9.5


def test_a_weight_that_cannot_be_read_is_refused_naming_it() -> None:
    err = refused(per_kg_bundle(weight(18.0, "stone")))
    assert err.field == "Bundle.entry[3].resource.valueQuantity" and "stone" in err.message
    err = refused(per_kg_bundle(weight(-1.0)))
    assert err.field == "Bundle.entry[3].resource.valueQuantity" and "positive" in err.message
    # a dose in mg does not need the weight: an unreadable one is not looked at
    doc = per_kg_bundle(weight(18.0, "stone"))
    doc["entry"][2]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"] = {
        "value": 2.5,
        "unit": "mg",
    }
    [rx] = parse_prescriptions(doc)
    assert (rx.patient_weight_kg, in_mg(rx)) == (None, 2.5)


def test_negative_or_zero_dispense_quantity() -> None:
    for value in (-1, 0):
        mr = hydrocortisone_request()
        mr["dispenseRequest"]["quantity"] = {"value": value, "unit": "capsule"}
        err = refused(mr)
        assert err.field == f"{MR}.dispenseRequest.quantity"
        assert "positive" in err.message


def test_negative_durations_and_periods() -> None:
    mr = hydrocortisone_request()
    mr["dispenseRequest"]["expectedSupplyDuration"]["value"] = -28
    err = refused(mr)
    assert err.field == f"{MR}.dispenseRequest.expectedSupplyDuration"
    assert "positive" in err.message

    mr = hydrocortisone_request()
    mr["dispenseRequest"]["expectedSupplyDuration"] = {"value": 28, "unit": "boxes"}
    err = refused(mr)
    assert "not a time unit" in err.message

    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"] = {
        "value": -1,
        "code": "wk",
    }
    err = refused(mr)
    assert err.field == f"{MR}.dosageInstruction[0].timing.repeat.boundsDuration"

    mr = hydrocortisone_request()
    mr["dispenseRequest"]["validityPeriod"] = {"start": "2024-06-01", "end": "2024-05-01"}
    err = refused(mr)
    assert err.field == f"{MR}.dispenseRequest.validityPeriod"
    assert "before it starts" in err.message


@pytest.mark.parametrize(
    ("repeat", "field"),
    [
        ({"frequency": 1, "period": 1, "periodUnit": "fortnight"}, "periodUnit"),
        ({"frequency": 1, "period": 0, "periodUnit": "d"}, "period"),
        ({"frequency": 1, "period": -3, "periodUnit": "h"}, "period"),
        ({"frequency": 1, "period": 1}, "periodUnit"),
        ({"duration": 1, "durationUnit": "hours"}, "durationUnit"),
    ],
)
def test_bad_timing_codes(repeat: dict[str, Any], field: str) -> None:
    mr = hydrocortisone_request()
    mr["dosageInstruction"][0]["timing"] = {"repeat": repeat}
    err = refused(mr)
    assert err.field == f"{MR}.dosageInstruction[0].timing.repeat.{field}"


@pytest.mark.parametrize(
    "doc",
    [
        "null",
        "42",
        '"MedicationRequest"',
        {"resourceType": 5},
        {"resourceType": "Bundle"},
        {"resourceType": "Bundle", "type": "collection", "entry": "x"},
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": "x"}]},
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {}}]},
        {"resourceType": "Bundle", "type": "collection", "entry": [{}]},
        {"resourceType": "MedicationRequest"},
        {"resourceType": "MedicationRequest", "contained": [{"resourceType": "Nope"}]},
        {"resourceType": "MedicationRequest", "contained": "x"},
        {"resourceType": "MedicationRequest", "dosageInstruction": [[]]},
    ],
)
def test_odd_documents_only_ever_raise_fhir_input_error(doc: Any) -> None:
    err = refused(doc)
    assert err.message


def test_to_dict_carries_code_field_and_message() -> None:
    mr = hydrocortisone_request()
    mr["status"] = "cancelled"
    err = refused(mr)
    assert err.to_dict() == {
        "code": "fhir_invalid",
        "field": "MedicationRequest.status",
        "message": "MedicationRequest.status: status 'cancelled' cannot be made: only active, "
        "draft, on-hold prescriptions are accepted",
    }
