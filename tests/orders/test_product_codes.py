"""Prescriptions coded by product (RxNorm SCD), as US and NHS feeds send them (issue 14).

The demo propranolol master file declares the products it makes: the RxNorm SCDs for
propranolol hydrochloride 10, 20 and 40 MG Oral Tablet (src/nearfab/families/solid_dose/codes,
extracted from NLM VSAC's "Beta Blocker Therapy" value set). Expected outcomes come from what
the code means: RxNorm 856448 is "propranolol hydrochloride 10 MG Oral Tablet", one tablet
holds 10 mg, so a 10 mg or 20 mg dose (1 or 2 tablets) agrees with it and 25 mg (2.5 tablets)
does not.
"""

from __future__ import annotations

import random
import re
from datetime import date, timedelta
from typing import Any

import pytest

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.demo import PROPRANOLOL, prescription_bundle
from nearfab.families.solid_dose.codes import product_code
from nearfab.families.solid_dose.codes.products import PRODUCTS, SOURCE
from nearfab.identity import actor_of
from nearfab.orders import Order

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TODAY = date(2026, 1, 5)  # the ManualClock's date
DOSE = "Bundle.entry[1].resource.dosageInstruction[0].doseAndRate[0].doseQuantity"
MEDICATION = "Bundle.entry[1].resource.medicationCodeableConcept"


def scd_bundle(code: str, display: str, dose: dict[str, Any], seed: int = 7) -> dict[str, Any]:
    """A propranolol Bundle (twice a day, 14 days) coded only by one RxNorm SCD."""
    doc = prescription_bundle(
        random.Random(seed),
        today=TODAY,
        medication="propranolol",
        dose_mg=10,
        days=14,
        birth_date=TODAY - timedelta(days=30 * 365),
    )
    mr = doc["entry"][1]["resource"]
    mr["medicationCodeableConcept"] = {
        "coding": [{"system": RXNORM, "code": code, "display": display}],
        "text": display,
    }
    mr["dosageInstruction"][0]["doseAndRate"][0] = {"doseQuantity": dose}
    return doc


def mg(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}


def ug(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "ug", "system": "http://unitsofmeasure.org", "code": "ug"}


def tablets(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "tablet"}


def submit(app: App, doc: dict[str, Any]) -> list[Order]:
    with app.uow() as uow:
        user = app.users.by_username(uow, "clinician")
        assert user is not None
        who = actor_of(user, uow.session)
    with app.uow() as uow:
        return app.orders.submit(uow, who, doc, site_id="GSTT-PH")


def refused(app: App, doc: dict[str, Any]) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        submit(app, doc)
    return info.value


def test_the_shipped_codes_carry_the_strength_their_rxnorm_names_state() -> None:
    """Each code's strength is the number its RxNorm normalised name states (read here with a
    separate pattern), and the source is named."""
    assert {p["code"] for p in PRODUCTS} == {"856448", "856457", "856519"}
    for p in PRODUCTS:
        number = re.search(r" (\d+) MG Oral Tablet$", p["display"])
        assert number is not None and float(number[1]) == p["strength_value"]
        assert p["strength_unit"] == "mg" and p["per"] == "tablet"
    assert "2.16.840.1.113883.3.526.3.1174" in SOURCE["name"] and SOURCE["licence"]


@pytest.mark.parametrize(
    ("code", "display", "dose", "expected_mg"),
    [
        # one 10 mg tablet
        ("856448", "propranolol hydrochloride 10 MG Oral Tablet", mg(10), 10.0),
        # two 10 mg tablets: 20 mg, made as one unit
        ("856448", "propranolol hydrochloride 10 MG Oral Tablet", mg(20), 20.0),
        # "1 tablet" of the 20 mg product is 20 mg
        ("856457", "propranolol hydrochloride 20 MG Oral Tablet", tablets(1), 20.0),
        # one 40 mg tablet, dosed in micrograms (40 000 ug = 40 mg)
        ("856519", "propranolol hydrochloride 40 MG Oral Tablet", ug(40000), 40.0),
    ],
)
def test_a_product_coded_prescription_is_taken_when_the_strength_agrees(
    seeded: App, code: str, display: str, dose: dict[str, Any], expected_mg: float
) -> None:
    [order] = submit(seeded, scd_bundle(code, display, dose))
    assert order.master_file_code == PROPRANOLOL
    assert (order.dose_value, order.dose_unit) == (pytest.approx(expected_mg), "mg")


def test_tablets_per_dose_divide_the_dispensed_count(seeded: App) -> None:
    """60 tablets of 10 mg dispensed, 2 a dose: each made unit holds one 20 mg dose, so the
    course is 30 units."""
    doc = scd_bundle("856448", "propranolol hydrochloride 10 MG Oral Tablet", tablets(2))
    doc["entry"][1]["resource"]["dispenseRequest"] = {"quantity": {"value": 60, "unit": "tablet"}}
    [order] = submit(seeded, doc)
    assert (order.dose_value, order.dose_unit) == (20.0, "mg")
    assert order.units == 30


@pytest.mark.parametrize(
    ("code", "display", "dose", "words"),
    [
        # 25 mg is 2.5 tablets of 10 mg
        (
            "856448",
            "propranolol hydrochloride 10 MG Oral Tablet",
            mg(25),
            ["10 mg per tablet", "2.5"],
        ),
        # 5 mg is half a 10 mg tablet
        ("856448", "propranolol hydrochloride 10 MG Oral Tablet", mg(5), ["0.5 tablets"]),
        # half a tablet is not a whole number of tablets
        ("856457", "propranolol hydrochloride 20 MG Oral Tablet", tablets(0.5), ["whole number"]),
    ],
)
def test_a_dose_that_disagrees_with_the_strength_is_refused_with_the_reason(
    seeded: App, code: str, display: str, dose: dict[str, Any], words: list[str]
) -> None:
    error = refused(seeded, scd_bundle(code, display, dose))
    assert error.http_status == 422
    assert error.field == DOSE
    assert code in error.message or "tablet" in error.message
    for word in words:
        assert word in error.message, error.message


def test_an_undeclared_product_code_is_refused_as_not_accepted(seeded: App) -> None:
    """RxNorm 856460 is a 24 h extended-release capsule: no master file declares it (and it is
    not shipped), so it is not taken for the printed tablets."""
    doc = scd_bundle(
        "856460", "24 HR propranolol hydrochloride 120 MG Extended Release Oral Capsule", mg(120)
    )
    error = refused(seeded, doc)
    assert error.code == "medication_not_accepted" and error.http_status == 422
    assert error.field == MEDICATION
    assert product_code(RXNORM, "856460") is None
