"""solid_dose's `release` part: implements nearfab.quality.kit.ReleaseKit.

The release tests of 3D-printed tablets, from the unit masses the in-line balance records:
Ph. Eur. 2.9.40 uniformity of dosage units by mass variation (the content of each unit estimated
from its mass, the material's drug loading and assay, and the dose), Ph. Eur. 2.9.5 uniformity of
mass, and each unit's mass against the master file's unit-mass CQA. Also the schema of the
attributes of a material lot (drug-loaded filament): its drug loading.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nearfab.common.errors import ValidationFailed
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseResults

# Limits are compared with this slack so that a value lying exactly on a pharmacopoeial limit
# (a deviation of exactly 7.5 %, an AV of exactly 15.0) is not pushed over it by binary
# floating-point error. Balances read to 0.01 mg, so no real measurement is this close to a limit.
_EPS = 1e-9

_STAGE1_UNITS = 10
_STAGE2_UNITS = 30
_K_STAGE1 = 2.4
_K_STAGE2 = 2.0
_MASS_UNITS = 20
_MAX_OUTSIDE_MASS_LIMIT = 2

# --- input checks ---------------------------------------------------------------------------


def _positive(value: float, field: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValidationFailed(f"{field} must be a positive number, got {value!r}", field=field)
    return number


def _numbers(values: Sequence[float], field: str, *, allow_negative: bool) -> list[float]:
    numbers = [float(v) for v in values]
    for i, number in enumerate(numbers):
        if not math.isfinite(number):
            raise ValidationFailed(
                f"{field}[{i}] is {number}; a finite number is needed", field=field
            )
        if number < 0 and not allow_negative:
            raise ValidationFailed(
                f"{field}[{i}] is {number:g}; it cannot be negative", field=field
            )
    return numbers


def _versus(value: float, limit: float, ok: bool) -> tuple[str, str, str]:
    """Value, sign and limit as text, with enough decimals that the text agrees with the verdict."""
    digits = 1
    while not ok and digits < 6 and round(value, digits) <= round(limit, digits):
        digits += 1
    return f"{value:.{digits}f}", "≤" if ok else ">", f"{limit:.{digits}f}"


# --- Ph. Eur. 2.9.40 uniformity of dosage units, by mass variation ----------------------------


def contents_from_masses(
    masses_mg: Sequence[float], *, dose_mg: float, drug_loading: float, assay_pct: float = 100.0
) -> list[float]:
    """Estimated content of each unit in % of label claim, from its mass (2.9.40 mass variation).

    `drug_loading` is the mass fraction of active substance in the printed material (0–1],
    `assay_pct` the assayed content of that material in % of the nominal loading.
    """
    dose = _positive(dose_mg, "dose_mg")
    loading = _positive(drug_loading, "drug_loading")
    if loading > 1:
        # A loading above 1 is almost always a percentage typed where a fraction is expected.
        raise ValidationFailed(
            f"drug_loading is a mass fraction in (0, 1], got {drug_loading!r}", field="drug_loading"
        )
    assay = _positive(assay_pct, "assay_pct")
    masses = _numbers(masses_mg, "masses_mg", allow_negative=False)
    # mass × loading × (assay / 100) / dose × 100: the two factors of 100 cancel.
    return [mass * loading * assay / dose for mass in masses]


@dataclass(frozen=True)
class ContentUniformityResult:
    """Outcome of Ph. Eur. 2.9.40; the numbers are those of the stage reported in `stage`."""

    applicable: bool  # False when fewer than 10 units exist
    passed: bool | None  # None when not applicable
    stage: int  # 1 or 2 (0 if not applicable)
    n: int  # units evaluated at that stage (10 or 30), or units available if not applicable
    mean_pct: float  # X̄
    sd_pct: float  # sample SD (n - 1)
    k: float  # 2.4 for n = 10, 2.0 for n = 30 (0.0 if not applicable)
    reference_m: float  # M (0.0 if not applicable)
    acceptance_value: float  # AV (0.0 if not applicable)
    l1: float
    l2: float
    reasons: tuple[str, ...]


def _reference_value(mean: float, target: float) -> float:
    """M of Ph. Eur. 2.9.40: X̄ clamped to [98.5, 101.5], or to [98.5, T] when T > 101.5."""
    upper = target if target > 101.5 else 101.5
    return min(max(mean, 98.5), upper)


def _stage_numbers(
    values: Sequence[float], k: float, target: float
) -> tuple[float, float, float, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    m = _reference_value(mean, target)
    return mean, sd, m, abs(m - mean) + k * sd


def content_uniformity(
    contents_pct: Sequence[float],
    *,
    target_pct: float = 100.0,
    l1: float = 15.0,
    l2: float = 25.0,
) -> ContentUniformityResult:
    """Ph. Eur. 2.9.40 acceptance value: stage 1 on the first 10 units, stage 2 on the first 30."""
    values = _numbers(contents_pct, "contents_pct", allow_negative=True)
    target = _positive(target_pct, "target_pct")
    l1 = _positive(l1, "l1")
    l2 = _positive(l2, "l2")
    n = len(values)

    if n < _STAGE1_UNITS:
        return ContentUniformityResult(
            applicable=False,
            passed=None,
            stage=0,
            n=n,
            mean_pct=statistics.fmean(values) if values else 0.0,
            sd_pct=statistics.stdev(values) if n >= 2 else 0.0,
            k=0.0,
            reference_m=0.0,
            acceptance_value=0.0,
            l1=l1,
            l2=l2,
            reasons=(f"not applicable: needs at least {_STAGE1_UNITS} units, {n} available",),
        )

    mean, sd, m, av = _stage_numbers(values[:_STAGE1_UNITS], _K_STAGE1, target)
    stage1_ok = av <= l1 + _EPS
    shown_av, sign, shown_l1 = _versus(av, l1, stage1_ok)
    stage1_reason = f"stage 1: AV {shown_av} {sign} L1 {shown_l1}"
    if stage1_ok or n < _STAGE2_UNITS:
        reasons = [stage1_reason]
        if not stage1_ok:
            reasons.append(f"stage 2 needs {_STAGE2_UNITS} units, {n} available")
        return ContentUniformityResult(
            applicable=True,
            passed=stage1_ok,
            stage=1,
            n=_STAGE1_UNITS,
            mean_pct=mean,
            sd_pct=sd,
            k=_K_STAGE1,
            reference_m=m,
            acceptance_value=av,
            l1=l1,
            l2=l2,
            reasons=tuple(reasons),
        )

    units = values[:_STAGE2_UNITS]
    mean, sd, m, av = _stage_numbers(units, _K_STAGE2, target)
    av_ok = av <= l1 + _EPS
    low, high = (1 - l2 / 100) * m, (1 + l2 / 100) * m
    outside = [v for v in units if v < low - _EPS or v > high + _EPS]
    shown_av, sign, shown_l1 = _versus(av, l1, av_ok)
    reasons = [stage1_reason, f"stage 2: AV {shown_av} {sign} L1 {shown_l1}"]
    band = f"{low:.1f}–{high:.1f} % (M {m:.1f} ± L2 {l2:g} %)"
    if outside:
        listed = ", ".join(f"{v:.1f} %" for v in outside)
        reasons.append(f"stage 2: {len(outside)} of {len(units)} units outside {band}: {listed}")
    else:
        reasons.append(f"stage 2: all {len(units)} units within {band}")
    return ContentUniformityResult(
        applicable=True,
        passed=av_ok and not outside,
        stage=2,
        n=len(units),
        mean_pct=mean,
        sd_pct=sd,
        k=_K_STAGE2,
        reference_m=m,
        acceptance_value=av,
        l1=l1,
        l2=l2,
        reasons=tuple(reasons),
    )


# --- Ph. Eur. 2.9.5 uniformity of mass --------------------------------------------------------


@dataclass(frozen=True)
class MassUniformityResult:
    """Outcome of Ph. Eur. 2.9.5 for uncoated and film-coated tablets."""

    applicable: bool  # False when fewer than 20 units
    passed: bool | None
    n: int  # units evaluated: the first 20, or all available if fewer
    average_mg: float
    limit_pct: float  # 10 (≤ 80 mg), 7.5 (80 < m < 250 mg), 5 (≥ 250 mg); 0.0 without units
    outside_limit: int  # units deviating more than limit_pct from the average
    outside_double: int  # units deviating more than 2 × limit_pct
    reasons: tuple[str, ...]


def _mass_limit_pct(average_mg: float) -> float:
    """Table 2.9.5.-1, tablets (uncoated and film-coated), by average mass."""
    if average_mg <= 80.0 + _EPS:  # 80 mg or less
        return 10.0
    if average_mg < 250.0 - _EPS:  # more than 80 mg and less than 250 mg
        return 7.5
    return 5.0  # 250 mg or more


def mass_uniformity(masses_mg: Sequence[float]) -> MassUniformityResult:
    """Ph. Eur. 2.9.5 on the first 20 units: ≤ 2 outside the limit and none outside twice it."""
    masses = _numbers(masses_mg, "masses_mg", allow_negative=False)
    units = masses[:_MASS_UNITS]
    n = len(units)
    if n == 0:
        return MassUniformityResult(
            applicable=False,
            passed=None,
            n=0,
            average_mg=0.0,
            limit_pct=0.0,
            outside_limit=0,
            outside_double=0,
            reasons=(f"not applicable: needs {_MASS_UNITS} units, 0 available",),
        )
    average = statistics.fmean(units)
    if average <= 0:
        raise ValidationFailed(
            "masses_mg are all 0 mg; no average mass to compare with", field="masses_mg"
        )
    limit = _mass_limit_pct(average)
    deviations = [abs(mass - average) / average * 100 for mass in units]
    outside = sum(1 for d in deviations if d > limit + _EPS)
    double = sum(1 for d in deviations if d > 2 * limit + _EPS)
    counts = (
        f"{outside} of {n} units deviate more than {limit:g} % from the average {average:.2f} mg"
        f" ({_MAX_OUTSIDE_MASS_LIMIT} allowed), {double} more than {2 * limit:g} % (none allowed)"
    )
    if n < _MASS_UNITS:
        return MassUniformityResult(
            applicable=False,
            passed=None,
            n=n,
            average_mg=average,
            limit_pct=limit,
            outside_limit=outside,
            outside_double=double,
            reasons=(f"not applicable: needs {_MASS_UNITS} units, {n} available", counts),
        )
    return MassUniformityResult(
        applicable=True,
        passed=outside <= _MAX_OUTSIDE_MASS_LIMIT and double == 0,
        n=n,
        average_mg=average,
        limit_pct=limit,
        outside_limit=outside,
        outside_double=double,
        reasons=(counts,),
    )


# --- per-unit mass against the master file's CQA ---------------------------------------------


@dataclass(frozen=True)
class UnitMassCheck:
    """One unit's mass against the target; `index` is its position in the input (from 0)."""

    index: int
    mass_mg: float
    deviation_pct: float  # signed: (mass − target) / target × 100
    within: bool  # |deviation_pct| ≤ tolerance_pct


