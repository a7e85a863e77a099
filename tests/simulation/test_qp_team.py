"""QP availability: the Qualified Persons who certify batches are a shared resource with working
hours, not a fixed delay."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from nearfab.simulation import parse_scenario, simulate
from nearfab.simulation.errors import ScenarioInvalid
from nearfab.simulation.logic import queueing as q
from nearfab.simulation.logic.spec import (
    Dist,
    Product,
    QpTeam,
    Region,
    ScenarioSpec,
    Site,
)

H = 1 / 24
OFFICE = QpTeam(count=1, review=Dist("fixed", 1 * H), day_start_h=8, day_end_h=18)


@pytest.mark.parametrize(
    ("at", "wait"),
    [
        (7 * H, 1 * H),  # Monday 07:00: an hour before the QP arrives
        (12 * H, 0.0),  # Monday noon: on duty
        (19 * H, 13 * H),  # Monday 19:00: until Tuesday 08:00
        (4 + 19 * H, 2 + 13 * H),  # Friday 19:00: until Monday 08:00
        (5 + 12 * H, 1 + 20 * H),  # Saturday noon: until Monday 08:00
        (6 + 23 * H, 9 * H),  # Sunday 23:00: until Monday 08:00
    ],
)
def test_a_qp_is_on_duty_only_in_working_hours(at: float, wait: float) -> None:
    assert OFFICE.until_open(at) == pytest.approx(wait)


def spec(team: QpTeam | None, lam: float = 0.6, days: float = 3000) -> ScenarioSpec:
    product = Product("unit", target_lead_time_days=1e9)  # no machine time: only the QP
    return ScenarioSpec(
        name="qp",
        horizon_days=days,
        warmup_days=50,
        products=(product,),
        sites=(Site("site", slots=1),),
        regions=(Region("region", "site", rate_per_day=lam),),
        seed=77,
        qp_team=team,
    )


def test_one_qp_always_on_duty_is_an_md1_queue() -> None:
    """Certification of fixed length d with Poisson batches: Pollaczek-Khinchine."""
    always = QpTeam(
        count=1, review=Dist("fixed", 1.0), day_start_h=0, day_end_h=24, days_per_week=7
    )
    runs = [simulate(spec(always), r) for r in range(6)]
    simulated = statistics.mean(r.lead_time_mean for r in runs)
    theory = q.md1_sojourn(0.6, 1.0)
    assert theory == pytest.approx(1.75)
    assert simulated == pytest.approx(theory, rel=0.03)


def test_office_hours_add_waiting_and_a_second_qp_takes_some_away() -> None:
    slow = replace(OFFICE, review=Dist("fixed", 2 * H))
    one = statistics.mean(simulate(spec(slow, lam=4, days=400), r).lead_time_mean for r in range(3))
    two = statistics.mean(
        simulate(spec(replace(slow, count=2), lam=4, days=400), r).lead_time_mean for r in range(3)
    )
    # a batch finishing at a random time waits on average for the office to open: nights and
    # weekends are 1 - 50/168 of the week, so the mean wait is well over half a day
    assert one > 0.5
    assert two < one


def test_the_scenario_file_takes_a_qp_team_and_checks_it() -> None:
    base = {
        "name": "x",
        "horizon_days": 10,
        "products": [{"name": "p"}],
        "sites": [{"name": "s"}],
        "regions": [{"name": "r", "site": "s", "rate_per_day": 1}],
    }
    parsed = parse_scenario({**base, "qp_team": {"count": 2, "review": 0.05}}).to_spec()
    assert parsed.qp_team is not None and parsed.qp_team.count == 2
    with pytest.raises(ScenarioInvalid) as err:
        parse_scenario({**base, "qp_team": {"day_start_h": 18, "day_end_h": 8}})
    assert "qp_team" in err.value.message and "day_end_h" in err.value.message
