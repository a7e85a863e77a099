"""The comparability statistics against published or hand-calculated answers (never the code's
own output): TOST, Cpk with Bissell's interval, ISO 13528 Algorithm A and z-scores, the chart
of group means, the run rule and the two-sample Hotelling T²."""

from __future__ import annotations

import statistics

import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.comparability.logic import (
    algorithm_a,
    hotelling_two_sample,
    means_chart,
    run_rule,
    site_capability,
    tost,
    z_scores,
    z_verdict,
)

# --- TOST -----------------------------------------------------------------------------------
# Hand calculation (Schuirmann's two one-sided tests, pooled variance):
# x1 = 1..5 (mean 3, s² 2.5), x2 = 2..6 (mean 4, s² 2.5); s_p² = 2.5, SE = sqrt(2.5 (1/5 + 1/5))
# = 1, ν = 8, difference -1. Margin 2: t_L = (-1 + 2)/1 = 1, t_U = (-1 - 2)/1 = -3.
# Student t tables (ν = 8): P(T > 1) = 0.1733, P(T > 3) = 0.00854, t_0.95 = 1.860.
# 90 % CI: -1 ± 1.860 = (-2.860, 0.860): not inside ±2, inside ±3.
X1, X2 = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 3.0, 4.0, 5.0, 6.0]


def test_tost_hand_calculation_with_t_tables() -> None:
    found = tost(X1, X2, 2.0, 0.05)
    assert found.difference == pytest.approx(-1.0)
    assert found.df == 8
    assert found.t_lower == pytest.approx(1.0)
    assert found.t_upper == pytest.approx(-3.0)
    assert found.p_lower == pytest.approx(0.1733, abs=1e-4)
    assert found.p_upper == pytest.approx(0.00854, abs=1e-5)
    assert found.p_value == pytest.approx(0.1733, abs=1e-4)  # the larger of the two
    assert (found.ci_low, found.ci_high) == pytest.approx((-2.860, 0.860), abs=1e-3)
    assert found.equivalent is False


def test_tost_equivalent_when_the_interval_lies_inside_the_margin() -> None:
    # margin 3: t_L = 2, t_U = -4; P(T8 > 2) = 0.0403, P(T8 > 4) = 0.00197 (t tables)
    found = tost(X1, X2, 3.0, 0.05)
    assert found.p_lower == pytest.approx(0.0403, abs=1e-4)
    assert found.p_upper == pytest.approx(0.00197, abs=1e-5)
    assert found.equivalent is True
    # the interval decides the same way: (-2.860, 0.860) lies inside (-3, 3)
    assert found.ci_low > -3 and found.ci_high < 3


# Published answers of R's `equivalence::tost(x, y, epsilon = 0.6, var.equal = TRUE)` on the
# "clinic" data (two groups of 15 patients), as recorded in statsmodels' own test suite
# (statsmodels/stats/tests/test_tost.py: tost_clinic_indep_1_pooled, tost_clinic_indep_2_pooled).
CLINIC_VAR1 = (
    [2.84, 2.51, 2.41, 2.95, 3.14, 3.79, 4.14, 3.85, 3.02, 3.45, 5.37, 3.81, 4.19, 3.16, 3.84],
    [2.60, 2.82, 2.18, 3.46, 4.01, 3.04, 3.47, 4.06, 2.91, 3.59, 4.51, 3.16, 3.86, 3.31, 3.02],
)
CLINIC_VAR2 = (
    [4.00, 3.26, 4.14, 3.42, 3.25, 4.34, 4.97, 4.31, 3.11, 3.41, 5.02, 4.21, 4.59, 5.30, 4.32],
    [3.76, 3.66, 3.65, 3.60, 3.48, 2.87, 3.24, 3.92, 3.99, 4.21, 4.21, 3.31, 3.61, 2.97, 2.73],
)