def check_unit_masses(
    masses_mg: Sequence[float], *, target_mass_mg: float, tolerance_pct: float
) -> list[UnitMassCheck]:
    """Each unit's deviation from the target mass, and whether it is within ±tolerance_pct."""
    target = _positive(target_mass_mg, "target_mass_mg")
    tolerance = _positive(tolerance_pct, "tolerance_pct")
    masses = _numbers(masses_mg, "masses_mg", allow_negative=False)
    checks = []
    for index, mass in enumerate(masses):
        deviation = (mass - target) / target * 100
        checks.append(
            UnitMassCheck(
                index=index,
                mass_mg=mass,
                deviation_pct=deviation,
                within=abs(deviation) <= tolerance + _EPS,
            )
        )
    return checks


# --- the family's release part --------------------------------------------------------------

# the release tests a master file's release rule may list, in the order they are evaluated
TESTS: dict[str, str] = {
    "ph_eur_2_9_40": "Ph. Eur. 2.9.40 content uniformity",
    "ph_eur_2_9_5": "Ph. Eur. 2.9.5 mass uniformity",
    "unit_mass": "Unit mass",
}
# the unit-mass tolerance when the master file's CQA specs give none
DEFAULT_MASS_TOLERANCE_PCT = 7.5
# the attributes of a material lot: the mass fraction of drug in the printing material
LOT_ATTRIBUTES = ("drug_loading",)


