"""The engine against queueing theory (known answers from Erlang, Little, Kleinrock)."""

from __future__ import annotations

import math

import pytest

from nearfab.simulation import validate
from nearfab.simulation.logic import queueing as q


def test_closed_forms_match_textbook_values() -> None:
    # Erlang B(3, 2) = (2^3/3!) / (1 + 2 + 2 + 8/6) = 4/19
    assert q.erlang_b(3, 2.0) == pytest.approx(4 / 19)
    # Erlang C(2, 1): P(wait) = 1/3 for two servers at offered load 1
    assert q.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert q.mm1_sojourn(0.5, 1.0) == pytest.approx(2.0)
    assert q.md1_sojourn(0.5, 1.0) == pytest.approx(1.5)  # D + rho D / (2 (1 - rho))
    # M/M/1 is M/M/c with c = 1
    assert q.mmc_sojourn(0.7, 1.0, 1) == pytest.approx(q.mm1_sojourn(0.7, 1.0))
    with pytest.raises(ValueError, match="unstable"):
        q.mm1_sojourn(1.0, 1.0)


def test_simulation_agrees_with_theory_within_3_percent_and_inside_99_ci() -> None:
    checks = validate("local")
    names = {c.name for c in checks}
    assert len(checks) == 7 and any("Erlang B" in n for n in names)
    for c in checks:
        assert c.replications >= 20
        assert c.relative_error <= 0.03, c.as_dict()
        assert c.ci_low <= c.theory <= c.ci_high, c.as_dict()
        assert c.passed
    by_name = {c.name: c for c in checks}
    little = by_name["Little's law L = lambda W (M/M/1)"]
    # Little's law holds sample-path-wise: L and lambda W agree within each replication
    assert little.extra["max_rel_gap_l_vs_lambda_w"] < 0.01
    transit = by_name["Orders in transit (M/G/inf, Poisson)"]
    assert math.isclose(transit.extra["dispersion_index"], 1.0, rel_tol=0.05)  # Poisson
