"""Worked examples for the release rules: the solid_dose family's Ph. Eur. tests and quality's
release proposal over them; every expected number is derived by hand in a comment.

Data sets are built from deviations around a round mean so the arithmetic stays checkable:
s = sqrt(SS / (n - 1)) with SS the sum of squared deviations from the mean.
"""

from __future__ import annotations

import json
import math

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.families.solid_dose.release import (
    SolidDoseRelease,
    check_unit_masses,
    content_uniformity,
    contents_from_masses,
    mass_uniformity,
)
from nearfab.quality.kit import ReleaseKit
from nearfab.quality.logic import Check, ReleaseEvidence, ReleaseProposal, propose_release

KIT: ReleaseKit = SolidDoseRelease()

# Deviations +3, -3, +3, -3, 0 × 6 around 100: X̄ = 100, SS = 4 × 9 = 36, s = sqrt(36 / 9) = 2.
S2_AROUND_100 = [103.0, 97.0, 103.0, 97.0] + [100.0] * 6
# Deviations ±12 twice, 0 × 6 around 100: X̄ = 100, SS = 4 × 144 = 576, s = sqrt(576 / 9) = 8,
# stage 1 AV = 0 + 2.4 × 8 = 19.2 > 15: fails stage 1.
S8_AROUND_100 = [112.0, 88.0, 112.0, 88.0] + [100.0] * 6


def shifted(values: list[float], by: float) -> list[float]:
    return [v + by for v in values]


# --- contents_from_masses ---------------------------------------------------------------------


def test_contents_from_masses_worked_example() -> None:
    # 200 mg × 0.25 = 50 mg of drug nominal; × 98 % assay = 49 mg; 49 / 50 mg dose = 98.0 %.
    # 100 mg × 0.25 × 0.98 = 24.5 mg; 24.5 / 50 = 49.0 %. 0 mg → 0 %.
    contents = contents_from_masses(
        [200.0, 100.0, 0.0], dose_mg=50.0, drug_loading=0.25, assay_pct=98.0
    )
    assert contents == pytest.approx([98.0, 49.0, 0.0])


