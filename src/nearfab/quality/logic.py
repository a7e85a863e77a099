"""Pure quality rules: Ph. Eur. 2.9.40 and 2.9.5 on unit masses, and the real-time release rule."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from nearfab.common.errors import ValidationFailed

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

_TESTS = ("ph_eur_2_9_40", "ph_eur_2_9_5", "unit_mass")
_MODES = ("rtrt", "manual")

Decision = Literal["release", "reject", "needs_qp_review"]


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


# --- real-time release testing ----------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One line of the release proposal."""

    name: str  # "ph_eur_2_9_40", "ph_eur_2_9_5", "unit_mass", "cpp", "deviations", "alarms"
    passed: bool | None  # None = could not be evaluated
    detail: str


@dataclass(frozen=True)
class ReleaseEvidence:
    """What the batch record holds for one batch at the time release is proposed."""

    unit_masses_mg: tuple[float, ...]
    target_mass_mg: float
    dose_mg: float
    drug_loading: float
    mass_tolerance_pct: float
    cpp_excursions: tuple[str, ...] = ()
    open_deviations: tuple[str, ...] = ()
    open_alarms: tuple[str, ...] = ()
    # assay of the material lot (% of label claim), for the mass-variation estimate of content
    assay_pct: float = 100.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True)
class ReleaseProposal:
    """The platform's proposal to the QP; the QP's decision is recorded elsewhere."""

    decision: Decision
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]
    content_uniformity: ContentUniformityResult
    mass_uniformity: MassUniformityResult

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, strings, numbers, booleans and None."""
        return {key: _jsonable(value) for key, value in asdict(self).items()}


def _parse_rule(rule: Mapping[str, Any]) -> tuple[str, tuple[str, ...], int]:
    if not isinstance(rule, Mapping):
        raise ValidationFailed("the release rule must be an object", field="release_rule")
    mode = rule.get("mode")
    if mode not in _MODES:
        raise ValidationFailed(
            f"release_rule.mode is {mode!r}; expected one of {', '.join(_MODES)}",
            field="release_rule.mode",
        )
    tests = rule.get("tests", [])
    if isinstance(tests, str) or not isinstance(tests, Sequence):
        raise ValidationFailed(
            "release_rule.tests must be a list of test names", field="release_rule.tests"
        )
    unknown = [t for t in tests if t not in _TESTS]
    if unknown:
        raise ValidationFailed(
            f"release_rule.tests has unknown {', '.join(repr(t) for t in unknown)};"
            f" known: {', '.join(_TESTS)}",
            field="release_rule.tests",
        )
    if mode == "rtrt" and not tests:
        # An RTRT rule with no test would release on the absence of alarms alone.
        raise ValidationFailed(
            "an rtrt release rule must list at least one test", field="release_rule.tests"
        )
    max_outside = rule.get("max_units_outside_tolerance", 0)
    if isinstance(max_outside, bool) or not isinstance(max_outside, int) or max_outside < 0:
        raise ValidationFailed(
            "release_rule.max_units_outside_tolerance must be a whole number ≥ 0,"
            f" got {max_outside!r}",
            field="release_rule.max_units_outside_tolerance",
        )
    listed = tuple(t for t in _TESTS if t in tests)
    return str(mode), listed, max_outside


def validate_release_rule(rule: Mapping[str, Any]) -> None:
    """Raise ValidationFailed naming the bad `release_rule.*` field (checked at draft time)."""
    _parse_rule(rule)


def _open_items(name: str, items: Sequence[str], singular: str, plural: str) -> Check:
    if not items:
        return Check(name=name, passed=True, detail=f"no {plural}")
    noun = singular if len(items) == 1 else plural
    return Check(name=name, passed=False, detail=f"{len(items)} {noun}: {'; '.join(items)}")


def propose_release(evidence: ReleaseEvidence, rule: Mapping[str, Any]) -> ReleaseProposal:
    """Evaluate the master file's release rule on a batch's evidence and propose a decision.

    Any failed listed test → "reject". Otherwise a listed test that cannot be evaluated, a CPP
    excursion, an open deviation or an open alarm → "needs_qp_review". Otherwise "release".
    In "manual" mode the proposal is always "needs_qp_review".
    """
    mode, tests, max_outside = _parse_rule(rule)
    masses = _numbers(evidence.unit_masses_mg, "unit_masses_mg", allow_negative=False)
    target = _positive(evidence.target_mass_mg, "target_mass_mg")
    tolerance = _positive(evidence.mass_tolerance_pct, "mass_tolerance_pct")
    contents = contents_from_masses(
        masses,
        dose_mg=evidence.dose_mg,
        drug_loading=evidence.drug_loading,
        assay_pct=evidence.assay_pct,
    )
    cu = content_uniformity(contents)
    mu = mass_uniformity(masses)

    test_checks: list[Check] = []
    if "ph_eur_2_9_40" in tests:
        test_checks.append(Check("ph_eur_2_9_40", cu.passed, "2.9.40 " + "; ".join(cu.reasons)))
    if "ph_eur_2_9_5" in tests:
        test_checks.append(Check("ph_eur_2_9_5", mu.passed, "2.9.5 " + "; ".join(mu.reasons)))
    if "unit_mass" in tests:
        if masses:
            unit_checks = check_unit_masses(masses, target_mass_mg=target, tolerance_pct=tolerance)
            outside = sum(1 for c in unit_checks if not c.within)
            test_checks.append(
                Check(
                    "unit_mass",
                    outside <= max_outside,
                    f"{outside} of {len(masses)} units outside ±{tolerance:g} % of {target:.1f} mg"
                    f" ({max_outside} allowed)",
                )
            )
        else:
            test_checks.append(Check("unit_mass", None, "unit mass: no unit masses recorded"))

    status_checks = [
        _open_items("cpp", evidence.cpp_excursions, "CPP excursion", "CPP excursions"),
        _open_items("deviations", evidence.open_deviations, "open deviation", "open deviations"),
        _open_items("alarms", evidence.open_alarms, "open alarm", "open alarms"),
    ]

    reasons = [c.detail for c in test_checks] + [c.detail for c in status_checks if not c.passed]
    decision: Decision
    if mode == "manual":
        decision = "needs_qp_review"
        reasons.insert(0, "release rule mode is manual: the QP decides")
    elif any(c.passed is False for c in test_checks):
        decision = "reject"
    elif any(c.passed is None for c in test_checks) or any(not c.passed for c in status_checks):
        decision = "needs_qp_review"
    else:
        decision = "release"

    return ReleaseProposal(
        decision=decision,
        reasons=tuple(reasons),
        checks=tuple(test_checks + status_checks),
        content_uniformity=cu,
        mass_uniformity=mu,
    )
