"""The official HL7 FHIR R4 MedicationRequest examples (../shared/data/standards/fhir).

Each example's expected outcome is written below by a person reading the example itself
against FHIR R4 and the mapping's documented choices (nearfab/orders/fhir.py, module docstring;
docs/prescriptions.md), NOT by running the code:

- only a prescription that can still be made is taken: `MedicationRequest.status` active,
  draft or on-hold (FHIR R4 medicationrequest-status: `completed` means "all actions that are
  implied by the prescription have occurred", so there is nothing left to make);
- one dose per prescription: several `dosageInstruction` entries (a taper, a sliding scale,
  a day-1 loading dose) are refused rather than read from the first;
- a dose is one absolute amount per administration (`doseQuantity`): a `doseRange`, a dose per
  body weight or surface (mg/kg, mg/m2) or no dose at all is refused;
- the medication must be identified: a code or a text (a contained Medication with neither,
  only its ingredients, is refused).

A refusal must name the FHIR element at fault (the table gives the path it must start with);
an acceptance must carry the dose the example states. Where an example has several defects
(a completed prescription with a dose range), the status is checked first: whether a
prescription can be made at all comes before how it is dosed.

Source of the files: the HL7 FHIR R4 (4.0.1) examples, medicationrequest0301..0339 and
medicationrequestexample1/2, as dumped in andriyor/fhir-examples-dump@b56b4430fa46.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import shared_data_dir

from nearfab.families.solid_dose.prescription import SolidDosePrescription
from nearfab.orders.fhir import FhirInputError, PrescriptionIn, parse_prescriptions

pytestmark = pytest.mark.shared_data

FHIR = Path("standards") / "fhir"
ABSENT = "<../shared/data absent>"

MR = "MedicationRequest"
STATUS = f"{MR}.status"
SEVERAL = f"{MR}.dosageInstruction"
DOSE0 = f"{MR}.dosageInstruction[0]"


@dataclass(frozen=True)
class Expect:
    """What a reader of the example expects: `refused_at` (a FHIR path prefix) or, for an
    accepted one, the dose it states (value, and in mg when it is a mass) and, when the
    schedule is a fixed daily rate, the doses per day."""

    why: str
    refused_at: str | None = None
    dose_value: float | None = None
    dose_mg: float | None = None
    per_day: float | None = None


def refused(path: str, why: str) -> Expect:
    return Expect(why, refused_at=path)


def taken(
    why: str, dose_value: float, *, dose_mg: float | None = None, per_day: float | None = None
) -> Expect:
    return Expect(why, dose_value=dose_value, dose_mg=dose_mg, per_day=per_day)


COMPLETED = "status completed: nothing left to make"
# fmt: off
EXPECTED: dict[str, Expect] = {
    "medicationrequest0301": refused(STATUS, COMPLETED + " (also a 1-2 TAB doseRange)"),
    "medicationrequest0302": refused(SEVERAL, "two dosageInstruction: 2 TAB day 1, then 1 TAB"),
    "medicationrequest0303": refused(SEVERAL, "three dosageInstruction: a prednisone taper"),
    "medicationrequest0304": refused(STATUS, COMPLETED),
    "medicationrequest0305": refused(STATUS, COMPLETED),
    "medicationrequest0306": taken("active, 6 mg once a day (frequency 1 per 1 d)",
                                   6, dose_mg=6, per_day=1),
    "medicationrequest0307": refused(STATUS, COMPLETED),
    "medicationrequest0308": refused(STATUS, COMPLETED),
    "medicationrequest0309": refused(f"{DOSE0}.doseAndRate[0].doseQuantity",
                                     "active, but 1000 mg/m2: a dose per body surface"),
    "medicationrequest0310": refused(f"{DOSE0}.doseAndRate[0]",
                                     "active, but a doseRange of 1-2 TAB"),
    "medicationrequest0312": taken("active, 100 mg three times a day (3 per 1 d)",
                                   100, dose_mg=100, per_day=3),
    "medicationrequest0313": refused(STATUS, COMPLETED),
    "medicationrequest0314": refused(STATUS, COMPLETED),
    "medicationrequest0315": refused(f"{DOSE0}.doseAndRate[0]",
                                     "active, but a doseRange of 0.05-0.1 mg/kg"),
    "medicationrequest0316": refused(STATUS, COMPLETED + " (also 1.8 mg/kg)"),
    "medicationrequest0317": refused(STATUS, COMPLETED + " (also three dosageInstruction)"),
    "medicationrequest0318": taken("active, 500 mg every 6 h (1 per 6 h = 4 a day)",
                                   500, dose_mg=500, per_day=4),
    "medicationrequest0319": refused(STATUS, COMPLETED),
    "medicationrequest0320": refused(STATUS, COMPLETED),
    "medicationrequest0321": refused(SEVERAL, "three dosageInstruction: insulin at 3 meals"),
    "medicationrequest0322": refused(STATUS, COMPLETED),
    "medicationrequest0323": refused(STATUS, COMPLETED),
    "medicationrequest0324": refused(STATUS, COMPLETED),
    "medicationrequest0325": taken("on-hold, 1 ea four times a day", 1, per_day=4),
    "medicationrequest0326": taken("on-hold, 1 ea (a puff) twice a day", 1, per_day=2),
    "medicationrequest0327": taken("active, 1 patch; 3 per week is not a daily rate", 1),
    "medicationrequest0328": taken("active, 1 ea twice a day", 1, per_day=2),
    "medicationrequest0329": refused(f"{MR}.medication",
                                     "on-hold, but its contained Medication has no code and "
                                     "no text (ingredients only)"),
    "medicationrequest0330": taken("active, 1 OPDROP (a drop) twice a day", 1, per_day=2),
    "medicationrequest0331": taken("active, 7 mg once a day", 7, dose_mg=7, per_day=1),
    "medicationrequest0332": taken("active, a single 500 mg dose (count 1, no rate)",
                                   500, dose_mg=500),
    "medicationrequest0333": refused(f"{DOSE0}.doseAndRate[0]",
                                     "active, but a doseRange of 1-2 TAB"),
    "medicationrequest0334": taken("on-hold, 1 ea four times on Mondays: not every day", 1),
    "medicationrequest0335": taken("on-hold, 1 ea at 09:00", 1),
    "medicationrequest0336": refused(STATUS, COMPLETED + " (also a rate, no dose)"),
    "medicationrequest0337": refused(STATUS, COMPLETED + " (also a rate, no dose)"),
    "medicationrequest0338": refused(STATUS, COMPLETED),
    "medicationrequest0339": refused(SEVERAL, "two dosageInstruction (tablet and cream)"),
    "medicationrequestexample1": taken("active, 1 TAB, timing code QD (once a day)",
                                       1, per_day=1),
    "medicationrequestexample2": refused(DOSE0, "active, but no doseAndRate: only the text "
                                                "'Take one tablet daily as directed'"),
}
# fmt: on


def _holds_medication_request(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    if doc.get("resourceType") == "MedicationRequest":
        return True
    if doc.get("resourceType") == "Bundle":
        return any(
            isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == "MedicationRequest"
            for e in doc.get("entry") or []
        )
    return False


def _example_files() -> list[str]:
    root = shared_data_dir()
    if root is None or not (root / FHIR).is_dir():
        return [ABSENT]
    out = []
    for path in sorted((root / FHIR).rglob("*.json")):
        if "schema" in path.name:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if _holds_medication_request(doc):
            out.append(path.relative_to(root / FHIR).as_posix())
    return out or [ABSENT]


EXAMPLES = _example_files()


def _outcome(doc: Any) -> list[PrescriptionIn] | FhirInputError:
    try:
        return parse_prescriptions(doc)
    except FhirInputError as err:
        return err


def _files(shared_data: Path) -> list[str]:
    files = [p for p in EXAMPLES if p != ABSENT]
    if not files:
        pytest.skip("no FHIR examples under ../shared/data/standards/fhir")
    return files


def test_the_table_covers_every_example_file(shared_data: Path) -> None:
    """A new or renamed example file must get its own line in the table."""
    names = {Path(p).stem for p in _files(shared_data)}
    assert names == set(EXPECTED), (sorted(names - set(EXPECTED)), sorted(set(EXPECTED) - names))


@pytest.mark.parametrize("relpath", EXAMPLES)
def test_official_example_gets_the_outcome_a_reader_expects(
    shared_data: Path, relpath: str
) -> None:
    if relpath == ABSENT:
        pytest.skip("no FHIR examples under ../shared/data/standards/fhir")
    expect = EXPECTED[Path(relpath).stem]
    outcome = _outcome((shared_data / FHIR / relpath).read_bytes())
    if expect.refused_at is not None:
        assert isinstance(outcome, FhirInputError), (relpath, expect.why, outcome)
        assert outcome.code == "fhir_invalid"
        assert outcome.field and outcome.field.startswith(expect.refused_at), (
            relpath,
            expect.why,
            outcome.field,
        )
        assert outcome.message.strip()
        return
    assert not isinstance(outcome, FhirInputError), (relpath, expect.why, outcome)
    [rx] = outcome  # one MedicationRequest, one prescription
    assert rx.status in ("active", "draft", "on-hold")
    assert rx.patient_reference == "Patient/pat1"  # every example's subject
    assert rx.medication_codes or rx.medication_text
    assert rx.dose_value == pytest.approx(expect.dose_value)
    assert rx.dose_unit
    if expect.dose_mg is not None:
        # the dose in mg as the solid_dose family takes it from the prescription
        dose = SolidDosePrescription().accept_dose(rx.dose)
        assert dose.unit == "mg" and dose.value == pytest.approx(expect.dose_mg)
    if expect.per_day is not None:
        assert rx.doses_per_day == pytest.approx(expect.per_day)


def test_the_counts_follow_from_the_table(shared_data: Path) -> None:
    """13 of the 40 official examples are makeable prescriptions; of the 27 refused, 17 are
    completed (counted from the files' own `status`, independently of the mapping)."""
    files = _files(shared_data)
    statuses = {
        Path(p).stem: json.loads((shared_data / FHIR / p).read_text(encoding="utf-8"))["status"]
        for p in files
    }
    assert sum(1 for s in statuses.values() if s == "completed") == 17
    assert {n for n, e in EXPECTED.items() if e.refused_at == STATUS} == {
        n for n, s in statuses.items() if s == "completed"
    }
    accepted = [
        p
        for p in files
        if not isinstance(_outcome((shared_data / FHIR / p).read_bytes()), FhirInputError)
    ]
    assert len(accepted) == sum(1 for e in EXPECTED.values() if e.refused_at is None) == 13


def _resources(root: Path) -> list[dict[str, Any]]:
    """Every top-level JSON object under standards/fhir (the schema files included, filtered
    later by resourceType)."""
    out = []
    for path in sorted((root / FHIR).rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            out.append(doc)
    return out


def test_examples_bundled_with_their_patient_resolve_the_patient(shared_data: Path) -> None:
    """Each example in a collection Bundle beside the official Patient/Practitioner/Medication
    examples: the verdict the table gives, fields prefixed by the entry, and the patient's
    identifiers read from the official Patient example (pat1)."""
    files = _files(shared_data)
    others = [
        r
        for r in _resources(shared_data)
        if r.get("resourceType") in ("Patient", "Practitioner", "Medication") and r.get("id")
    ]
    seen: set[tuple[str, str]] = set()
    extra = []
    for r in others:
        key = (r["resourceType"], r["id"])
        if key not in seen:
            seen.add(key)
            extra.append(r)
    patients = {r["id"]: r for r in extra if r["resourceType"] == "Patient"}
    assert "pat1" in patients, "the official Patient example pat1 is part of the examples"
    checked = 0
    for relpath in files:
        doc = json.loads((shared_data / FHIR / relpath).read_text(encoding="utf-8"))
        if doc.get("resourceType") != "MedicationRequest":
            continue
        expect = EXPECTED[Path(relpath).stem]
        text = json.dumps(doc)
        # beside it: the official resources it references (a Bundle holds at most 50 entries)
        referenced = [r for r in extra if f"{r['resourceType']}/{r['id']}" in text]
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": doc}]
            + [
                {"fullUrl": f"http://hl7.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                for r in referenced
            ],
        }
        together = _outcome(bundle)
        if expect.refused_at is not None:
            assert isinstance(together, FhirInputError), relpath
            prefix = expect.refused_at.replace(MR, "Bundle.entry[0].resource", 1)
            assert together.field.startswith(prefix), (relpath, together.field)
            continue
        assert not isinstance(together, FhirInputError), (relpath, together)
        [rx] = together
        assert rx.dose_value == pytest.approx(expect.dose_value)
        assert rx.patient_reference == "Patient/pat1"
        expected_ids = tuple(
            f"{i.get('system') or ''}|{i['value']}"
            for i in patients["pat1"].get("identifier", [])
            if i.get("value")
        )
        assert expected_ids  # the official pat1 has an identifier
        assert rx.patient_identifiers == expected_ids
        assert rx.patient_name
        checked += 1
    assert checked == 13