@pytest.mark.parametrize(
    ("data", "difference", "ci", "p_value", "equivalent"),
    [
        (CLINIC_VAR1, 0.1646666666666667, (-0.2659960620757337, 0.595329395409067),
         0.04827315100761467, True),
        (CLINIC_VAR2, 0.562666666666666, (0.1969453064978777, 0.928388026835454),
         0.43169347692374, False),
    ],
)  # fmt: skip
def test_tost_matches_r_equivalence_tost_on_the_clinic_data(
    data: tuple[list[float], list[float]],
    difference: float,
    ci: tuple[float, float],
    p_value: float,
    equivalent: bool,
) -> None:
    found = tost(data[0], data[1], 0.6, 0.05)
    assert found.df == 28
    assert found.difference == pytest.approx(difference, abs=1e-12)
    assert (found.ci_low, found.ci_high) == pytest.approx(ci, abs=1e-9)
    assert found.p_value == pytest.approx(p_value, abs=1e-9)
    assert found.equivalent is equivalent


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"margin": 0.0}, "margin"),
        ({"margin": -1.0}, "margin"),
        ({"margin": 1.0, "alpha": 0.6}, "alpha"),
    ],
)
def test_tost_refuses_bad_input_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        tost(X1, X2, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_tost_needs_two_values_per_sample() -> None:
    with pytest.raises(ValidationFailed) as caught:
        tost([1.0], X2, 1.0)
    assert caught.value.field == "x1"


# --- Cpk with Bissell's interval ----------------------------------------------------------------
def test_cpk_hand_calculation() -> None:
    # 9, 10, 11: mean 10, s 1; LSL 7, USL 16: Cpu = 6/3 = 2, Cpl = 3/3 = 1, Cpk = 1.
    # Bissell (n = 3): 1 ± 1.95996 sqrt(1/27 + 1/(2·2)) = 1 ± 1.05007
    found = site_capability([9.0, 10.0, 11.0], lsl=7.0, usl=16.0)
    assert found.cpk == pytest.approx(1.0)
    assert found.interval.lower == pytest.approx(-0.05007, abs=1e-4)
    assert found.interval.upper == pytest.approx(2.05007, abs=1e-4)


def test_cpk_interval_montgomery_example() -> None:
    # Montgomery, Introduction to Statistical Quality Control (Example 8.6 in the 6th ed.):
    # n = 20, Ĉpk = 1.33 -> 0.88 <= Cpk <= 1.78 at 95 % (Bissell's approximation).
    values = [float(v) for v in range(20)]
    mean, sd = statistics.mean(values), statistics.stdev(values)
    found = site_capability(values, lsl=mean - 10 * sd, usl=mean + 3 * 1.33 * sd)
    assert found.cpk == pytest.approx(1.33)
    assert found.interval.lower == pytest.approx(0.88, abs=0.01)
    assert found.interval.upper == pytest.approx(1.78, abs=0.01)


# --- ISO 13528 Algorithm A -----------------------------------------------------------------------
# The 12 laboratories' results of the worked example of ISO 13528:2015 Annex C.3 as reproduced in
# S. Subramanian, "The Algorithm A in Detail" (slides, 2025, citing ISO 5725-5:1998 §6.2 and
# ISO 13528:2015): start x* = 1.510, s* = 0.3559; iteration 1: x* = 1.475, s* = 0.4072;
# iteration 2: x* = 1.460, s* = 0.4486.
LABS = [1.69, 0.74, 2.05, 1.14, 2.19, 1.39, 1.52, 1.50, 1.58, 0.80, 1.21, 1.63]


def test_algorithm_a_iterations_match_the_published_example() -> None:
    found = algorithm_a(LABS)
    (x0, s0), (x1, s1), (x2, s2) = found.trace[:3]
    assert (x0, s0) == pytest.approx((1.510, 0.3559), abs=5e-4)
    assert (x1, s1) == pytest.approx((1.475, 0.4072), abs=5e-4)
    assert (x2, s2) == pytest.approx((1.460, 0.4486), abs=5e-4)


def test_algorithm_a_converges_to_the_plain_estimates_once_nothing_is_winsorised() -> None:
    # hand: once x* ± 1.5 s* holds every result (0.74 ... 2.19), x* = mean = 17.44 / 12 and
    # s* = 1.134 × the sample sd (stdlib statistics, not the code under test)
    found = algorithm_a(LABS)
    assert found.mean == pytest.approx(17.44 / 12, abs=1e-5)
    assert found.sd == pytest.approx(1.134 * statistics.stdev(LABS), abs=1e-5)
    assert found.mean - 1.5 * found.sd < min(LABS) and max(LABS) < found.mean + 1.5 * found.sd


def test_algorithm_a_resists_an_outlier() -> None:
    # one wild result barely moves x*: the median start and 1.5 s* winsorisation hold it
    found = algorithm_a([*LABS, 25.0])
    assert found.mean < 1.6
    assert statistics.mean([*LABS, 25.0]) > 3.0


def test_algorithm_a_refuses_no_spread() -> None:
    with pytest.raises(ValidationFailed) as caught:
        algorithm_a([1.0, 1.0, 1.0, 2.0])
    assert caught.value.field == "results"


def test_z_scores_and_iso_13528_verdicts() -> None:
    # z = (x - x_pt) / σ_pt (ISO 13528 §9.4)
    assert z_scores([10.0, 13.0, 4.0], 10.0, 2.0) == [0.0, 1.5, -3.0]
    assert [z_verdict(z) for z in (0.0, 2.0, -2.5, 3.0, -3.01)] == [
        "satisfactory",
        "satisfactory",
        "questionable",
        "unsatisfactory",
        "unsatisfactory",
    ]
    with pytest.raises(ValidationFailed) as caught:
        z_scores([1.0], 0.0, 0.0)
    assert caught.value.field == "sd_pt"


# --- drift: chart of means, run rule, Hotelling T² ----------------------------------------------
def test_a_site_whose_mean_shifted_is_outside_the_networks_limits() -> None:
    # hand: A = B = 9, 10, 11 and C = 12, 13, 14: grand mean 99/9 = 11; each group's SS is 2,
    # pooled σ = sqrt(6/6) = 1; limits for n = 3: 11 ± 3/√3 = 9.268 ... 12.732.
    # A and B (mean 10) sit inside, C (mean 13) outside.
    chart = means_chart({"A": [9, 10, 11], "B": [9, 10, 11], "C": [12, 13, 14]})
    assert chart.centre == pytest.approx(11.0)
    assert chart.sigma == pytest.approx(1.0)
    points = {p.group: p for p in chart.points}
    assert (points["C"].lcl, points["C"].ucl) == pytest.approx((9.268, 12.732), abs=1e-3)
    assert [points[g].outside for g in "ABC"] == [False, False, True]


def test_run_rule_eight_in_a_row_on_one_side() -> None:
    assert run_rule([1.0] * 8, 0.0) == 7
    assert run_rule([1.0] * 7 + [-1.0], 0.0) is None
    assert run_rule([-1.0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1], 0.0) == 12  # a tie restarts it


def test_hotelling_reduces_to_the_pooled_t_squared_in_one_dimension() -> None:
    # p = 1: T² = t² = 1 (t = -1 above), F = (10-1-1)/(1·8) T² = 1, P(F(1,8) > 1) = 2 P(T8 > 1)
    found = hotelling_two_sample([[v] for v in X1], [[v] for v in X2])
    assert found is not None
    assert found.t2 == pytest.approx(1.0)
    assert (found.df1, found.df2) == (1, 8)
    assert found.p_value == pytest.approx(2 * 0.1733, abs=2e-4)


def test_hotelling_two_dimensional_hand_calculation() -> None:
    # a: the corners of the square (0,0)-(2,2), b: the same square moved by (1, 1). Each has
    # covariance diag(4/3, 4/3), so S_p = diag(4/3); d = (-1, -1);
    # T² = (4·4/8)(3/4 + 3/4) = 3; F = (8-2-1)/(2·6) · 3 = 1.25 on (2, 5).
    a = [[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]]
    b = [[x + 1, y + 1] for x, y in a]
    found = hotelling_two_sample(a, b)
    assert found is not None
    assert found.t2 == pytest.approx(3.0)
    assert found.f == pytest.approx(1.25)
    assert (found.df1, found.df2) == (2, 5)


def test_hotelling_has_no_answer_for_too_few_vectors() -> None:
    assert hotelling_two_sample([[1.0, 2.0]], [[1.0, 2.0], [2.0, 3.0]]) is None
