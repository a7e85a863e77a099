"""The official HL7 FHIR R4 MedicationRequest examples (../shared/data/standards/fhir).

Every example is either accepted (≥1 PrescriptionIn with a patient and a dose) or refused with a
FhirInputError naming a field: the mapping never crashes. Skipped when ../shared/data is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from nearfab.orders.fhir import FhirInputError, PrescriptionIn, parse_prescriptions

pytestmark = pytest.mark.shared_data

FHIR = Path("standards") / "fhir"
ABSENT = "<../shared/data absent>"

# Observed against andriyor/fhir-examples-dump@b56b4430fa46 (40 MedicationRequest examples):
# 13 accepted — medicationrequest0306, 0312, 0318, 0325, 0326, 0327, 0328, 0330, 0331, 0332,
# 0334, 0335 and medicationrequestexample1.
# 27 refused — status 'completed' (17: 0301, 0304, 0305, 0307, 0308, 0313, 0314, 0316, 0317,
# 0319, 0320, 0322, 0323, 0324, 0336, 0337, 0338), several dosageInstructions
# (0302, 0303, 0321, 0339), a dose range instead of a doseQuantity (0310, 0315, 0333),
# a per-body-surface dose mg/m2 (0309), a Medication with no code and no text (0329),
# no doseQuantity (medicationrequestexample2).
MIN_ACCEPTED = 13
EXPECTED_ACCEPTED = {
    "medicationrequest0306",
    "medicationrequest0312",
    "medicationrequest0318",
    "medicationrequest0325",
    "medicationrequest0326",
    "medicationrequest0327",
    "medicationrequest0328",
    "medicationrequest0330",
    "medicationrequest0331",
    "medicationrequest0332",
    "medicationrequest0334",
    "medicationrequest0335",
    "medicationrequestexample1",
}


def _shared_root() -> Path | None:
    """Same rule as tests/conftest.py (used at collection time, before fixtures exist)."""
    env = os.environ.get("NEARFAB_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return path if path.is_dir() else None


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
    root = _shared_root()
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


def _check(outcome: list[PrescriptionIn] | FhirInputError) -> None:
    if isinstance(outcome, FhirInputError):
        assert outcome.field, outcome
        assert outcome.message.strip()
        assert outcome.code == "fhir_invalid"
        return
    assert len(outcome) >= 1
    for rx in outcome:
        assert rx.patient_reference
        assert rx.dose_value > 0
        assert rx.dose_unit
        assert rx.status in ("active", "draft", "on-hold")
        assert rx.medication_codes or rx.medication_text


@pytest.mark.parametrize("relpath", EXAMPLES)
def test_official_example_is_accepted_or_refused_cleanly(shared_data: Path, relpath: str) -> None:
    if relpath == ABSENT:
        pytest.skip("no FHIR examples under ../shared/data/standards/fhir")
    text = (shared_data / FHIR / relpath).read_bytes()
    _check(_outcome(text))


def _resources(root: Path) -> list[dict[str, Any]]:
    """Every top-level JSON object under standards/fhir (the schema files included, filtered
    later by resourceType)."""
    out = []
    for path in sorted((root / FHIR).rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict):
            out.append(doc)
    return out


def test_a_non_trivial_number_of_examples_are_accepted(shared_data: Path) -> None:
    accepted: set[str] = set()
    refused: dict[str, str] = {}
    files = [p for p in EXAMPLES if p != ABSENT]
    if not files:
        pytest.skip("no FHIR examples under ../shared/data/standards/fhir")
    for relpath in files:
        outcome = _outcome((shared_data / FHIR / relpath).read_bytes())
        name = Path(relpath).stem
        if isinstance(outcome, FhirInputError):
            refused[name] = outcome.field or ""
        else:
            accepted.add(name)
    assert len(accepted) >= MIN_ACCEPTED, sorted(accepted)
    assert accepted >= EXPECTED_ACCEPTED, sorted(EXPECTED_ACCEPTED - accepted)
    # every refusal says where
    assert all(refused.values())
    # completed prescriptions are the main refusal reason, and always on status
    status_refusals = [n for n, f in refused.items() if f == "MedicationRequest.status"]
    assert len(status_refusals) >= 17


def test_examples_bundled_with_their_patient_resolve_the_patient(shared_data: Path) -> None:
    """Each example in a collection Bundle beside the official Patient/Practitioner/Medication
    examples: same verdict as alone, fields prefixed by the entry, patient details resolved."""
    files = [p for p in EXAMPLES if p != ABSENT]
    if not files:
        pytest.skip("no FHIR examples under ../shared/data/standards/fhir")
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
    checked = 0
    for relpath in files:
        doc = json.loads((shared_data / FHIR / relpath).read_text(encoding="utf-8"))
        if doc.get("resourceType") != "MedicationRequest":
            continue
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": doc}]
            + [
                {"fullUrl": f"http://hl7.org/fhir/{r['resourceType']}/{r['id']}", "resource": r}
                for r in extra
            ],
        }
        alone = _outcome(doc)
        together = _outcome(bundle)
        _check(together)
        if isinstance(alone, FhirInputError):
            assert isinstance(together, FhirInputError), relpath
            assert together.field == alone.field.replace(
                "MedicationRequest", "Bundle.entry[0].resource", 1
            ), (relpath, alone.field, together.field)
            continue
        assert not isinstance(together, FhirInputError), (relpath, together)
        [single] = alone
        [rx] = together
        assert rx.dose_value == single.dose_value and rx.dose_mg == single.dose_mg
        assert rx.units_for_course == single.units_for_course
        assert rx.patient_reference == single.patient_reference
        patient_id = single.patient_reference.removeprefix("Patient/")
        patient = patients.get(patient_id)
        if patient is not None:
            expected_ids = tuple(
                f"{i.get('system') or ''}|{i['value']}"
                for i in patient.get("identifier", [])
                if i.get("value")
            )
            assert rx.patient_identifiers == expected_ids
            assert rx.patient_identifiers  # the official pat1 has an identifier
            assert rx.patient_name
            checked += 1
    assert checked >= MIN_ACCEPTED
