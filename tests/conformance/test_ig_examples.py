"""MedicationRequests from published implementation guides: US Core, UK Core, and NHS England's
Electronic Prescription Service (EPS) request examples (files and sources in data/ig/README.md).

Each expected outcome below is written by reading the example against its guide and FHIR R4,
with nearfab's documented choices (docs/prescriptions.md), NOT by running the code:

- a prescription nearfab can make is an order (`intent` order/original-order/instance-order/
  filler-order) that is still to be done (`status` active/draft/on-hold): US Core's
  self-reported Tylenol is a `plan`, and every UK Core example is `completed` (its option
  intents say the same: nothing left to make);
- it states one exact amount per administration (`doseAndRate.doseQuantity`): most EPS
  examples give the dose only as text ("2 times a day for 10 days", "Follow directions"), which
  says how often but not how much, so they are refused; several dosageInstruction entries (a
  prednisolone regimen, two instructions for amoxicillin) are refused too;
- the medicine may be coded inline, in a contained Medication (#id) or in a Medication the
  request references in its Bundle (US Core's referenced example, the EPS nurse example).

"Accepted" means read into a prescription (what the order's family then makes of it is a
separate step). In a Bundle, every refusal names its entry's path. Each EPS Bundle is read with
one of its MedicationRequests at a time (the others taken out), so every request gets its own
verdict; the US Core referenced request is read in a Bundle with the guide's Medication
uscore-med2, and the other US Core and UK Core examples alone.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nearfab.orders.fhir import RXNORM, SNOMED, FhirInputError, parse_prescriptions

DATA = Path(__file__).parent / "data/ig"


@dataclass(frozen=True)
class Expect:
    why: str
    refused_at: str | None = None  # the element, relative to the MedicationRequest
    dose: tuple[float, str] | None = None  # value, unit as written
    per_day: float | None = None
    supply_days: float | None = None
    units: int | None = None
    code: tuple[str, str] | None = None  # a coding the medication must carry


def refused(at: str, why: str) -> Expect:
    return Expect(why, refused_at=at)


NO_DOSE = "dosageInstruction[0]"
COMPLETED = "status completed: the prescription was carried out, nothing left to make"
# (folder/file, MedicationRequest entry index in the Bundle, or None for a lone resource)
# fmt: off
EXPECTED: dict[tuple[str, int | None], Expect] = {
    # --- US Core
    ("us-core/medicationrequest-coded-oral-axid", None): Expect(
        "active order: nizatidine 15 mg/mL solution, 10 mL twice a day, 30 days' supply",
        dose=(10, "ml"), per_day=2, supply_days=30, code=(RXNORM, "476872")),
    ("us-core/medicationrequest-contained-oral-axid", None): Expect(
        "the same, the medicine in a contained Medication (#med2)",
        dose=(10, "ml"), per_day=2, supply_days=30, code=(RXNORM, "582620")),
    ("us-core/medicationrequest-referenced-oral-axid", None): Expect(
        "the same, the medicine a referenced Medication (uscore-med2) in the Bundle",
        dose=(10, "ml"), per_day=2, supply_days=30, code=(RXNORM, "582620")),
    ("us-core/medicationrequest-self-tylenol", None): refused(
        "intent", "intent plan: a self-reported medicine, no order (also no structured dose)"),
    # --- UK Core (all eight are completed)
    **{
        (f"uk-core/UKCore-MedicationRequest-{name}-Example", None): refused("status", COMPLETED)
        for name in ("Amoxicillin", "CiprofloxacinIV", "CiprofloxacinOral", "Clarithromycin",
                     "Doxycycline", "EyeDrops", "ParacetamolIV", "ParacetamolOral")
    },
    # --- NHS EPS
    ("nhs-eps/primary-care-acute-nominated", 1): refused(
        NO_DOSE, "amoxicillin 250 mg capsules, '2 times a day for 10 days': no amount per dose"),
    ("nhs-eps/primary-care-acute-nominated", 2): refused(
        NO_DOSE, "co-codamol, '2 times a day for 10 days': no amount per dose"),
    ("nhs-eps/primary-care-acute-nominated", 3): refused(
        NO_DOSE, "pseudoephedrine, '3 times a day': no amount per dose"),
    ("nhs-eps/primary-care-acute-nominated", 4): refused(
        NO_DOSE, "azithromycin, '3 times a day': no amount per dose"),
    ("nhs-eps/primary-care-acute-multiple-dosages", 1): refused(
        "dosageInstruction", "amoxicillin with two dosageInstruction entries"),
    ("nhs-eps/primary-care-acute-and-repeat", 1): refused(
        NO_DOSE, "paracetamol soluble tablets, '4 times a day - Oral': no amount per dose"),
    ("nhs-eps/primary-care-acute-and-repeat", 2): refused(
        NO_DOSE, "salbutamol inhaler, '5 times a day': no amount per dose"),
    ("nhs-eps/secondary-care-methotrexate", 1): Expect(
        "methotrexate injection, 10 mg five times a day for 10 days (boundsDuration)",
        dose=(10, "milligram"), per_day=5, supply_days=10, code=(SNOMED, "15517911000001104")),
    ("nhs-eps/secondary-care-multiple-drugs", 1): Expect(
        "diclofenac potassium 50 mg tablets, 1 tablet three times a day, 84 tablets",
        dose=(1, "tablet"), per_day=3, units=84, code=(SNOMED, "329968007")),
    ("nhs-eps/secondary-care-multiple-drugs", 2): refused(
        NO_DOSE, "paracetamol 500 mg tablets, '4 times a day': no amount per dose"),
    ("nhs-eps/secondary-care-multiple-drugs", 3): refused(
        NO_DOSE, "morphine 15 mg modified-release, twice a day: no amount per dose"),
    ("nhs-eps/secondary-care-multiple-drugs", 4): Expect(
        "fentanyl 25 microgram/hour patches, 1 patch every 72 hours, 5 patches",
        dose=(1, "patch"), per_day=1 / 3, units=5, code=(SNOMED, "36120011000001101")),
    ("nhs-eps/secondary-care-controlled-drugs", 1): refused(
        NO_DOSE, "morphine 10 mg modified-release, '1 tablet, daily' as text only"),
    ("nhs-eps/secondary-care-controlled-drugs", 2): refused(
        NO_DOSE, "diazepam 2 mg, '1 tablet, at NIGHT' as text only"),
    ("nhs-eps/secondary-care-moxifloxacin", 1): Expect(
        "moxifloxacin 400 mg, five times a day for 5 days",
        dose=(400, "milligram"), per_day=5, supply_days=5, code=(SNOMED, "408015000")),
    ("nhs-eps/secondary-care-cream", 1): Expect(
        "ketoconazole cream, apply 30 g five times a day for 5 days (an exact amount)",
        dose=(30, "gram"), per_day=5, supply_days=5, code=(SNOMED, "37740611000001101")),
    ("nhs-eps/homecare-amlodipine-furosemide", 1): Expect(
        "amlodipine 5 mg/5 mL solution, 5 mg five times a day for 10 days",
        dose=(5, "milligram"), per_day=5, supply_days=10, code=(SNOMED, "13892511000001100")),
    ("nhs-eps/homecare-amlodipine-furosemide", 2): refused(
        NO_DOSE, "furosemide 40 mg tablets, '5 times a day - Oral': no amount per dose"),
    ("nhs-eps/homecare-concurrent-dosages", 1): refused(
        "dosageInstruction", "prednisolone: three concurrent dosageInstruction entries"),
    ("nhs-eps/secondary-care-medication-reference", 1): refused(
        NO_DOSE, "nystatin suspension, 'Follow directions'"),
    ("nhs-eps/secondary-care-medication-reference", 2): refused(
        NO_DOSE, "phosphates enema, 'Follow directions'"),
    ("nhs-eps/secondary-care-medication-reference", 3): refused(
        NO_DOSE, "diclofenac plasters, 'Follow directions'"),
    ("nhs-eps/secondary-care-medication-reference", 4): refused(
        NO_DOSE, "a Medication referenced by urn:uuid (it resolves: the refusal is the dose, "
                 "'Follow directions', not the medicine)"),
}
# fmt: on


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return doc


def _document(name: str, index: int | None) -> tuple[Any, str]:
    """The document to read and the FHIR path of its MedicationRequest."""
    doc = _load(name)
    if name.endswith("referenced-oral-axid"):
        medication = _load("us-core/uscore-med2")
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": "http://example.org/fhir/MedicationRequest/x", "resource": doc},
                {
                    "fullUrl": "http://example.org/fhir/Medication/uscore-med2",
                    "resource": medication,
                },
            ],
        }
        return bundle, "Bundle.entry[0].resource"
    if index is None:
        return doc, "MedicationRequest"
    bundle = copy.deepcopy(doc)
    entries = bundle["entry"]
    assert entries[index]["resource"]["resourceType"] == "MedicationRequest"
    kept = [
        e
        for i, e in enumerate(entries)
        if i == index or e["resource"]["resourceType"] != "MedicationRequest"
    ]
    bundle["entry"] = kept
    return bundle, f"Bundle.entry[{kept.index(entries[index])}].resource"


CASES = sorted(EXPECTED, key=lambda k: (k[0], k[1] or 0))


def test_at_least_twenty_guide_requests_are_covered() -> None:
    requests = 0
    for path in sorted(DATA.rglob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc["resourceType"] == "MedicationRequest":
            requests += 1
            assert (f"{path.parent.name}/{path.stem}", None) in EXPECTED, path
        elif doc["resourceType"] == "Bundle":
            for i, entry in enumerate(doc["entry"]):
                if entry["resource"]["resourceType"] == "MedicationRequest":
                    requests += 1
                    # the one Bundle that repeats another's requests is only read for its first
                    if "multiple-dosages" not in path.stem or i == 1:
                        assert (f"{path.parent.name}/{path.stem}", i) in EXPECTED, (path, i)
    assert len(EXPECTED) >= 20 and requests >= 20
    guides = {name.split("/")[0] for name, _ in EXPECTED}
    assert guides == {"us-core", "uk-core", "nhs-eps"}


@pytest.mark.parametrize(("name", "index"), CASES, ids=lambda v: str(v))
def test_guide_request_gets_the_outcome_its_guide_means(name: str, index: int | None) -> None:
    expect = EXPECTED[(name, index)]
    doc, where = _document(name, index)
    try:
        outcome = parse_prescriptions(doc)
    except FhirInputError as error:
        assert expect.refused_at is not None, (name, index, expect.why, error.message)
        assert error.field is not None
        assert error.field.startswith(f"{where}.{expect.refused_at}"), (expect.why, error.field)
        assert error.message.startswith(error.field)
        return
    assert expect.refused_at is None, (name, index, expect.why, "was accepted")
    [rx] = outcome
    assert rx.fhir_path == where
    assert expect.dose is not None
    assert (rx.dose_value, rx.dose_unit) == (pytest.approx(expect.dose[0]), expect.dose[1])
    if expect.per_day is not None:
        assert rx.doses_per_day == pytest.approx(expect.per_day)
    if expect.supply_days is not None:
        assert rx.supply_days == pytest.approx(expect.supply_days)
    if expect.units is not None:
        assert rx.units_for_course == expect.units
    if expect.code is not None:
        assert expect.code in {(c.system, c.code) for c in rx.medication_codes}
