"""Run rules for a Shewhart chart: Western Electric rules 1-4 and Nelson rules 1-8.

References: Western Electric *Statistical Quality Control Handbook* (1956), as listed in the
NIST/SEMATECH e-Handbook §6.3.2 (pmc32); L. S. Nelson, "The Shewhart control chart — tests for
special causes", J. Qual. Technol. 16 (1984) 237-239; Montgomery §5.3.6.

Zones, in σ from the centre line: C is |z| ≤ 1, B is 1 < |z| ≤ 2, A is 2 < |z| ≤ 3, and a point
with |z| > 3 is beyond the limits. A point exactly on the centre line is on neither side, and two
equal consecutive values are neither increasing nor decreasing, so both break a run.

A rule is reported at every point that completes it, so a run of 10 points on one side fires
WE rule 4 at its 8th, 9th and 10th point. Rules that look back m points also fire in the first
m - 1 points when enough of them qualify (2 of the first 2 beyond 2σ fires WE rule 2), as in
the zero-state average run length computations of Champ & Woodall (1987).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.spc import FloatArray, as_series, require_finite, require_positive

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]


class RuleSet(StrEnum):
    """Which family of run rules to apply."""

    WESTERN_ELECTRIC = "western_electric"
    NELSON = "nelson"


@dataclass(frozen=True, slots=True)
class Violation:
    """One rule firing: the rule, where it completes, and the points that form it."""

    ruleset: RuleSet
    rule: int
    description: str
    index: int
    points: tuple[int, ...]


RULES: Final[Mapping[RuleSet, Mapping[int, str]]] = MappingProxyType(
    {
        RuleSet.WESTERN_ELECTRIC: MappingProxyType(
            {
                1: "1 point beyond 3 sigma",
                2: "2 of 3 consecutive points beyond 2 sigma on the same side",
                3: "4 of 5 consecutive points beyond 1 sigma on the same side",
                4: "8 consecutive points on one side of the centre line",
            }
        ),
        RuleSet.NELSON: MappingProxyType(
            {
                1: "1 point beyond 3 sigma",
                2: "9 points in a row on one side of the centre line",
                3: "6 points in a row steadily increasing or decreasing",
                4: "14 points in a row alternating up and down",
                5: "2 of 3 points in a row beyond 2 sigma on the same side",
                6: "4 of 5 points in a row beyond 1 sigma on the same side",
                7: "15 points in a row within 1 sigma of the centre line",
                8: "8 points in a row beyond 1 sigma, on either side",
            }
        ),
    }
)

Hits = list[tuple[int, tuple[int, ...]]]


def _windows_all(mask: BoolArray, m: int) -> IntArray:
    """Indexes i where mask[i-m+1..i] are all true."""
    if mask.size < m:
        return np.empty(0, dtype=np.intp)
    counts = np.convolve(mask.astype(np.int64), np.ones(m, dtype=np.int64), mode="valid")
    return np.flatnonzero(counts == m) + (m - 1)


def _run(mask: BoolArray, m: int) -> Hits:
    return [(int(i), tuple(range(int(i) - m + 1, int(i) + 1))) for i in _windows_all(mask, m)]


def _beyond(z: FloatArray, limit: float) -> Hits:
    return [(int(i), (int(i),)) for i in np.flatnonzero(np.abs(z) > limit)]


def _k_of_m(z: FloatArray, k: int, m: int, limit: float) -> Hits:
    """Point i beyond `limit` on one side with at least k of the last m (those available) too."""
    hits: Hits = []
    for side in (1.0, -1.0):
        mask = side * z > limit
        cumulative = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
        ends = np.arange(1, z.size + 1)
        counts = cumulative[ends] - cumulative[np.maximum(ends - m, 0)]
        for i in np.flatnonzero(mask & (counts >= k)):
            start = max(0, int(i) - m + 1)
            points = tuple(start + int(j) for j in np.flatnonzero(mask[start : int(i) + 1]))
            hits.append((int(i), points))
    return hits


def _same_side(z: FloatArray, m: int) -> Hits:
    return _run(z > 0, m) + _run(z < 0, m)


def _trend(z: FloatArray, m: int) -> Hits:
    # m points steadily moving = m - 1 consecutive differences of one sign; diff j ends at j + 1.
    steps = np.diff(z)
    hits: Hits = []
    for mask in (steps > 0, steps < 0):
        for i in _windows_all(mask, m - 1):
            end = int(i) + 1
            hits.append((end, tuple(range(end - m + 1, end + 1))))
    return hits


def _alternating(z: FloatArray, m: int) -> Hits:
    # m points alternating = m - 2 consecutive sign changes between successive differences.
    steps = np.diff(z)
    flips = steps[:-1] * steps[1:] < 0
    hits: Hits = []
    for i in _windows_all(flips, m - 2):
        end = int(i) + 2
        hits.append((end, tuple(range(end - m + 1, end + 1))))
    return hits


_Check = Callable[[FloatArray], Hits]

_CHECKS: Final[Mapping[RuleSet, Mapping[int, _Check]]] = {
    RuleSet.WESTERN_ELECTRIC: {
        1: lambda z: _beyond(z, 3.0),
        2: lambda z: _k_of_m(z, 2, 3, 2.0),
        3: lambda z: _k_of_m(z, 4, 5, 1.0),
        4: lambda z: _same_side(z, 8),
    },
    RuleSet.NELSON: {
        1: lambda z: _beyond(z, 3.0),
        2: lambda z: _same_side(z, 9),
        3: lambda z: _trend(z, 6),
        4: lambda z: _alternating(z, 14),
        5: lambda z: _k_of_m(z, 2, 3, 2.0),
        6: lambda z: _k_of_m(z, 4, 5, 1.0),
        7: lambda z: _run(np.abs(z) <= 1.0, 15),
        8: lambda z: _run(np.abs(z) > 1.0, 8),
    },
}


def _ruleset(value: RuleSet | str) -> RuleSet:
    try:
        return RuleSet(value)
    except ValueError as exc:
        known = ", ".join(r.value for r in RuleSet)
        raise ValidationFailed(
            f"unknown rule set {value!r}; use one of {known}", field="ruleset"
        ) from exc


def check_rules(
    x: npt.ArrayLike,
    *,
    center: float,
    sigma: float,
    ruleset: RuleSet | str = RuleSet.WESTERN_ELECTRIC,
    rules: Iterable[int] | None = None,
) -> tuple[Violation, ...]:
    """Every violation of the chosen rules in series `x` (centre line `center`, process σ
    `sigma`; pass σ/√n for a chart of subgroup means), ordered by completing index, then rule.

    `rules` restricts the check to some rule numbers of the rule set (default: all of them).
    """
    chosen = _ruleset(ruleset)
    series = as_series(x, "x")
    centre = require_finite(center, "center")
    spread = require_positive(sigma, "sigma")
    checks = _CHECKS[chosen]
    numbers = sorted(checks) if rules is None else sorted(set(rules))
    for number in numbers:
        if number not in checks:
            raise ValidationFailed(
                f"{chosen.value} has no rule {number!r}; rules are {sorted(checks)}", field="rules"
            )
    z = (series - centre) / spread
    descriptions = RULES[chosen]
    found = [
        Violation(chosen, number, descriptions[number], index, points)
        for number in numbers
        for index, points in checks[number](z)
    ]
    found.sort(key=lambda v: (v.index, v.rule))
    return tuple(found)


def first_violation(
    x: npt.ArrayLike,
    *,
    center: float,
    sigma: float,
    ruleset: RuleSet | str = RuleSet.WESTERN_ELECTRIC,
    rules: Iterable[int] | None = None,
) -> int | None:
    """Index of the first point at which any chosen rule fires (the run length - 1), or None."""
    found = check_rules(x, center=center, sigma=sigma, ruleset=ruleset, rules=rules)
    return found[0].index if found else None


__all__ = ["RULES", "RuleSet", "Violation", "check_rules", "first_violation"]
