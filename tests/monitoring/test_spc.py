"""Control charts: NIST/SEMATECH known answers (parsed from ../shared/data), constants, phase II,
hand-computed subgroup charts and bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.spc import (
    MAX_SUBGROUP_SIZE,
    c4,
    control_constants,
    cusum_chart,
    d2,
    d3,
    ewma_chart,
    imr_chart,
    moving_ranges,
    sigma_from_moving_range,
    xbar_r_chart,
    xbar_s_chart,
)

NIST_FILE = "spc/nist_spc_examples.md"
NUMBER = r"-?\d+(?:\.\d+)?"


# --- reading the NIST examples ----------------------------------------------------------------


def _section(text: str, number: int) -> str:
    match = re.search(rf"^## {number}\. .*?(?=^## \d+\. |\Z)", text, re.M | re.S)
    assert match, f"section {number} not found in {NIST_FILE}"
    return match.group(0)


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(NUMBER, line)]


def _after(section: str, label: str, lines: int = 1) -> list[float]:
    """The numbers on the `lines` lines that follow the line starting with `label`."""
    rows = section.splitlines()
    start = next(i for i, row in enumerate(rows) if row.startswith(label))
    return [v for row in rows[start + 1 : start + 1 + lines] for v in _numbers(row)]


def _value(section: str, pattern: str) -> float:
    match = re.search(pattern, section)
    assert match, f"{pattern!r} not found"
    return float(match.group(1))


@pytest.fixture(scope="module")
def nist(shared_data: Path) -> str:
    return (shared_data / NIST_FILE).read_text(encoding="utf-8")


# --- §6.3.2.4 EWMA ----------------------------------------------------------------------------


@pytest.mark.shared_data
def test_nist_ewma_series_and_limits(nist: str) -> None:
    sec = _section(nist, 1)
    data = _after(sec, "Data (20 points")
    assert len(data) == 20
    target = _value(sec, r"target = (" + NUMBER + ")")
    s = _value(sec, r"s = (" + NUMBER + r") \(historical\)")
    lam = _value(sec, r"lambda = (" + NUMBER + ")")
    width = _value(sec, r"lambda = " + NUMBER + r", k = (" + NUMBER + ")")
    published = _after(sec, "Published EWMA series")
    assert len(published) == 21  # EWMA_0 .. EWMA_20

    chart = ewma_chart(data, target=target, sigma=s, lam=lam, L=width)

    assert published[0] == target
    np.testing.assert_allclose(chart.statistic, published[1:], atol=0.005 + 1e-9)
    assert chart.center == target
    ucl = _value(sec, r"UCL = .*?\*\*(" + NUMBER + r")\*\*")
    lcl = _value(sec, r"LCL = .*?\*\*(" + NUMBER + r")\*\*")
    assert chart.ucl_asymptotic == pytest.approx(ucl, abs=1e-4)
    assert chart.lcl_asymptotic == pytest.approx(lcl, abs=1e-4)
    assert _value(sec, r"sqrt\(0\.3/1\.7\) = (" + NUMBER + ")") == pytest.approx(
        math.sqrt(lam / (2 - lam)), abs=5e-5
    )
    # "Verdict: no point is out of control", with exact or asymptotic limits.
    assert "no point is out of control" in sec
    assert chart.out_of_control == ()
    assert (
        ewma_chart(data, target=target, sigma=s, lam=lam, exact_limits=False).out_of_control == ()
    )
    for i, low, high in re.findall(rf"i=(\d+): ({NUMBER}) / ({NUMBER})", sec):
        assert chart.lcl[int(i) - 1] == pytest.approx(float(low), abs=1e-4)
        assert chart.ucl[int(i) - 1] == pytest.approx(float(high), abs=1e-4)


def test_ewma_signals_a_shift_and_exact_limits_start_narrow() -> None:
    x = [0.0] * 5 + [1.5] * 10
    chart = ewma_chart(x, target=0.0, sigma=1.0, lam=0.2, L=3.0)
    # EWMA after the shift: 1.5 (1 - 0.8^t); asymptotic half-width 3 sqrt(0.2/1.8) = 1.0.
    first = chart.out_of_control[0]
    assert first == 5 + 4  # 1.5 (1 - 0.8^5) = 1.008 > 1.0 at the 5th shifted point
    assert np.all(np.diff(chart.ucl) > 0) and chart.ucl[-1] < chart.ucl_asymptotic
    assert chart.ucl_asymptotic == pytest.approx(1.0)
    assert chart.ucl[0] == pytest.approx(3 * 0.2)  # sqrt(λ/(2-λ)(1-(1-λ)²)) = λ at t = 1


def test_ewma_with_lambda_one_is_the_shewhart_chart() -> None:
    x = [0.1, -2.9, 3.1, 0.0]
    chart = ewma_chart(x, target=0.0, sigma=1.0, lam=1.0, L=3.0)
    np.testing.assert_allclose(chart.statistic, x)
    assert chart.out_of_control == (2,)
    np.testing.assert_allclose(chart.ucl, 3.0)


def test_ewma_estimates_target_and_sigma_when_not_given() -> None:
    x = [1.0, 3.0, 2.0, 4.0]
    chart = ewma_chart(x)
    assert chart.center == pytest.approx(2.5)
    assert chart.sigma == pytest.approx((2 + 1 + 2) / 3 / 1.128)


# --- §6.3.2.3 CUSUM ---------------------------------------------------------------------------


def _cusum_rows(sec: str) -> list[tuple[int, bool, float, float]]:
    rows = re.findall(rf"^\| (\d+)(\*?) \| {NUMBER} \| ({NUMBER}) \| ({NUMBER}) \|", sec, re.M)
    return [(int(t), star == "*", float(hi), float(lo)) for t, star, hi, lo in rows]


@pytest.mark.shared_data
def test_nist_cusum_first_signal_at_14_and_table(nist: str) -> None:
    sec = _section(nist, 2)
    data = _after(sec, "Data (20 subgroup means", lines=2)
    assert len(data) == 20
    target = _value(sec, r"target = (" + NUMBER + ")")
    sigma_xbar = _value(sec, r"sigma_xbar = .*? = (" + NUMBER + ")")
    k_units = _value(sec, r"k = (" + NUMBER + r") \(= 0\.5 sigma_xbar\)")
    h_units = _value(sec, r"h = (" + NUMBER + ")")
    first = int(_value(sec, r"\*\*t = (\d+)\*\*"))
    rows = _cusum_rows(sec)
    assert len(rows) == 20

    chart = cusum_chart(
        data, target=target, sigma=sigma_xbar, k=k_units / sigma_xbar, h=h_units / sigma_xbar
    )

    assert first == 14
    assert chart.first_signal == first - 1  # 0-based index of t = 14
    assert chart.out_of_control == tuple(t - 1 for t, star, _, _ in rows if star)
    assert chart.upper_signals == chart.out_of_control and chart.lower_signals == ()
    assert chart.decision_interval == pytest.approx(h_units)
    for t, _, hi, lo in rows:
        # NIST rounds the ties 14.445 and 19.035 inconsistently: tolerance 0.005 (+ float slack).
        assert chart.upper[t - 1] == pytest.approx(hi, abs=0.0051), t
        assert chart.lower[t - 1] == pytest.approx(lo, abs=0.0051), t
    # "The same chart in sigma units: k = 0.5, h = 6.608 sigma. It gives identical signals."
    in_sigma = cusum_chart(data, target=target, sigma=sigma_xbar, k=0.5, h=6.608)
    assert in_sigma.out_of_control == chart.out_of_control


def test_cusum_lower_side_and_headstart() -> None:
    x = [10.0] * 3 + [8.0] * 6
    chart = cusum_chart(x, target=10.0, sigma=1.0, k=0.5, h=4.0)
    # Lower sum grows by 2 - 0.5 = 1.5 per shifted point: 1.5, 3.0, 4.5 > 4 at the third.
    np.testing.assert_allclose(chart.lower, [0, 0, 0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0])
    assert chart.first_signal == 5
    assert chart.lower_signals == (5, 6, 7, 8) and chart.upper_signals == ()
    # A head start of h/2 (2σ) catches a shift present from the start sooner (Lucas & Crosier):
    # lower sums 2 + 1.5 = 3.5, 5.0 (signal at index 1) instead of 1.5, 3.0, 4.5 (index 2).
    early = [8.0] * 4
    assert cusum_chart(early, target=10.0, sigma=1.0, k=0.5, h=4.0).first_signal == 2
    fir = cusum_chart(early, target=10.0, sigma=1.0, k=0.5, h=4.0, headstart=2.0)
    assert fir.first_signal == 1
    np.testing.assert_allclose(fir.lower, [3.5, 5.0, 6.5, 8.0])
    np.testing.assert_allclose(fir.upper, 0.0)  # 2 - 2 - 0.5 < 0 at once
    # A constant on target never signals; sums stay at zero.
    calm = cusum_chart([10.0] * 50, target=10.0, sigma=1.0)
    assert calm.first_signal is None and not calm.upper.any() and not calm.lower.any()


# --- §6.3.2.2 individuals chart ---------------------------------------------------------------


@pytest.mark.shared_data
def test_nist_individuals_chart(nist: str) -> None:
    sec = _section(nist, 3)
    data = _numbers(sec.split("Data (flow rate, 10 batches):")[1].splitlines()[0])
    published_mr = _numbers(sec.split("Moving ranges:")[1].splitlines()[0])
    assert len(data) == 10 and len(published_mr) == 9

    chart = imr_chart(data)

    np.testing.assert_allclose(chart.moving_range.statistic, published_mr, atol=1e-9)
    assert chart.mean == pytest.approx(_value(sec, r"Mean = \*\*(" + NUMBER + ")"), abs=1e-9)
    assert chart.moving_range.center == pytest.approx(
        _value(sec, r"MRbar = \*\*(" + NUMBER + ")"), abs=5e-5
    )
    assert chart.individuals.ucl == pytest.approx(
        _value(sec, r"UCL_x = .*?\*\*(" + NUMBER + ")"), abs=5e-5
    )
    assert chart.individuals.lcl == pytest.approx(
        _value(sec, r"LCL_x = \*\*(" + NUMBER + ")"), abs=5e-5
    )
    assert chart.moving_range.ucl == pytest.approx(
        _value(sec, r"MR chart UCL = .*? = (" + NUMBER + r") \(derived"), abs=5e-5
    )
    assert chart.moving_range.lcl == 0.0
    assert "Verdict: in control" in sec
    assert chart.out_of_control == ()


def test_individuals_flags_and_moving_range_indexes() -> None:
    # MR̄ = 1.128 exactly makes σ̂ = 1 for the base pattern.
    base = [0.0, 1.128] * 10
    x = [*base, 9.0]
    chart = imr_chart(x, mean=0.564, sigma=1.0)
    assert chart.individuals.out_of_control == (20,)
    # The jump 1.128 -> 9.0 (7.872) exceeds D4 d2 σ = 3.685; it belongs to observation 20.
    assert chart.moving_range.out_of_control == (20,)
    assert chart.moving_range.first_index == 1
    assert chart.moving_range.center == pytest.approx(1.128)
    assert chart.moving_range.ucl == pytest.approx(3.267 * 1.128)
    phase1 = imr_chart(base)
    assert phase1.sigma == pytest.approx(1.0) and phase1.mean == pytest.approx(0.564)
    assert sigma_from_moving_range(base) == pytest.approx(1.0)
    np.testing.assert_allclose(moving_ranges([1.0, 4.0, 2.0]), [3.0, 2.0])


def test_chart_arrays_are_read_only() -> None:
    chart = imr_chart([1.0, 2.0, 4.0])
    with pytest.raises(ValueError):
        chart.individuals.statistic[0] = 99.0


# --- §6.3.2.1 constants -----------------------------------------------------------------------


@pytest.mark.shared_data
def test_constants_match_the_nist_table(nist: str) -> None:
    sec = _section(nist, 4)
    header = next(row for row in sec.splitlines() if row.startswith("| n | d2"))
    names = [c.strip() for c in header.strip("|").split("|")]
    rows = [_numbers(row) for row in sec.splitlines() if re.match(r"^\| \d+ \| \d", row)]
    assert [int(r[0]) for r in rows] == list(range(2, 11))
    for row in rows:
        constants = control_constants(int(row[0]))
        for name, expected in zip(names[1:], row[1:], strict=True):
            assert getattr(constants, name) == pytest.approx(expected, abs=5.1e-5), (row[0], name)


def test_printed_table_values_and_larger_sizes() -> None:
    # Printed tables (NIST §6.3.2.1, Montgomery Appendix VI).
    printed = {(2, "d2"): 1.128, (2, "D4"): 3.267, (5, "A2"): 0.577, (5, "D4"): 2.114}
    for (n, name), value in printed.items():
        # D4(5) is 2.11452 exactly and printed as 2.114 or 2.115: ±0.001.
        assert getattr(control_constants(n), name) == pytest.approx(value, abs=1e-3), (n, name)
    # n = 25 (Montgomery Appendix VI): d2 3.931, d3 0.708, c4 0.9896, A2 0.153, A3 0.606,
    # B3 0.565, B4 1.435, D3 0.459, D4 1.541.
    k = control_constants(25)
    for name, value in dict(
        d2=3.931, d3=0.708, c4=0.9896, A2=0.153, A3=0.606, B3=0.565, B4=1.435, D3=0.459, D4=1.541
    ).items():
        assert getattr(k, name) == pytest.approx(value, abs=6e-4), name
    # Exact values: d2(2) = 2/√π, d3(2)² = 2 - 4/π, c4(2) = √(2/π).
    assert d2(2) == pytest.approx(2 / math.sqrt(math.pi), abs=1e-10)
    assert d3(2) == pytest.approx(math.sqrt(2 - 4 / math.pi), abs=1e-8)
    assert c4(2) == pytest.approx(math.sqrt(2 / math.pi), abs=1e-12)


def test_d2_d3_agree_with_simulation() -> None:
    rng = np.random.default_rng(20240607)
    for n in (4, 12, 40):
        samples = rng.standard_normal((100_000, n))
        ranges = samples.max(axis=1) - samples.min(axis=1)
        # Standard errors are < 0.003; a 0.01 tolerance is over 3 of them.
        assert d2(n) == pytest.approx(ranges.mean(), abs=0.01)
        assert d3(n) == pytest.approx(ranges.std(ddof=1), abs=0.01)


def test_subgroup_size_limits() -> None:
    for bad in (1, 0, MAX_SUBGROUP_SIZE + 1):
        with pytest.raises(ValidationFailed) as info:
            control_constants(bad)
        assert info.value.field == "n"
    with pytest.raises(ValidationFailed):
        d2(2.5)  # type: ignore[arg-type]
    assert c4(500) == pytest.approx(1 - 1 / (4 * 500), abs=1e-5)  # c4 has no upper limit


# --- X̄-R and X̄-S ------------------------------------------------------------------------------

# Means 2, 3, 4 (x̿ = 3); ranges 2, 2, 2 (R̄ = 2); sds 1, 1, 1 (S̄ = 1).
SUBGROUPS = [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [3.0, 4.0, 5.0]]


def test_xbar_r_chart_by_hand() -> None:
    k = control_constants(3)
    chart = xbar_r_chart(SUBGROUPS)
    assert chart.kind == "R" and chart.subgroup_size == 3
    np.testing.assert_allclose(chart.xbar.statistic, [2.0, 3.0, 4.0])
    assert chart.xbar.center == pytest.approx(3.0)
    assert chart.xbar.ucl == pytest.approx(3.0 + 2.0 * k.A2)  # A2(3) = 1.023
    assert chart.xbar.ucl == pytest.approx(3.0 + 2.0 * 1.023, abs=1e-3)
    assert chart.spread.center == pytest.approx(2.0)
    assert chart.spread.lcl == 0.0 and chart.spread.ucl == pytest.approx(2.0 * 2.575, abs=1e-3)
    assert chart.sigma == pytest.approx(2.0 / k.d2)
    assert chart.out_of_control == ()


def test_xbar_s_chart_by_hand() -> None:
    chart = xbar_s_chart(SUBGROUPS)
    np.testing.assert_allclose(chart.spread.statistic, [1.0, 1.0, 1.0])
    assert chart.xbar.ucl == pytest.approx(3.0 + 1.954, abs=1e-3)  # A3(3) = 1.954
    assert chart.spread.ucl == pytest.approx(2.568, abs=1e-3)  # B4(3) = 2.568
    assert chart.sigma == pytest.approx(1.0 / 0.8862, abs=1e-4)


def test_subgroup_charts_phase_two_flag_a_shifted_subgroup() -> None:
    groups = [[10.0, 10.5, 9.5, 10.0]] * 5 + [[13.0, 13.5, 12.5, 13.0]]
    k = control_constants(4)
    r_chart = xbar_r_chart(groups, mean=10.0, sigma=0.5)
    # σ/√n = 0.25: limits 10 ± 0.75; the 6th mean (13) is beyond.
    assert r_chart.xbar.ucl == pytest.approx(10.75)
    assert r_chart.xbar.out_of_control == (5,)
    assert r_chart.spread.center == pytest.approx(k.d2 * 0.5)
    assert r_chart.spread.ucl == pytest.approx(k.D2 * 0.5)
    s_chart = xbar_s_chart(groups, mean=10.0, sigma=0.5)
    assert s_chart.spread.center == pytest.approx(k.c4 * 0.5)
    assert s_chart.spread.ucl == pytest.approx(k.B6 * 0.5)
    assert s_chart.out_of_control == (5,)
    # A spread jump is caught by the spread chart alone.
    wide = [[10.0, 10.5, 9.5, 10.0]] * 5 + [[8.0, 12.0, 8.0, 12.0]]
    assert xbar_r_chart(wide, mean=10.0, sigma=0.5).spread.out_of_control == (5,)
    assert xbar_r_chart(wide, mean=10.0, sigma=0.5).xbar.out_of_control == ()


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: imr_chart([]), "x"),
        (lambda: imr_chart([1.0]), "x"),
        (lambda: imr_chart([1.0, float("nan"), 2.0]), "x"),
        (lambda: imr_chart([1.0, math.inf]), "x"),
        (lambda: imr_chart([[1.0, 2.0]]), "x"),
        (lambda: imr_chart([3.0, 3.0, 3.0]), "x"),
        (lambda: imr_chart([1.0, 2.0], sigma=0.0), "sigma"),
        (lambda: imr_chart([1.0, 2.0], sigma=-1.0), "sigma"),
        (lambda: imr_chart([1.0, 2.0], mean=math.nan, sigma=1.0), "mean"),
        (lambda: xbar_r_chart([[1.0, 2.0], [1.0, 2.0, 3.0]]), "subgroups"),
        (lambda: xbar_r_chart([[1.0], [2.0]]), "subgroups"),
        (lambda: xbar_s_chart([1.0, 2.0, 3.0]), "subgroups"),
        (lambda: xbar_s_chart([[1.0, math.nan], [2.0, 3.0]]), "subgroups"),
        (lambda: xbar_s_chart([[2.0, 2.0], [3.0, 3.0]]), "subgroups"),
        (lambda: xbar_r_chart([[1.0, 2.0]], sigma=0.0), "sigma"),
        (lambda: ewma_chart([1.0, 2.0], target=0.0, sigma=1.0, lam=0.0), "lam"),
        (lambda: ewma_chart([1.0, 2.0], target=0.0, sigma=1.0, lam=1.5), "lam"),
        (lambda: ewma_chart([1.0, 2.0], target=0.0, sigma=1.0, L=0.0), "L"),
        (lambda: ewma_chart([1.0, 2.0], target=0.0, sigma=-2.0), "sigma"),
        (lambda: ewma_chart([], target=0.0, sigma=1.0), "x"),
        (lambda: cusum_chart([], target=0.0, sigma=1.0), "x"),
        (lambda: cusum_chart([1.0], target=0.0, sigma=0.0), "sigma"),
        (lambda: cusum_chart([1.0], target=0.0, sigma=1.0, h=0.0), "h"),
        (lambda: cusum_chart([1.0], target=0.0, sigma=1.0, k=-0.1), "k"),
        (lambda: cusum_chart([1.0], target=0.0, sigma=1.0, h=4.0, headstart=4.0), "headstart"),
        (lambda: cusum_chart([math.nan], target=0.0, sigma=1.0), "x"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field
    assert info.value.message
