"""Capability indices: NIST §6.1.6 example (parsed from ../shared/data), Montgomery's interval
examples, one-sided specifications, within vs overall σ, bad input."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.capability import (
    capability,
    cp_interval,
    cpk_interval,
    indices,
    pooled_sigma,
)

NUMBER = r"-?\d+(?:\.\d+)?"


def _with_mean_and_sd(mean: float, sd: float, n: int, seed: int = 6) -> np.ndarray:
    """n values whose sample mean and sample sd are exactly `mean` and `sd`."""
    z = np.random.default_rng(seed).standard_normal(n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


@pytest.fixture(scope="module")
def nist_capability(shared_data: Path) -> dict[str, float]:
    text = (shared_data / "spc" / "nist_spc_examples.md").read_text(encoding="utf-8")
    section = re.search(r"^## 6\. .*?(?=^## \d+\. |\Z)", text, re.M | re.S)
    assert section, "§6.1.6 section not found"
    body = section.group(0)
    found: dict[str, float] = {}
    for name in ("USL", "LSL", "mean", "s"):
        match = re.search(rf"\b{name} = ({NUMBER})", body)
        assert match, name
        found[name] = float(match.group(1))
    for name in ("Cp", "Cpu", "Cpl", "Cpk"):
        match = re.search(rf"^- {name} = .*?\*\*({NUMBER})\*\*", body, re.M)
        assert match, name
        found[name] = float(match.group(1))
    match = re.search(rf"^- k = .* = ({NUMBER});", body, re.M)
    assert match, "k"
    found["k"] = float(match.group(1))
    return found


@pytest.mark.shared_data
def test_nist_example_indices(nist_capability: dict[str, float]) -> None:
    known = nist_capability
    result = indices(known["mean"], known["s"], lsl=known["LSL"], usl=known["USL"])
    assert result.cp == pytest.approx(known["Cp"], abs=5e-5)
    assert result.cpu == pytest.approx(known["Cpu"], abs=5e-5)
    assert result.cpl == pytest.approx(known["Cpl"], abs=5e-5)
    assert result.cpk == pytest.approx(known["Cpk"], abs=5e-5)
    assert result.k == pytest.approx(known["k"], abs=5e-5)
    assert result.cp is not None and result.k is not None
    assert result.cpk == pytest.approx(result.cp * (1 - result.k))  # Cpk = Cp (1 - k)


@pytest.mark.shared_data
def test_nist_example_from_data_gives_pp_and_ppk(nist_capability: dict[str, float]) -> None:
    known = nist_capability
    data = _with_mean_and_sd(known["mean"], known["s"], 200)
    report = capability(data, lsl=known["LSL"], usl=known["USL"])
    assert report.mean == pytest.approx(known["mean"])
    assert report.sigma_overall == pytest.approx(known["s"])
    assert report.pp == pytest.approx(known["Cp"], abs=5e-5)
    assert report.ppu == pytest.approx(known["Cpu"], abs=5e-5)
    assert report.ppl == pytest.approx(known["Cpl"], abs=5e-5)
    assert report.ppk == pytest.approx(known["Cpk"], abs=5e-5)


def test_cp_interval_montgomery_example() -> None:
    # Montgomery (Example 8.5): n = 20, Ĉp = 2.29 -> 1.57 ≤ Cp ≤ 3.01 at 95 %.
    interval = cp_interval(2.29, dof=19, confidence=0.95)
    assert interval.lower == pytest.approx(1.57, abs=0.01)
    assert interval.upper == pytest.approx(3.01, abs=0.01)
    assert interval.confidence == 0.95
    # The same interval from the chi-square quantiles written out.
    assert interval.lower == pytest.approx(2.29 * math.sqrt(stats.chi2.ppf(0.025, 19) / 19))


def test_cpk_interval_bissell_montgomery_example() -> None:
    # Montgomery (Example 8.6): n = 20, Ĉpk = 1.33 -> 0.88 ≤ Cpk ≤ 1.78 at 95 %.
    interval = cpk_interval(1.33, n=20, confidence=0.95)
    assert interval.lower == pytest.approx(0.88, abs=0.01)
    assert interval.upper == pytest.approx(1.78, abs=0.01)
    # Ĉpk ± z sqrt(1/(9n) + Ĉpk²/(2(n-1))), written out.
    half = 1.959964 * math.sqrt(1 / 180 + 1.33**2 / 38)
    assert interval.upper - 1.33 == pytest.approx(half, rel=1e-6)
    # Wider at 99 %, narrower with more data.
    assert cpk_interval(1.33, 20, 0.99).lower < interval.lower
    assert cpk_interval(1.33, 200).upper - cpk_interval(1.33, 200).lower < half * 2


def test_report_intervals_use_the_report_numbers() -> None:
    data = _with_mean_and_sd(10.0, 0.5, 60)
    report = capability(data, lsl=8.0, usl=13.0, confidence=0.9)
    assert report.n == 60 and report.within_method == "moving_range"
    assert report.pp_interval == cp_interval(report.pp or 0.0, 59, 0.9)
    assert report.ppk_interval == cpk_interval(report.ppk, 60, 0.9)
    assert report.cp_interval == cp_interval(report.cp or 0.0, 59, 0.9)
    assert report.cpk_interval == cpk_interval(report.cpk, 60, 0.9)
    assert report.cpk_interval.lower < report.cpk < report.cpk_interval.upper
    # Mean 10, LSL 8 closer than USL 13: Ppk = Ppl = (10 - 8) / (3 × 0.5).
    assert report.ppk == pytest.approx(4 / 3) and report.ppl == report.ppk


def test_within_sigma_from_the_moving_range() -> None:
    x = [10.0, 12.0, 10.0, 12.0, 10.0]  # MR̄ = 2 -> σ_within = 2 / 1.128
    report = capability(x, lsl=0.0, usl=22.0)
    assert report.sigma_within == pytest.approx(2 / 1.128)
    assert report.sigma_overall == pytest.approx(np.std(x, ddof=1))
    assert report.cp == pytest.approx(22 / (6 * 2 / 1.128))


def test_within_sigma_pooled_from_subgroups() -> None:
    # Subgroup variances 1 and 4 with 2 df each: pooled sd sqrt(2.5); c4(5) = 0.9400.
    groups = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]
    assert pooled_sigma(groups, unbiased=False) == (pytest.approx(math.sqrt(2.5)), 4)
    sigma, dof = pooled_sigma(groups)
    assert dof == 4 and sigma == pytest.approx(math.sqrt(2.5) / 0.9400, abs=1e-4)
    report = capability(groups, lsl=-10.0, usl=20.0)
    assert report.within_method == "pooled_sd_unbiased" and report.n == 6
    assert report.sigma_within == pytest.approx(sigma)
    assert report.cp_interval == cp_interval(report.cp or 0.0, 4)
    plain = capability(groups, lsl=-10.0, usl=20.0, unbiased=False)
    assert plain.sigma_within == pytest.approx(math.sqrt(2.5))


def test_one_sided_specifications() -> None:
    data = _with_mean_and_sd(5.0, 1.0, 50)
    upper_only = capability(data, usl=8.0)
    assert upper_only.cp is None and upper_only.pp is None and upper_only.cpl is None
    assert upper_only.cp_interval is None and upper_only.pp_interval is None
    assert upper_only.ppk == pytest.approx(1.0) and upper_only.ppu == upper_only.ppk
    lower_only = indices(5.0, 1.0, lsl=2.0)
    assert (lower_only.cp, lower_only.cpu, lower_only.k) == (None, None, None)
    assert lower_only.cpk == pytest.approx(1.0)
    # A mean outside the specification gives a negative Cpk.
    assert indices(9.0, 1.0, lsl=2.0, usl=8.0).cpk == pytest.approx(-1 / 3)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: capability([1.0, 2.0, 3.0]), "usl"),
        (lambda: capability([1.0, 2.0, 3.0], lsl=5.0, usl=5.0), "lsl"),
        (lambda: capability([1.0, 2.0, 3.0], lsl=6.0, usl=5.0), "lsl"),
        (lambda: capability([], usl=5.0), "data"),
        (lambda: capability([1.0], usl=5.0), "data"),
        (lambda: capability([1.0, math.nan, 2.0], usl=5.0), "data"),
        (lambda: capability([3.0, 3.0, 3.0], usl=5.0), "data"),
        (lambda: capability([[1.0, 2.0], [1.0, 2.0, 3.0]], usl=5.0), "data"),
        (lambda: capability([1.0, 2.0, 3.0], usl=5.0, confidence=1.0), "confidence"),
        (lambda: capability([1.0, 2.0, 3.0], usl=math.inf), "usl"),
        (lambda: indices(1.0, 0.0, usl=5.0), "sigma"),
        (lambda: indices(1.0, -1.0, usl=5.0), "sigma"),
        (lambda: indices(math.nan, 1.0, usl=5.0), "mean"),
        (lambda: cp_interval(0.0, 10), "cp"),
        (lambda: cp_interval(1.0, 0), "dof"),
        (lambda: cpk_interval(1.0, 1), "n"),
        (lambda: cpk_interval(math.nan, 10), "cpk"),
        (lambda: pooled_sigma([[1.0], [2.0]]), "subgroups"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        call()  # type: ignore[operator]
    assert info.value.field == field