def _document_number(document: Mapping[str, Any], key: str, field: str) -> float:
    value = document.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(f"{field} must be a number, got {value!r}", field=field)
    return float(value)


def _unit_masses(measurements: Mapping[str, Any]) -> list[float]:
    """The unit masses of the batch record's measurement document ({"unit_masses_mg": [...]});
    none recorded is an empty list."""
    masses = measurements.get("unit_masses_mg") or []
    if isinstance(masses, str | bytes | Mapping) or not isinstance(masses, Sequence):
        raise ValidationFailed("unit_masses_mg must be a list of masses", field="unit_masses_mg")
    for i, mass in enumerate(masses):
        if isinstance(mass, bool) or not isinstance(mass, int | float):
            raise ValidationFailed(
                f"unit_masses_mg[{i}] is {mass!r}; a number is needed", field="unit_masses_mg"
            )
    return _numbers(masses, "unit_masses_mg", allow_negative=False)


class SolidDoseRelease:
    """Release tests of printed tablets on their unit masses; the material lot's drug loading."""

    tests: Mapping[str, str] = TESTS

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        max_outside = rule.get("max_units_outside_tolerance", 0)
        if isinstance(max_outside, bool) or not isinstance(max_outside, int) or max_outside < 0:
            raise ValidationFailed(
                "release_rule.max_units_outside_tolerance must be a whole number ≥ 0,"
                f" got {max_outside!r}",
                field="release_rule.max_units_outside_tolerance",
            )

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        """The listed tests; both uniformity results are computed (and kept) whatever is listed."""
        masses = _unit_masses(evidence.measurements)
        target = _positive(
            _document_number(evidence.design, "target_mass_mg", "target_mass_mg"),
            "target_mass_mg",
        )
        spec = evidence.specs.get("unit_mass") or {}
        tolerance = _positive(
            _document_number(
                {"tolerance_pct": DEFAULT_MASS_TOLERANCE_PCT, **spec},
                "tolerance_pct",
                "mass_tolerance_pct",
            ),
            "mass_tolerance_pct",
        )
        if "drug_loading" not in evidence.material:
            raise ValidationFailed(
                "the material lot has no drug loading", field="attributes.drug_loading"
            )
        contents = contents_from_masses(
            masses,
            dose_mg=_document_number(evidence.design, "dose_mg", "dose_mg"),
            drug_loading=_document_number(evidence.material, "drug_loading", "drug_loading"),
            assay_pct=evidence.assay_pct,
        )
        cu = content_uniformity(contents)
        mu = mass_uniformity(masses)

        checks: list[Check] = []
        if "ph_eur_2_9_40" in tests:
            checks.append(Check("ph_eur_2_9_40", cu.passed, "2.9.40 " + "; ".join(cu.reasons)))
        if "ph_eur_2_9_5" in tests:
            checks.append(Check("ph_eur_2_9_5", mu.passed, "2.9.5 " + "; ".join(mu.reasons)))
        if "unit_mass" in tests:
            checks.append(
                self._unit_mass(masses, target, tolerance, rule.get("max_units_outside_tolerance"))
            )
        return ReleaseResults(
            checks=tuple(checks),
            results={"content_uniformity": cu, "mass_uniformity": mu},
        )

    @staticmethod
    def _unit_mass(
        masses: Sequence[float], target: float, tolerance: float, max_outside: int | None
    ) -> Check:
        if not masses:
            return Check("unit_mass", None, "unit mass: no unit masses recorded")
        allowed = max_outside or 0
        unit_checks = check_unit_masses(masses, target_mass_mg=target, tolerance_pct=tolerance)
        outside = sum(1 for c in unit_checks if not c.within)
        return Check(
            "unit_mass",
            outside <= allowed,
            f"{outside} of {len(masses)} units outside ±{tolerance:g} % of {target:.1f} mg"
            f" ({allowed} allowed)",
        )

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """{"drug_loading": mass fraction of drug in the material, in (0, 1]}; nothing else."""
        if not isinstance(attributes, Mapping):
            raise ValidationFailed(
                'attributes must be an object, e.g. {"drug_loading": 0.1}', field="attributes"
            )
        unknown = [str(key) for key in attributes if key not in LOT_ATTRIBUTES]
        if unknown:
            raise ValidationFailed(
                f"attributes.{unknown[0]} is not an attribute of this material;"
                f" known: {', '.join(LOT_ATTRIBUTES)}",
                field=f"attributes.{unknown[0]}",
            )
        loading = attributes.get("drug_loading")
        if (
            isinstance(loading, bool)
            or not isinstance(loading, int | float)
            or not math.isfinite(loading)
            or not 0 < loading <= 1
        ):
            raise ValidationFailed(
                f"drug loading is a mass fraction in (0, 1], got {loading!r}",
                field="attributes.drug_loading",
            )
        return {"drug_loading": float(loading)}
