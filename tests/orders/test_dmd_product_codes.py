"""Prescriptions coded by NHS dm+d product (VMP, AMP), as NHS feeds send them (issue 14).

The demo propranolol master file declares the dm+d products it makes (the VMPs "Propranolol 10mg
tablets" and "Propranolol 40mg tablets", their current identifiers and their AMPs), from the
shipped code data (src/nearfab/families/solid_dose/codes/dmd.py, extracted by
scripts/extract_dmd_product_codes.py from an OpenCodelists dm+d codelist). Expected outcomes are
written from what the codes' dm+d names say, stated by hand here: VMP 318352004 is "Propranolol
10mg tablets", one tablet holds 10 mg, so "1 tablet" is 10 mg and 2.5 tablets is no whole
number; the AMP "Inderal 10mg tablets (AstraZeneca UK Ltd)" is a 10 mg tablet of that VMP.
"""

from __future__ import annotations

import importlib.util
import random
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from nearfab.bootstrap import App
from nearfab.common.errors import ValidationFailed
from nearfab.demo import PROPRANOLOL, prescription_bundle
from nearfab.families.solid_dose.codes import DMD_SOURCE, product_code
from nearfab.families.solid_dose.codes import dmd as shipped
from nearfab.identity import actor_of
from nearfab.orders import Order

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TODAY = date(2026, 1, 5)  # the ManualClock's date
DOSE = "Bundle.entry[1].resource.dosageInstruction[0].doseAndRate[0].doseQuantity"
MEDICATION = "Bundle.entry[1].resource.medicationCodeableConcept"
ROOT = Path(__file__).resolve().parents[2]
EXCERPT = ROOT / "src/nearfab/families/solid_dose/codes/sources/dmd-propranolol-tablets.csv"

# what the dm+d names in the source say, read by hand: (name, mg per tablet, the VMP of an AMP)
BY_HAND = {
    "318352004": ("Propranolol 10mg tablets", 10.0, None),
    "318353009": ("Propranolol 40mg tablets", 40.0, None),
    # "VMP subsequent to 318352004" / "... to 318353009": the same VMPs' current identifiers
    "42380111000001101": ("Propranolol 10mg tablets", 10.0, None),
    "42380311000001104": ("Propranolol 40mg tablets", 40.0, None),
    "567911000001100": ("Inderal 10mg tablets (AstraZeneca UK Ltd)", 10.0, "318352004"),
    "930211000001107": ("Inderal 40mg tablets (AstraZeneca UK Ltd)", 40.0, "318353009"),
    "23489111000001108": ("Propranolol 10mg tablets (Accord Healthcare Ltd)", 10.0, "318352004"),
    "36106511000001102": ("Bedranol 40mg tablets (Ennogen Pharma Ltd)", 40.0, "318353009"),
}


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "extract_dmd_product_codes", ROOT / "scripts/extract_dmd_product_codes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dmd_bundle(codings: list[tuple[str, str, str]], dose: dict[str, Any]) -> dict[str, Any]:
    """A propranolol Bundle (twice a day, 14 days) coded only by the given product codings."""
    doc = prescription_bundle(
        random.Random(11),
        today=TODAY,
        medication="propranolol",
        dose_mg=10,
        days=14,
        birth_date=TODAY - timedelta(days=30 * 365),
    )
    mr = doc["entry"][1]["resource"]
    mr["medicationCodeableConcept"] = {
        "coding": [{"system": s, "code": c, "display": d} for s, c, d in codings],
        "text": codings[0][2],
    }
    mr["dosageInstruction"][0]["doseAndRate"][0] = {"doseQuantity": dose}
    return doc


def vmp_10() -> list[tuple[str, str, str]]:
    return [(SNOMED, "318352004", "Propranolol 10mg tablets")]


def mg(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}


def tablets(value: float) -> dict[str, Any]:
    # as NHS EPS examples send a count: a dm+d unit of measure
    return {
        "value": value,
        "unit": "tablet",
        "system": SNOMED,
        "code": "428673006",
    }


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


# --- the shipped data ---------------------------------------------------------------------------
def test_the_shipped_dmd_codes_carry_the_strength_their_names_state() -> None:
    for code, (name, strength, vmp) in BY_HAND.items():
        product = product_code(SNOMED, code)
        assert product is not None, code
        assert product.display == name
        assert (product.strength_value, product.strength_unit, product.per) == (
            strength,
            "mg",
            "tablet",
        )
        assert product.kind == ("dm+d AMP" if vmp else "dm+d VMP")
        assert product.vmp == vmp
    # no propranolol 20mg tablet exists in dm+d; 80mg tablets are not what the demo makes
    assert product_code(SNOMED, "318354003") is None  # Propranolol 80mg tablets
    assert "Open Government Licence" in DMD_SOURCE["licence"]
    assert DMD_SOURCE["commit"] and DMD_SOURCE["path"].endswith(".csv")


