"""Solid-dose design rules: age bands, the design envelope, and dose → tablet geometry.

Worked by hand with a hydrocortisone paediatric envelope: drug loading 5 % (0.05),
matrix density 1.25 mg/mm³, cylinders of Ø 4, 5, 6, 8, 10 or 12 mm, height 1.0–6.0 mm.
Cylinder face areas π(d/2)²: Ø4 12.566, Ø5 19.635, Ø6 28.274 mm².
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.families.solid_dose.logic import (
    Envelope,
    OutsideEnvelope,
    TabletDesign,
    design_tablet,
    patient_group,
)

HYDROCORTISONE: dict[str, Any] = {
    "dose_mg": {"min": 0.5, "max": 10},
    "drug_loading": 0.05,
    "density_mg_per_mm3": 1.25,
    "diameters_mm": [4, 5, 6, 8, 10, 12],
    "height_mm": {"min": 1.0, "max": 6.0},
    "patient_groups": ["infant", "child", "adolescent", "adult"],
    "max_diameter_mm_by_group": {"infant": 4, "child": 6},
    "units": {"min": 1, "max": 90},
}


@pytest.fixture
def env() -> Envelope:
    return Envelope.from_dict(HYDROCORTISONE)


def design(
    env: Envelope, dose: float, group: str | None = "adult", units: int = 30
) -> TabletDesign:
    return design_tablet(dose_mg=dose, units=units, group=group, envelope=env)


# -- age bands (ICH E11) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "on", "group"),
    [
        (date(2026, 1, 1), date(2026, 1, 1), "neonate"),  # day of birth
        (date(2026, 1, 1), date(2026, 1, 28), "neonate"),  # 27 days
        (date(2026, 1, 1), date(2026, 1, 29), "infant"),  # 28 days
        (date(2020, 3, 10), date(2022, 3, 9), "infant"),  # 1 year 364 days
        (date(2020, 3, 10), date(2022, 3, 10), "child"),  # 2nd birthday
        (date(2010, 6, 1), date(2022, 5, 31), "child"),  # 11 years
        (date(2010, 6, 1), date(2022, 6, 1), "adolescent"),  # 12th birthday
        (date(2008, 6, 1), date(2026, 5, 31), "adolescent"),  # 17 years 364 days
        (date(2008, 6, 1), date(2026, 6, 1), "adult"),  # 18th birthday
        (date(1950, 1, 1), date(2026, 1, 5), "adult"),
    ],
)
def test_patient_group_bands(birth: date, on: date, group: str) -> None:
    assert patient_group(birth, on) == group


def test_patient_group_unknown_and_impossible() -> None:
    assert patient_group(None, date(2026, 1, 5)) is None
    with pytest.raises(ValidationFailed) as exc:
        patient_group(date(2026, 2, 1), date(2026, 1, 5))
    assert exc.value.field == "birth_date"


# -- the envelope ---------------------------------------------------------------------------


def test_envelope_from_and_to_dict(env: Envelope) -> None:
    assert env.dose_mg_min == 0.5 and env.dose_mg_max == 10.0
    assert env.diameters_mm == (4.0, 5.0, 6.0, 8.0, 10.0, 12.0)
    assert env.patient_groups == ("infant", "child", "adolescent", "adult")
    assert env.max_diameter_mm_by_group == {"infant": 4.0, "child": 6.0}
    assert (env.units_min, env.units_max) == (1, 90)
    assert Envelope.from_dict(env.to_dict()) == env
    assert env.to_dict()["height_mm"] == {"min": 1.0, "max": 6.0}


def test_envelope_sorts_diameters() -> None:
    env = Envelope.from_dict({**HYDROCORTISONE, "diameters_mm": [8, 4, 6]})
    assert env.diameters_mm == (4.0, 6.0, 8.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"drug_loading": None}, "design_envelope.drug_loading"),
        ({"drug_loading": 1.5}, "design_envelope.drug_loading"),
        ({"drug_loading": "5%"}, "design_envelope.drug_loading"),
        ({"density_mg_per_mm3": 0}, "design_envelope.density_mg_per_mm3"),
        ({"dose_mg": {"min": 10, "max": 0.5}}, "design_envelope.dose_mg"),
        ({"dose_mg": {"max": 10}}, "design_envelope.dose_mg.min"),
        ({"dose_mg": 5}, "design_envelope.dose_mg"),
        ({"diameters_mm": []}, "design_envelope.diameters_mm"),
        ({"diameters_mm": [4, -5]}, "design_envelope.diameters_mm[1]"),
        ({"height_mm": None}, "design_envelope.height_mm"),
        ({"units": {"min": 0, "max": 30}}, "design_envelope.units.min"),
        ({"units": {"min": 1, "max": 2.5}}, "design_envelope.units.max"),
        ({"patient_groups": ["toddler"]}, "design_envelope.patient_groups"),
        (
            {"max_diameter_mm_by_group": {"child": 0}},
            "design_envelope.max_diameter_mm_by_group.child",
        ),
    ],
)
def test_envelope_rejects_missing_or_bad_keys(change: dict[str, Any], field: str) -> None:
    bad = {**HYDROCORTISONE, **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(ValidationFailed) as exc:
        Envelope.from_dict(bad)
    assert exc.value.field == field


# -- designs, by hand -----------------------------------------------------------------------


def test_2_5_mg_for_a_child(env: Envelope) -> None:
    # 2.5 mg ÷ 0.05 = 50 mg; 50 mg ÷ 1.25 mg/mm³ = 40 mm³;
    # Ø4: area 12.566 mm², h = 40 / 12.566 = 3.183 → 3.18 mm (within 1–6): Ø4 is chosen.
    d = design(env, 2.5, "child", units=28)
    assert d.target_mass_mg == pytest.approx(50.0)
    assert d.volume_mm3 == pytest.approx(40.0)
    assert (d.shape, d.diameter_mm, d.height_mm) == ("cylinder", 4.0, 3.18)
    assert (d.dose_mg, d.drug_loading, d.units, d.patient_group) == (2.5, 0.05, 28, "child")
    assert d.to_dict() == {
        "dose_mg": 2.5,
        "drug_loading": 0.05,
        "target_mass_mg": 50.0,
        "volume_mm3": 40.0,
        "shape": "cylinder",
        "diameter_mm": 4.0,
        "height_mm": 3.18,
        "units": 28,
        "patient_group": "child",
    }


def test_5_mg_for_a_child_needs_the_next_diameter(env: Envelope) -> None:
    # 5 mg → 100 mg → 80 mm³. Ø4: 80 / 12.566 = 6.366 mm > 6 (too tall);
    # Ø5: 80 / 19.635 = 4.074 → 4.07 mm. Ø5 ≤ the child maximum Ø6.
    d = design(env, 5.0, "child")
    assert d.target_mass_mg == pytest.approx(100.0)
    assert d.volume_mm3 == pytest.approx(80.0)
    assert (d.diameter_mm, d.height_mm) == (5.0, 4.07)


def test_10_mg_fits_an_adult(env: Envelope) -> None:
    # 10 mg → 200 mg → 160 mm³. Ø4: 12.73 mm, Ø5: 8.15 mm (too tall);
    # Ø6: 160 / 28.274 = 5.659 → 5.66 mm. The dose range's upper end is inclusive.
    d = design(env, 10.0, "adult")
    assert d.target_mass_mg == pytest.approx(200.0)
    assert d.volume_mm3 == pytest.approx(160.0)
    assert (d.diameter_mm, d.height_mm) == (6.0, 5.66)
    # A child may have Ø6 too (max 6): the same design.
    assert (design(env, 10.0, "child").diameter_mm, design(env, 10.0, "child").height_mm) == (
        6.0,
        5.66,
    )


def test_4_mg_fits_an_infant_at_4_mm(env: Envelope) -> None:
    # 4 mg → 80 mg → 64 mm³; Ø4: 64 / 12.566 = 5.093 → 5.09 mm.
    d = design(env, 4.0, "infant")
    assert (d.diameter_mm, d.height_mm) == (4.0, 5.09)


def test_0_5_mg_is_in_the_dose_range_but_too_small_to_print_here(env: Envelope) -> None:
    # 0.5 mg → 10 mg → 8 mm³; even the smallest tablet, Ø4, would be 8 / 12.566 = 0.637 →
    # 0.64 mm tall, below the 1.0 mm minimum (wider ones are flatter still). With this
    # envelope the smallest printable dose is the one giving 1.00 mm at Ø4 after rounding:
    # 0.79 mg → 15.8 mg → 12.64 mm³ → 1.006 → 1.01 mm fits; 0.78 mg → 12.48 mm³ → 0.99 mm.
    with pytest.raises(OutsideEnvelope) as exc:
        design(env, 0.5, "adult")
    assert exc.value.field == "geometry"
    assert "Ø4 mm → 0.64 mm" in exc.value.message
    assert "1–6 mm" in exc.value.message
    assert (design(env, 0.79).diameter_mm, design(env, 0.79).height_mm) == (4.0, 1.01)
    with pytest.raises(OutsideEnvelope):
        design(env, 0.78)


def test_0_5_mg_fits_an_adult_when_thin_tablets_are_validated() -> None:
    # Same formulation, heights from 0.5 mm validated: Ø4 at 0.64 mm.
    env = Envelope.from_dict({**HYDROCORTISONE, "height_mm": {"min": 0.5, "max": 6.0}})
    d = design(env, 0.5, "adult")
    assert d.target_mass_mg == pytest.approx(10.0)
    assert d.volume_mm3 == pytest.approx(8.0)
    assert (d.diameter_mm, d.height_mm) == (4.0, 0.64)


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("dose", [0.49, 10.01, 0.0, -1.0, float("nan"), float("inf")])
def test_dose_outside_range_is_refused(env: Envelope, dose: float) -> None:
    with pytest.raises(OutsideEnvelope) as exc:
        design(env, dose)
    assert exc.value.field == "dose_mg"
    assert exc.value.code == "outside_envelope"
    assert isinstance(exc.value, Refused)
    assert "0.5–10 mg" in exc.value.message


@pytest.mark.parametrize("units", [0, 91])
def test_units_outside_range_are_refused(env: Envelope, units: int) -> None:
    with pytest.raises(OutsideEnvelope, match=f"{units} units.*1–90") as exc:
        design(env, 2.5, units=units)
    assert exc.value.field == "units"


def test_course_size_limits_are_inclusive(env: Envelope) -> None:
    assert design(env, 2.5, units=1).units == 1
    assert design(env, 2.5, units=90).units == 90


@pytest.mark.parametrize("group", ["neonate", None, "toddler"])
def test_group_not_validated_or_unknown_is_refused(env: Envelope, group: str | None) -> None:
    with pytest.raises(OutsideEnvelope) as exc:
        design(env, 2.5, group)
    assert exc.value.field == "patient_group"


def test_any_group_when_the_envelope_lists_none() -> None:
    env = Envelope.from_dict(
        {**HYDROCORTISONE, "patient_groups": [], "max_diameter_mm_by_group": {}}
    )
    assert design(env, 2.5, None).diameter_mm == 4.0
    assert design(env, 2.5, "neonate").patient_group == "neonate"


def test_10_mg_does_not_fit_an_infant(env: Envelope) -> None:
    # infant: Ø ≤ 4 only; 160 mm³ at Ø4 is 12.73 mm tall (> 6 mm)
    with pytest.raises(OutsideEnvelope) as exc:
        design(env, 10.0, "infant")
    assert exc.value.field == "geometry"
    assert "Ø ≤ 4 mm for infant" in exc.value.message
    assert "Ø4 mm → 12.73 mm" in exc.value.message


def test_no_diameter_small_enough_for_the_group() -> None:
    env = Envelope.from_dict({**HYDROCORTISONE, "max_diameter_mm_by_group": {"infant": 3}})
    with pytest.raises(OutsideEnvelope, match="at most 3 mm") as exc:
        design(env, 2.5, "infant")
    assert exc.value.field == "geometry"