def test_contents_from_masses_default_assay_is_100() -> None:
    # 40 mg × 0.5 = 20 mg; 20 / 25 mg dose = 80 %.
    assert contents_from_masses([40.0], dose_mg=25.0, drug_loading=0.5) == pytest.approx([80.0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dose_mg": 0.0, "drug_loading": 0.5}, "dose_mg"),
        ({"dose_mg": -5.0, "drug_loading": 0.5}, "dose_mg"),
        ({"dose_mg": 50.0, "drug_loading": 0.0}, "drug_loading"),
        ({"dose_mg": 50.0, "drug_loading": -0.1}, "drug_loading"),
        ({"dose_mg": 50.0, "drug_loading": 25.0}, "drug_loading"),  # a percentage, not a fraction
        ({"dose_mg": 50.0, "drug_loading": 0.5, "assay_pct": 0.0}, "assay_pct"),
    ],
)
def test_contents_from_masses_rejects_bad_parameters(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        contents_from_masses([100.0], **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("bad_mass", [-0.1, math.nan, math.inf])
def test_contents_from_masses_rejects_bad_masses(bad_mass: float) -> None:
    with pytest.raises(ValidationFailed) as err:
        contents_from_masses([100.0, bad_mass], dose_mg=50.0, drug_loading=0.5)
    assert err.value.field == "masses_mg"


# --- Ph. Eur. 2.9.40 --------------------------------------------------------------------------


def test_stage1_pass_mean_inside_band_av_is_k_times_s() -> None:
    # X̄ = 100 is inside 98.5–101.5, so M = X̄ and AV = 2.4 × s = 2.4 × 2 = 4.8 ≤ 15.
    result = content_uniformity(S2_AROUND_100)
    assert result.applicable is True
    assert result.passed is True
    assert result.stage == 1
    assert result.n == 10
    assert result.k == 2.4
    assert result.mean_pct == pytest.approx(100.0)
    assert result.sd_pct == pytest.approx(2.0)
    assert result.reference_m == pytest.approx(100.0)
    assert result.acceptance_value == pytest.approx(4.8)
    assert result.reasons == ("stage 1: AV 4.8 ≤ L1 15.0",)


def test_stage1_mean_below_98_5_uses_m_98_5() -> None:
    # All 3 lower: X̄ = 97, s = 2 (a shift keeps s). M = 98.5; AV = |98.5 − 97| + 2.4 × 2 = 1.5 + 4.8
    # = 6.3.
    result = content_uniformity(shifted(S2_AROUND_100, -3.0))
    assert result.mean_pct == pytest.approx(97.0)
    assert result.reference_m == pytest.approx(98.5)
    assert result.acceptance_value == pytest.approx(6.3)
    assert result.passed is True


def test_stage1_mean_above_101_5_uses_m_101_5() -> None:
    # All 4 higher: X̄ = 104, s = 2. T = 100 ≤ 101.5 so M = 101.5; AV = 2.5 + 4.8 = 7.3.
    result = content_uniformity(shifted(S2_AROUND_100, 4.0))
    assert result.mean_pct == pytest.approx(104.0)
    assert result.reference_m == pytest.approx(101.5)
    assert result.acceptance_value == pytest.approx(7.3)
    assert result.passed is True


def test_target_above_101_5_mean_between_98_5_and_t_uses_m_equal_mean() -> None:
    # T = 105 > 101.5 and 98.5 ≤ X̄ = 104 ≤ T, so M = X̄ = 104 and AV = 0 + 2.4 × 2 = 4.8
    # (with T = 100 the same units give 7.3, see above).
    result = content_uniformity(shifted(S2_AROUND_100, 4.0), target_pct=105.0)
    assert result.reference_m == pytest.approx(104.0)
    assert result.acceptance_value == pytest.approx(4.8)


def test_target_above_101_5_mean_above_t_uses_m_equal_t() -> None:
    # T = 102 > 101.5 and X̄ = 104 > T, so M = T = 102 and AV = 2 + 4.8 = 6.8.
    result = content_uniformity(shifted(S2_AROUND_100, 4.0), target_pct=102.0)
    assert result.reference_m == pytest.approx(102.0)
    assert result.acceptance_value == pytest.approx(6.8)


def test_target_above_101_5_mean_below_98_5_uses_m_98_5() -> None:
    # T = 105, X̄ = 97 < 98.5, so M = 98.5 and AV = 1.5 + 4.8 = 6.3.
    result = content_uniformity(shifted(S2_AROUND_100, -3.0), target_pct=105.0)
    assert result.reference_m == pytest.approx(98.5)
    assert result.acceptance_value == pytest.approx(6.3)


def test_stage1_uses_only_the_first_10_units() -> None:
    # Units 11–30 are wild but stage 1 passes on the first 10 (AV 4.8), so they are never used.
    result = content_uniformity(S2_AROUND_100 + [50.0, 150.0] * 10)
    assert result.passed is True
    assert result.stage == 1
    assert result.n == 10
    assert result.acceptance_value == pytest.approx(4.8)


def test_stage1_fail_then_stage2_pass() -> None:
    # Stage 1: AV 19.2 > 15 (see S8_AROUND_100).
    # Units 11–30: deviations +15, −15, +3, −3 and 0 × 16, so the 30 have X̄ = 100, M = 100,
    # SS = 576 + 225 + 225 + 9 + 9 = 1044, s = sqrt(1044 / 29) = sqrt(36) = 6,
    # AV = 0 + 2.0 × 6 = 12.0 ≤ 15; all contents within 85–115, inside 75–125.
    # A 31st unit at 40 % must be ignored (stage 2 uses the first 30).
    contents = [*S8_AROUND_100, 115.0, 85.0, 103.0, 97.0] + [100.0] * 16 + [40.0]
    result = content_uniformity(contents)
    assert result.passed is True
    assert result.stage == 2
    assert result.n == 30
    assert result.k == 2.0
    assert result.sd_pct == pytest.approx(6.0)
    assert result.reference_m == pytest.approx(100.0)
    assert result.acceptance_value == pytest.approx(12.0)
    assert result.reasons[0] == "stage 1: AV 19.2 > L1 15.0"
    assert result.reasons[1] == "stage 2: AV 12.0 ≤ L1 15.0"
    assert "all 30 units within 75.0–125.0 %" in result.reasons[2]


def test_stage2_fail_by_75_125_rule_although_av_within_l1() -> None:
    # First 10: deviations −26, +11, +8, +6, +1, +1, −1, 0, 0, 0 (sum 0), X̄ = 100,
    # SS = 676 + 121 + 64 + 36 + 1 + 1 + 1 = 900, s = sqrt(900 / 9) = 10, AV = 24.0 > 15.
    # Units 11–30: ±6 twice and 0 × 16: SS = 900 + 4 × 36 = 1044, s = sqrt(1044 / 29) = 6,
    # AV = 12.0 ≤ 15, but 74 < (1 − 0.25) × 100 = 75.
    first = [74.0, 111.0, 108.0, 106.0, 101.0, 101.0, 99.0, 100.0, 100.0, 100.0]
    contents = [*first, 106.0, 94.0, 106.0, 94.0] + [100.0] * 16
    result = content_uniformity(contents)
    assert result.stage == 2
    assert result.acceptance_value == pytest.approx(12.0)
    assert result.acceptance_value <= result.l1
    assert result.passed is False
    assert result.reasons[0] == "stage 1: AV 24.0 > L1 15.0"
    assert "1 of 30 units outside 75.0–125.0 %" in result.reasons[2]
    assert "74.0 %" in result.reasons[2]


def test_stage2_unit_exactly_on_75_is_inside() -> None:
    # Same as above with 75 instead of 74 and +10 instead of +11 (sum still 0):
    # SS = 625 + 100 + 64 + 36 + 3 = 828 for the first 10, s = sqrt(92) ≈ 9.59, AV ≈ 23.0 > 15;
    # 30 units SS = 828 + 144 = 972, s = sqrt(972 / 29) ≈ 5.789, AV ≈ 11.58 ≤ 15; 75 is on the
    # lower limit (1 − 0.25) × 100, not outside it, so stage 2 passes.
    first = [75.0, 110.0, 108.0, 106.0, 101.0, 101.0, 99.0, 100.0, 100.0, 100.0]
    result = content_uniformity([*first, 106.0, 94.0, 106.0, 94.0] + [100.0] * 16)
    assert result.stage == 2
    assert result.acceptance_value == pytest.approx(2.0 * math.sqrt(972 / 29))
    assert result.passed is True


def test_stage2_fail_by_av() -> None:
    # Stage 1 fails (AV 19.2). Units 11–30: +24, −24, +8, −8, 0 × 16 (all within 76–124):
    # SS = 576 + 576 + 576 + 64 + 64 = 1856, s = sqrt(1856 / 29) = sqrt(64) = 8,
    # AV = 2.0 × 8 = 16.0 > 15.
    contents = [*S8_AROUND_100, 124.0, 76.0, 108.0, 92.0] + [100.0] * 16
    result = content_uniformity(contents)
    assert result.stage == 2
    assert result.sd_pct == pytest.approx(8.0)
    assert result.acceptance_value == pytest.approx(16.0)
    assert result.passed is False
    assert result.reasons[1] == "stage 2: AV 16.0 > L1 15.0"
    assert "all 30 units within" in result.reasons[2]


def test_not_applicable_with_9_units() -> None:
    result = content_uniformity([100.0] * 9)
    assert result.applicable is False
    assert result.passed is None
    assert result.stage == 0
    assert result.n == 9
    assert result.reasons == ("not applicable: needs at least 10 units, 9 available",)


def test_stage1_fail_with_12_units_cannot_go_to_stage_2() -> None:
    # AV 19.2 > 15 on the first 10; 12 units < 30, so stage 2 is impossible.
    result = content_uniformity([*S8_AROUND_100, 100.0, 100.0])
    assert result.applicable is True
    assert result.passed is False
    assert result.stage == 1
    assert result.acceptance_value == pytest.approx(19.2)
    assert result.reasons == ("stage 1: AV 19.2 > L1 15.0", "stage 2 needs 30 units, 12 available")


def test_av_shown_with_enough_decimals_to_match_verdict() -> None:
    # Deviations ±√10 twice: SS = 4 × 10 = 40, s = sqrt(40 / 9) ≈ 2.1082, AV = 2.4 × s ≈ 5.0596.
    # With L1 = 5.052 the AV is above it, yet one decimal would print "5.1 > 5.1".
    d = math.sqrt(10.0)
    contents = [100 + d, 100 - d, 100 + d, 100 - d] + [100.0] * 6
    result = content_uniformity(contents, l1=5.052)
    assert result.acceptance_value == pytest.approx(2.4 * math.sqrt(40 / 9))
    assert result.passed is False
    assert result.reasons[0] == "stage 1: AV 5.06 > L1 5.05"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_pct": 0.0}, "target_pct"),
        ({"l1": 0.0}, "l1"),
        ({"l2": -1.0}, "l2"),
    ],
)
def test_content_uniformity_rejects_bad_parameters(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        content_uniformity(S2_AROUND_100, **kwargs)
    assert err.value.field == field


def test_content_uniformity_rejects_nan() -> None:
    with pytest.raises(ValidationFailed) as err:
        content_uniformity([*S2_AROUND_100[:9], math.nan])
    assert err.value.field == "contents_pct"


# --- Ph. Eur. 2.9.5 ---------------------------------------------------------------------------


def test_mass_uniformity_average_exactly_80_uses_10_pct() -> None:
    # 3 × 87.2 + 3 × 72.8 + 14 × 80 = 261.6 + 218.4 + 1120 = 1600; average 80.0 → "80 mg or less"
    # → 10 %. Deviations 7.2 / 80 = 9 % ≤ 10: none outside, passes (with 7.5 % six would be out).
    result = mass_uniformity([87.2] * 3 + [72.8] * 3 + [80.0] * 14)
    assert result.average_mg == pytest.approx(80.0)
    assert result.limit_pct == 10.0
    assert result.outside_limit == 0
    assert result.passed is True


def test_mass_uniformity_just_above_80_uses_7_5_pct() -> None:
    # Average 81 (> 80 mg) → 7.5 %. Deviations 7.2 / 81 ≈ 8.9 % > 7.5: six outside, fails.
    result = mass_uniformity([88.2] * 3 + [73.8] * 3 + [81.0] * 14)
    assert result.limit_pct == 7.5
    assert result.outside_limit == 6
    assert result.outside_double == 0
    assert result.passed is False


def test_mass_uniformity_average_exactly_250_uses_5_pct() -> None:
    # 3 × 265 + 3 × 235 + 14 × 250 = 5000; average 250.0 → "250 mg or more" → 5 %.
    # Deviations 15 / 250 = 6 % > 5: six outside, fails (with 7.5 % it would pass).
    result = mass_uniformity([265.0] * 3 + [235.0] * 3 + [250.0] * 14)
    assert result.average_mg == pytest.approx(250.0)
    assert result.limit_pct == 5.0
    assert result.outside_limit == 6
    assert result.passed is False


def test_mass_uniformity_just_below_250_uses_7_5_pct() -> None:
    # Average 249 (< 250 mg) → 7.5 %. Deviations 15 / 249 ≈ 6.02 % ≤ 7.5: passes.
    result = mass_uniformity([264.0] * 3 + [234.0] * 3 + [249.0] * 14)
    assert result.limit_pct == 7.5
    assert result.outside_limit == 0
    assert result.passed is True


def test_mass_uniformity_two_outside_passes() -> None:
    # 108 + 92 + 18 × 100 = 2000, average 100 → 7.5 %; 108 and 92 deviate 8 % > 7.5 (≤ 15).
    result = mass_uniformity([108.0, 92.0] + [100.0] * 18)
    assert result.applicable is True
    assert result.outside_limit == 2
    assert result.outside_double == 0
    assert result.passed is True


def test_mass_uniformity_three_outside_fails() -> None:
    # 108 + 108 + 92 + 8 × 99 + 9 × 100 = 308 + 792 + 900 = 2000, average 100 → 7.5 %;
    # three units deviate 8 %, the 99s only 1 %.
    result = mass_uniformity([108.0, 108.0, 92.0] + [99.0] * 8 + [100.0] * 9)
    assert result.average_mg == pytest.approx(100.0)
    assert result.outside_limit == 3
    assert result.outside_double == 0
    assert result.passed is False


def test_mass_uniformity_one_beyond_double_fails() -> None:
    # 116 + 16 × 99 + 3 × 100 = 116 + 1584 + 300 = 2000, average 100 → 7.5 %, double 15 %;
    # 116 deviates 16 % > 15: one unit outside both.
    result = mass_uniformity([116.0] + [99.0] * 16 + [100.0] * 3)
    assert result.outside_limit == 1
    assert result.outside_double == 1
    assert result.passed is False


def test_mass_uniformity_deviation_exactly_on_limit_is_not_outside() -> None:
    # Average 100 (devs +7.5 × 2, −7.5 × 2, +8, −8, 0 × 14 sum to 0). "More than 7.5 %" excludes
    # the 107.5/92.5 units: only 108 and 92 count → 2 outside, passes.
    result = mass_uniformity([107.5, 107.5, 92.5, 92.5, 108.0, 92.0] + [100.0] * 14)
    assert result.outside_limit == 2
    assert result.passed is True


def test_mass_uniformity_uses_only_first_20_units() -> None:
    # Same as the two-outside pass, with a 21st unit at 50 mg that must be ignored.
    result = mass_uniformity([108.0, 92.0] + [100.0] * 18 + [50.0])
    assert result.n == 20
    assert result.average_mg == pytest.approx(100.0)
    assert result.passed is True


def test_mass_uniformity_not_applicable_with_19_units() -> None:
    result = mass_uniformity([100.0] * 19)
    assert result.applicable is False
    assert result.passed is None
    assert result.n == 19
    assert result.reasons[0] == "not applicable: needs 20 units, 19 available"


def test_mass_uniformity_rejects_negative_mass() -> None:
    with pytest.raises(ValidationFailed) as err:
        mass_uniformity([100.0] * 19 + [-1.0])
    assert err.value.field == "masses_mg"


# --- per-unit mass ----------------------------------------------------------------------------


def test_check_unit_masses() -> None:
    # Target 40 mg, ±7.5 % = ±3 mg: 43 and 37 are on the limit (within); 43.2 is +3.2 / 40 = +8 %,
    # 36.8 is −8 % (outside).
    checks = check_unit_masses(
        [40.0, 43.0, 37.0, 43.2, 36.8], target_mass_mg=40.0, tolerance_pct=7.5
    )
    assert [c.index for c in checks] == [0, 1, 2, 3, 4]
    assert [c.deviation_pct for c in checks] == pytest.approx([0.0, 7.5, -7.5, 8.0, -8.0])
    assert [c.within for c in checks] == [True, True, True, False, False]
    assert checks[3].mass_mg == 43.2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target_mass_mg": 0.0, "tolerance_pct": 5.0}, "target_mass_mg"),
        ({"target_mass_mg": 40.0, "tolerance_pct": -1.0}, "tolerance_pct"),
    ],
)
def test_check_unit_masses_rejects_bad_parameters(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        check_unit_masses([40.0], **kwargs)
    assert err.value.field == field


# --- release rule -----------------------------------------------------------------------------

ALL_TESTS = {
    "mode": "rtrt",
    "tests": ["ph_eur_2_9_40", "ph_eur_2_9_5", "unit_mass"],
    "max_units_outside_tolerance": 0,
}


def evidence(
    masses: list[float],
    *,
    design: dict[str, object] | None = None,
    tolerance_pct: object = 5.0,
    **extra: tuple[str, ...],
) -> ReleaseEvidence:
    # dose 50 mg, loading 0.5: content % = mass × 0.5 / 50 × 100 = mass, numerically.
    return ReleaseEvidence(
        measurements={"unit_masses_mg": list(masses)},
        design={"target_mass_mg": 100.0, "dose_mg": 50.0, **(design or {})},
        material={"drug_loading": 0.5},
        specs={"unit_mass": {"tolerance_pct": tolerance_pct}},
        **extra,
    )


def propose(evidence: ReleaseEvidence, rule: dict[str, object]) -> ReleaseProposal:
    return propose_release(KIT, evidence, rule)


# 20 units: 2.9.40 AV 4.8 (S2_AROUND_100); 2.9.5 average 100, largest deviation 3 % ≤ 7.5;
# unit mass largest deviation 3 % ≤ 5.
GOOD = [*S2_AROUND_100] + [100.0] * 10


def check(proposal_checks: tuple[Check, ...], name: str) -> Check:
    return next(c for c in proposal_checks if c.name == name)


def test_release_when_everything_passes() -> None:
    proposal = propose(evidence(GOOD), ALL_TESTS)
    assert proposal.decision == "release"
    assert proposal.reasons == (
        "2.9.40 stage 1: AV 4.8 ≤ L1 15.0",
        "2.9.5 0 of 20 units deviate more than 7.5 % from the average 100.00 mg (2 allowed),"
        " 0 more than 15 % (none allowed)",
        "0 of 20 units outside ±5 % of 100.0 mg (0 allowed)",
    )
    assert [c.name for c in proposal.checks] == [
        "ph_eur_2_9_40",
        "ph_eur_2_9_5",
        "unit_mass",
        "cpp",
        "deviations",
        "alarms",
    ]
    assert all(c.passed for c in proposal.checks)
    assert proposal.results["content_uniformity"].acceptance_value == pytest.approx(4.8)
    assert proposal.results["mass_uniformity"].limit_pct == 7.5


def test_reject_when_2_9_40_fails() -> None:
    # Contents = masses: AV 19.2 > 15 on the first 10, 20 units < 30 for stage 2.
    proposal = propose(
        evidence([*S8_AROUND_100] + [100.0] * 10), {"mode": "rtrt", "tests": ["ph_eur_2_9_40"]}
    )
    assert proposal.decision == "reject"
    assert check(proposal.checks, "ph_eur_2_9_40").passed is False
    assert proposal.reasons == (
        "2.9.40 stage 1: AV 19.2 > L1 15.0; stage 2 needs 30 units, 20 available",
    )


def test_reject_when_2_9_5_fails() -> None:
    # Three units deviate 8 % > 7.5 % from the average 100 (see the 2.9.5 three-outside case).
    masses = [108.0, 108.0, 92.0] + [99.0] * 8 + [100.0] * 9
    proposal = propose(evidence(masses), {"mode": "rtrt", "tests": ["ph_eur_2_9_5"]})
    assert proposal.decision == "reject"
    assert check(proposal.checks, "ph_eur_2_9_5").passed is False
    assert "3 of 20 units deviate more than 7.5 %" in proposal.reasons[0]


def test_reject_when_more_units_outside_tolerance_than_allowed() -> None:
    # 106 mg is +6 % of 100 mg, outside ±5 %: 1 unit outside, 0 allowed.
    masses = [106.0] + [100.0] * 19
    proposal = propose(evidence(masses), {"mode": "rtrt", "tests": ["unit_mass"]})
    assert proposal.decision == "reject"
    assert proposal.reasons == ("1 of 20 units outside ±5 % of 100.0 mg (0 allowed)",)


def test_units_outside_tolerance_within_allowance_release() -> None:
    masses = [106.0] + [100.0] * 19
    rule = {"mode": "rtrt", "tests": ["unit_mass"], "max_units_outside_tolerance": 1}
    proposal = propose(evidence(masses), rule)
    assert proposal.decision == "release"
    assert proposal.reasons == ("1 of 20 units outside ±5 % of 100.0 mg (1 allowed)",)


def test_unlisted_test_does_not_decide() -> None:
    # 2.9.40 would fail (AV 19.2), but the rule lists only the unit mass test: 112 and 88 deviate
    # 12 % from 100 mg, so 4 of 20 units are outside ±5 %, and 4 are allowed.
    masses = [*S8_AROUND_100] + [100.0] * 10
    rule = {"mode": "rtrt", "tests": ["unit_mass"], "max_units_outside_tolerance": 4}
    proposal = propose(evidence(masses), rule)
    assert proposal.decision == "release"
    assert proposal.results["content_uniformity"].passed is False
    assert "ph_eur_2_9_40" not in [c.name for c in proposal.checks]


def test_needs_qp_review_when_too_few_units() -> None:
    # 9 units: 2.9.40 (needs 10) and 2.9.5 (needs 20) cannot be evaluated; unit mass passes.
    proposal = propose(evidence([100.0] * 9), ALL_TESTS)
    assert proposal.decision == "needs_qp_review"
    assert check(proposal.checks, "ph_eur_2_9_40").passed is None
    assert check(proposal.checks, "ph_eur_2_9_5").passed is None
    assert check(proposal.checks, "unit_mass").passed is True
    assert "2.9.40 not applicable: needs at least 10 units, 9 available" in proposal.reasons
    assert "2.9.5 not applicable: needs 20 units, 9 available" in proposal.reasons[1]


def test_needs_qp_review_without_any_unit() -> None:
    proposal = propose(evidence([]), ALL_TESTS)
    assert proposal.decision == "needs_qp_review"
    assert [c.passed for c in proposal.checks[:3]] == [None, None, None]


@pytest.mark.parametrize(
    ("extra", "name", "reason"),
    [
        ({"cpp_excursions": ("nozzle 182 °C",)}, "cpp", "1 CPP excursion: nozzle 182 °C"),
        ({"open_deviations": ("DEV-7", "DEV-9")}, "deviations", "2 open deviations: DEV-7; DEV-9"),
        ({"open_alarms": ("door open",)}, "alarms", "1 open alarm: door open"),
    ],
)
def test_needs_qp_review_for_excursions_deviations_alarms(
    extra: dict[str, tuple[str, ...]], name: str, reason: str
) -> None:
    proposal = propose(evidence(GOOD, **extra), ALL_TESTS)
    assert proposal.decision == "needs_qp_review"
    assert check(proposal.checks, name).passed is False
    assert proposal.reasons[-1] == reason


def test_each_open_item_adds_its_reason() -> None:
    extra = {"cpp_excursions": ("a",), "open_deviations": ("b",), "open_alarms": ("c",)}
    proposal = propose(evidence(GOOD, **extra), ALL_TESTS)
    assert proposal.decision == "needs_qp_review"
    assert proposal.reasons[-3:] == ("1 CPP excursion: a", "1 open deviation: b", "1 open alarm: c")


def test_reject_wins_over_needs_qp_review() -> None:
    masses = [106.0] + [100.0] * 19
    proposal = propose(evidence(masses, open_alarms=("door open",)), ALL_TESTS)
    assert proposal.decision == "reject"
    assert "1 open alarm: door open" in proposal.reasons


def test_manual_mode_always_needs_qp_review() -> None:
    rule = {**ALL_TESTS, "mode": "manual"}
    good = propose(evidence(GOOD), rule)
    assert good.decision == "needs_qp_review"
    assert good.reasons[0] == "release rule mode is manual: the QP decides"
    assert "2.9.40 stage 1: AV 4.8 ≤ L1 15.0" in good.reasons

    bad = propose(evidence([106.0] + [100.0] * 19), rule)
    assert bad.decision == "needs_qp_review"
    assert check(bad.checks, "unit_mass").passed is False
    assert "1 of 20 units outside ±5 % of 100.0 mg (0 allowed)" in bad.reasons


def test_manual_mode_may_list_no_tests() -> None:
    proposal = propose(evidence(GOOD), {"mode": "manual", "tests": []})
    assert proposal.decision == "needs_qp_review"
    assert [c.name for c in proposal.checks] == ["cpp", "deviations", "alarms"]


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"mode": "rtrt", "tests": ["ph_eur_2_9_6"]}, "release_rule.tests"),
        ({"mode": "rtrt", "tests": "ph_eur_2_9_40"}, "release_rule.tests"),
        ({"mode": "rtrt", "tests": []}, "release_rule.tests"),
        ({"mode": "auto", "tests": ["unit_mass"]}, "release_rule.mode"),
        ({"tests": ["unit_mass"]}, "release_rule.mode"),
        (
            {"mode": "rtrt", "tests": ["unit_mass"], "max_units_outside_tolerance": -1},
            "release_rule.max_units_outside_tolerance",
        ),
        (
            {"mode": "rtrt", "tests": ["unit_mass"], "max_units_outside_tolerance": True},
            "release_rule.max_units_outside_tolerance",
        ),
    ],
)
def test_bad_rule_is_refused(rule: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        propose(evidence(GOOD), rule)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (evidence([100.0, -1.0]), "unit_masses_mg"),
        (evidence(GOOD, design={"dose_mg": 0.0}), "dose_mg"),
        (evidence(GOOD, design={"target_mass_mg": 0.0}), "target_mass_mg"),
        (evidence(GOOD, tolerance_pct=0.0), "mass_tolerance_pct"),
    ],
)
def test_bad_evidence_is_refused(bad: ReleaseEvidence, field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        propose(bad, ALL_TESTS)
    assert err.value.field == field


def test_to_dict_is_json_ready() -> None:
    proposal = propose(evidence(GOOD, open_alarms=("door open",)), ALL_TESTS)
    data = proposal.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["decision"] == "needs_qp_review"
    assert data["checks"][-1] == {
        "name": "alarms",
        "passed": False,
        "detail": "1 open alarm: door open",
    }
    assert data["content_uniformity"]["acceptance_value"] == pytest.approx(4.8)
    assert data["mass_uniformity"]["limit_pct"] == 7.5