def test_the_shipped_data_is_what_the_script_extracts_from_the_shipped_source_rows() -> None:
    """dmd.py is regenerated from the excerpt exactly (nothing edited by hand), and the excerpt
    keeps only the rows used."""
    script = _script()
    products, used = script.extract(EXCERPT.read_text(encoding="utf-8"))
    assert products == shipped.PRODUCTS
    assert used == EXCERPT.read_text(encoding="utf-8").splitlines()[1:]


def test_the_script_refuses_a_damaged_identifier_and_an_unreadable_strength() -> None:
    script = _script()
    text = EXCERPT.read_text(encoding="utf-8")
    # a spreadsheet rounds 17-digit identifiers: ...105 becomes ...100 (Verhoeff check fails)
    damaged = text.replace("14782711000001105", "14782711000001100")
    with pytest.raises(SystemExit, match=r"14782711000001100.*not a valid SNOMED CT concept"):
        script.extract(damaged)
    with pytest.raises(SystemExit, match="strength per unit cannot be read"):
        script.strength("Propranolol 80mg modified-release capsules")
    with pytest.raises(SystemExit, match="strength per unit cannot be read"):
        script.strength("Propranolol 40mg/5ml oral solution")
    with pytest.raises(SystemExit, match="not VMPs of the source"):
        script.extract(text, ("318354003",))


# --- intake -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("codings", "dose", "expected_mg"),
    [
        # the VMP, "1 tablet": one 10 mg tablet
        (vmp_10(), tablets(1), 10.0),
        # the VMP, 20 mg: two 10 mg tablets, made as one unit
        (vmp_10(), mg(20), 20.0),
        # the VMP's current identifier, 40 mg tablets, one tablet
        ([(SNOMED, "42380311000001104", "Propranolol 40mg tablets")], tablets(1), 40.0),
        # an AMP (a brand) takes its VMP's strength: 2 tablets of Inderal 10mg are 20 mg
        (
            [(SNOMED, "567911000001100", "Inderal 10mg tablets (AstraZeneca UK Ltd)")],
            tablets(2),
            20.0,
        ),
        # the VMP with the same product's RxNorm SCD (propranolol hydrochloride 10 MG Oral
        # Tablet), as a feed coding both
        (
            [*vmp_10(), (RXNORM, "856448", "propranolol hydrochloride 10 MG Oral Tablet")],
            tablets(1),
            10.0,
        ),
    ],
)
def test_a_dmd_coded_prescription_is_taken_when_the_strength_agrees(
    seeded: App, codings: list[tuple[str, str, str]], dose: dict[str, Any], expected_mg: float
) -> None:
    [order] = submit(seeded, dmd_bundle(codings, dose))
    assert order.master_file_code == PROPRANOLOL
    assert order.dose_value == pytest.approx(expected_mg) and order.dose_unit == "mg"


@pytest.mark.parametrize(
    ("codings", "dose", "words"),
    [
        # 2.5 tablets of the VMP: not a whole number of tablets
        (vmp_10(), tablets(2.5), ["2.5", "whole number", "Propranolol 10mg tablets"]),
        # 25 mg is 2.5 tablets of 10 mg
        (vmp_10(), mg(25), ["10 mg per tablet", "2.5"]),
        # 20 mg is half a 40 mg tablet of the AMP
        (
            [(SNOMED, "930211000001107", "Inderal 40mg tablets (AstraZeneca UK Ltd)")],
            mg(20),
            ["40 mg per tablet", "0.5 tablets"],
        ),
    ],
)
def test_a_dose_that_disagrees_with_the_dmd_strength_is_refused_naming_the_dose(
    seeded: App, codings: list[tuple[str, str, str]], dose: dict[str, Any], words: list[str]
) -> None:
    error = refused(seeded, dmd_bundle(codings, dose))
    assert error.http_status == 422
    assert error.field == DOSE
    for word in words:
        assert word in error.message, error.message


def test_codings_naming_two_strengths_are_refused(seeded: App) -> None:
    """The dm+d VMP says 10 mg tablets, the RxNorm SCD 40 MG tablets: which is meant?"""
    codings = [*vmp_10(), (RXNORM, "856519", "propranolol hydrochloride 40 MG Oral Tablet")]
    error = refused(seeded, dmd_bundle(codings, tablets(1)))
    assert error.http_status == 422 and error.field == MEDICATION
    assert "different strengths" in error.message


def test_a_dmd_product_no_master_file_declares_is_not_accepted(seeded: App) -> None:
    """Propranolol 80mg tablets (VMP 318354003) is not shipped or declared: not taken."""
    error = refused(seeded, dmd_bundle([(SNOMED, "318354003", "Propranolol 80mg tablets")], mg(80)))
    assert error.code == "medication_not_accepted" and error.http_status == 422
    assert error.field == MEDICATION
