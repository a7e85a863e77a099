"""Western Electric and Nelson run rules: each rule fires on a series built to fire it, and does
not fire one point short; an in-control series fires nothing; in-control ARL (NIST §6.3.2)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from nearfab.common.errors import ValidationFailed
from nearfab.monitoring.logic.rules import RULES, RuleSet, check_rules, first_violation

WE = RuleSet.WESTERN_ELECTRIC
NELSON = RuleSet.NELSON

# z-scores (centre 0, σ 1) that break every rule of both sets: the longest run on one side is 3,
# never 5 steps in one direction, alternation broken every few points, a point beyond 1σ at
# least every 5 points but never two in a row, and nothing beyond 2σ.
IN_CONTROL = [
    0.2, -0.5, 1.4, 0.3, -0.8, -0.1, 0.6, -1.2, 0.9, 0.4,
    -0.3, 1.6, -0.7, 0.0, 0.5, -1.1, 0.8, 0.2, -0.4, 0.3,
]  # fmt: skip


def _fired(x: list[float], ruleset: RuleSet, rule: int) -> list[int]:
    """Indexes where `rule` completes in x (centre 0, σ 1)."""
    return [v.index for v in check_rules(x, center=0.0, sigma=1.0, ruleset=ruleset, rules=[rule])]


# (rule set, rule, series that fires it at its last point, series one step short of it)
CASES = [
    (WE, 1, [0.0, 0.0, 3.5], [0.0, 0.0, 3.0]),
    (WE, 1, [0.0, -3.01], [0.0, -2.99]),
    (WE, 2, [0.0, 2.5, 0.0, 2.5], [2.5, 0.0, 0.0, 2.5]),
    (WE, 2, [-2.1, 0.0, -2.1], [-2.1, 0.0, 2.1]),  # other side does not count
    (WE, 3, [1.5, 1.5, 0.0, 1.5, 1.5], [1.5, 0.0, 1.5, 0.0, 1.5, 1.5]),
    (WE, 3, [-1.5, -1.2, -2.5, 0.5, -1.1], [-1.5, -1.2, 2.5, 0.5, -1.1]),
    (WE, 4, [0.0] + [0.3] * 8, [0.0] + [0.3] * 7),
    (WE, 4, [-0.2] * 8, [-0.2] * 3 + [0.0] + [-0.2] * 4),  # a point on the centre line breaks
    (NELSON, 1, [0.0, 3.2], [0.0, 3.0]),
    (NELSON, 2, [0.4] * 9, [0.4] * 8),
    (NELSON, 2, [-0.4] * 9, [-0.4] * 4 + [0.1] + [-0.4] * 4),
    (NELSON, 3, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]),
    (NELSON, 3, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0], [0.5, 0.4, 0.3, 0.3, 0.1, 0.0]),  # tie breaks
    (NELSON, 4, [0.5, -0.5] * 7, [0.5, -0.5] * 6 + [0.5]),
    (NELSON, 4, [0.5, -0.5] * 7, [0.5, -0.5] * 3 + [-0.6] + [0.5, -0.5] * 3 + [0.4]),
    (NELSON, 5, [2.5, 2.5], [2.5, 1.5, 0.0, 2.5]),
    (NELSON, 6, [0.0, -1.5, -1.5, -1.5, -1.5], [-1.5, -1.5, -1.5, 0.5, 0.0, -1.5]),
    (
        NELSON,
        7,
        [0.5, -0.5, 0.9, -0.2, 0.1] * 3,
        [0.5, -0.5, 0.9, -0.2, 0.1] + [1.2] + [0.5, -0.5, 0.9, -0.2, 0.1] * 2,
    ),
    (NELSON, 8, [1.5, -1.5] * 4, [1.5, -1.5] * 3 + [1.5]),
    (NELSON, 8, [1.5] * 4 + [-1.2] * 4, [1.5] * 4 + [0.5] + [-1.2] * 3),
]


@pytest.mark.parametrize(("ruleset", "rule", "fires", "short"), CASES)
def test_rule_fires_at_the_completing_point_and_not_one_short(
    ruleset: RuleSet, rule: int, fires: list[float], short: list[float]
) -> None:
    assert _fired(fires, ruleset, rule) == [len(fires) - 1]
    assert _fired(short, ruleset, rule) == []


def test_nelson_seven_needs_fifteen_within_one_sigma() -> None:
    within = [0.5, -0.5, 0.9, -0.2, 0.1] * 3
    assert _fired(within[:14], NELSON, 7) == []
    assert _fired([*within, 1.2], NELSON, 7) == [14]  # the 16th point, beyond 1σ, does not fire
    assert _fired([*within[:14], 1.0], NELSON, 7) == [14]  # exactly 1σ is still zone C


def test_we_four_is_eight_in_a_row_nelson_two_is_nine() -> None:
    # WE rule 4 is 8 on one side; Nelson (1984) test 2 is 9. 7 fire neither.
    assert _fired([0.3] * 7, WE, 4) == [] and _fired([0.3] * 7, NELSON, 2) == []
    assert _fired([0.3] * 8, WE, 4) == [7] and _fired([0.3] * 8, NELSON, 2) == []
    assert _fired([0.3] * 9, NELSON, 2) == [8]


def test_an_in_control_series_fires_no_rule() -> None:
    assert check_rules(IN_CONTROL, center=0.0, sigma=1.0, ruleset=WE) == ()
    assert check_rules(IN_CONTROL, center=0.0, sigma=1.0, ruleset=NELSON) == ()
    # The same series on another scale: centre 100, σ 5.
    scaled = [100.0 + 5.0 * z for z in IN_CONTROL]
    assert check_rules(scaled, center=100.0, sigma=5.0, ruleset=NELSON) == ()
    assert first_violation(scaled, center=100.0, sigma=5.0) is None


def test_a_violation_names_the_rule_and_the_points_that_form_it() -> None:
    x = [0.0, 2.5, 0.3, 2.2, 0.0]
    (found,) = check_rules(x, center=0.0, sigma=1.0)
    assert (found.ruleset, found.rule, found.index, found.points) == (WE, 2, 3, (1, 3))
    assert found.description == RULES[WE][2] and "2 of 3" in found.description
    run = check_rules([0.0] + [1.5, -1.5] * 4, center=0.0, sigma=1.0, ruleset=NELSON, rules=[8])
    assert [(v.index, v.points) for v in run] == [(8, tuple(range(1, 9)))]


def test_longer_runs_fire_at_every_completing_point_in_order() -> None:
    x = [0.3] * 10 + [3.5]
    found = check_rules(x, center=0.0, sigma=1.0)
    assert [(v.index, v.rule) for v in found] == [(7, 4), (8, 4), (9, 4), (10, 1), (10, 4)]
    assert found[-1].points == tuple(range(3, 11))
    assert first_violation(x, center=0.0, sigma=1.0) == 7
    assert first_violation(x, center=0.0, sigma=1.0, rules=[1]) == 10


def test_subgroup_means_use_the_sigma_given() -> None:
    # σ = 2, n = 4: σ_x̄ = 1; a mean 3.5 above the centre is beyond 3σ_x̄ but not 3σ.
    means = [10.0, 13.5]
    assert first_violation(means, center=10.0, sigma=2.0) is None
    assert first_violation(means, center=10.0, sigma=2.0 / math.sqrt(4)) == 1


def test_every_rule_number_is_described() -> None:
    assert sorted(RULES[WE]) == [1, 2, 3, 4]
    assert sorted(RULES[NELSON]) == list(range(1, 9))
    assert all(text for rules in RULES.values() for text in rules.values())
    assert RuleSet("nelson") is NELSON
    assert check_rules([0.0, 4.0], center=0.0, sigma=1.0, ruleset="nelson")[0].ruleset is NELSON


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"x": []}, "x"),
        ({"x": [0.0, math.nan]}, "x"),
        ({"x": [0.0, math.inf]}, "x"),
        ({"x": [[0.0, 1.0]]}, "x"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": math.nan}, "sigma"),
        ({"center": math.inf}, "center"),
        ({"ruleset": "shewhart"}, "ruleset"),
        ({"rules": [5]}, "rules"),  # WE has rules 1-4 only
        ({"rules": [0]}, "rules"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    call: dict[str, object] = {"x": [0.0, 1.0], "center": 0.0, "sigma": 1.0, **kwargs}
    with pytest.raises(ValidationFailed) as info:
        check_rules(**call)  # type: ignore[arg-type]
    assert info.value.field == field


# --- average run length (NIST §6.3.2, Champ & Woodall 1987) -------------------------------------


def _zero_state_run_lengths(ruleset: RuleSet, runs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = np.empty(runs)
    for r in range(runs):
        x = rng.standard_normal(600)
        first = first_violation(x, center=0.0, sigma=1.0, ruleset=ruleset)
        while first is None:  # very rare: extend the same run
            x = np.concatenate([x, rng.standard_normal(600)])
            first = first_violation(x, center=0.0, sigma=1.0, ruleset=ruleset)
        lengths[r] = first + 1
    return lengths


@pytest.mark.shared_data
def test_in_control_arl_of_the_four_we_rules(shared_data: Path) -> None:
    text = (shared_data / "spc" / "nist_spc_examples.md").read_text(encoding="utf-8")
    match = re.search(r"falls to \*\*(\d+(?:\.\d+)?)\*\* when all four rules are used", text)
    assert match, "ARL of the four WE rules not found"
    published = float(match.group(1))
    lengths = _zero_state_run_lengths(WE, runs=4000, seed=1987)
    standard_error = lengths.std(ddof=1) / math.sqrt(lengths.size)
    # About 1.4 here; allow 4 standard errors.
    assert abs(lengths.mean() - published) < 4 * standard_error, (lengths.mean(), standard_error)
