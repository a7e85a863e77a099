"""Shifts: a machine starts work only on shift and pauses (or, if told, finishes) at its end;
time is SimPy's, durations are never stretched."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pytest

from nearfab.simulation import ScenarioInvalid, parse_scenario, simulate
from nearfab.simulation.logic.engine import simulate_traced
from nearfab.simulation.logic.spec import Dist, Product, Region, ScenarioSpec, Site

H = 1 / 24
EPS = 1e-9
DAY_SHIFT = Site("pharmacy", slots=1, hours_per_day=8, shift_start_h=8)  # 08:00-16:00 daily
WEEKDAYS = replace(DAY_SHIFT, days_per_week=5)  # Monday to Friday
NIGHTS = replace(DAY_SHIFT, shift_start_h=20, hours_per_day=12)  # 20:00-08:00


@pytest.mark.parametrize(
    ("site", "at", "wait"),
    [
        (DAY_SHIFT, 7 * H, 1 * H),  # Monday 07:00: an hour to go
        (DAY_SHIFT, 12 * H, 0.0),  # on shift
        (DAY_SHIFT, 16 * H, 16 * H),  # the shift has just ended: tomorrow 08:00
        (DAY_SHIFT, 5 + 12 * H, 0.0),  # Saturday noon, a 7-day site
        (WEEKDAYS, 4 + 17 * H, 2 + 15 * H),  # Friday 17:00: Monday 08:00
        (WEEKDAYS, 5 + 12 * H, 1 + 20 * H),  # Saturday noon: Monday 08:00
        (NIGHTS, 2 * H, 0.0),  # 02:00, in the night shift that began at 20:00
        (NIGHTS, 12 * H, 8 * H),  # noon: 20:00
    ],
)
def test_until_open_follows_the_shift_calendar(site: Site, at: float, wait: float) -> None:
    assert site.until_open(at) == pytest.approx(wait, abs=EPS)


def test_shift_windows_and_offered_time() -> None:
    assert DAY_SHIFT.window(12 * H) == pytest.approx((8 * H, 16 * H))
    assert NIGHTS.window(2 * H) == pytest.approx((-4 * H, 8 * H))
    assert DAY_SHIFT.open_time(0, 7) == pytest.approx(7 * 8 * H)
    assert WEEKDAYS.open_time(0, 14) == pytest.approx(10 * 8 * H)
    assert NIGHTS.open_time(0, 1) == pytest.approx(8 * H + 4 * H)  # tail of day -1's, then 20-24
    round_the_clock_weekdays = replace(WEEKDAYS, hours_per_day=24, shift_start_h=0)
    assert round_the_clock_weekdays.window(1.5) == pytest.approx((1.0, 5.0))  # touching: merged
    assert Site("s").always_open and Site("s").until_open(3.3) == 0.0


def spec(
    site: Site,
    *,
    cycle: Dist,
    rate: float = 0.0,
    schedule: tuple[float, ...] = (),
    days: float = 400.0,
    seed: int = 5,
) -> ScenarioSpec:
    return ScenarioSpec(
        name="shifts",
        horizon_days=days,
        products=(Product("p", target_lead_time_days=1e9, cycle=cycle),),
        sites=(site,),
        regions=(Region("r", site.name, rate_per_day=rate, schedule=schedule),),
        seed=seed,
    )


def on_shift(site: Site, t: float) -> tuple[float, float]:
    """The shift window holding `t` (asserting there is one)."""
    start, end = site.window(t)
    assert start <= t + EPS < end, f"t={t} ({(t % 1) * 24:.3f} h) is outside every shift"
    return start, end


@pytest.mark.parametrize("site", [DAY_SHIFT, WEEKDAYS, NIGHTS])
def test_an_eight_hour_shift_machine_works_only_on_shift(site: Site) -> None:
    work_spec = spec(site, cycle=Dist("exponential", 0.05), rate=2.0)
    result, work = simulate_traced(work_spec, 0)
    assert result.delivered > 500
    split = 0
    for _, start, end, _, _ in work:
        _, shift_end = on_shift(site, start)
        assert end <= shift_end + EPS  # paused at the shift's end, never beyond
        split += math.isclose(end, shift_end, abs_tol=EPS)
    assert split > 10  # batches running at the end of a shift were paused and resumed
    # utilisation is working time over shift time; the trace lacks only a stretch still running
    # at the horizon (at most one shift)
    busy = sum(end - start for _, start, end, _, _ in work)
    counted = result.utilisation["pharmacy"] * site.open_time(0, work_spec.horizon_days)
    assert busy - EPS <= counted <= busy + site.hours_per_day / 24


def test_finish_policy_starts_only_on_shift_and_runs_on() -> None:
    site = replace(DAY_SHIFT, shift_end="finish")
    _, work = simulate_traced(spec(site, cycle=Dist("exponential", 0.05), rate=2.0), 0)
    beyond = 0
    for _, start, end, _, _ in work:
        _, shift_end = on_shift(site, start)
        beyond += end > shift_end + EPS
    assert beyond > 10  # some batches ran past 16:00, unattended


@pytest.mark.parametrize(
    ("site", "arrival", "done"),
    [
        (DAY_SHIFT, 2.4 * H, 10 * H),  # 02:24: waits for 08:00, 2 h of work
        (DAY_SHIFT, 9 * H, 11 * H),  # on shift: straight through
        (DAY_SHIFT, 15 * H, 1 + 9 * H),  # 1 h before 16:00, 1 h the next morning
        (replace(DAY_SHIFT, shift_end="finish"), 15 * H, 17 * H),  # runs on unattended
        (replace(DAY_SHIFT, shift_end="finish"), 16.5 * H, 1 + 10 * H),  # too late to start
        (WEEKDAYS, 4 + 15 * H, 7 + 9 * H),  # Friday 15:00: Monday 09:00
        (WEEKDAYS, 5 + 10 * H, 7 + 10 * H),  # Saturday 10:00: Monday 08:00-10:00
    ],
)
def test_one_batch_is_timed_by_the_shift(site: Site, arrival: float, done: float) -> None:
    r = simulate(spec(site, cycle=Dist("fixed", 2 * H), schedule=(arrival,), days=14), 0)
    assert r.delivered == 1
    assert r.lead_time_mean == pytest.approx(done - arrival, abs=EPS)


def test_light_traffic_lead_time_is_the_wait_for_the_shift_plus_the_work() -> None:
    """Poisson orders, a very short job: an order arriving off shift (16 of 24 h) waits on
    average 8 h for 08:00, so the mean lead time is 16/24 x 8/24 = 2/9 day plus the job. The old
    stretched duration (3 x the job) would give a few seconds."""
    job = 1e-4  # days (8.6 s)
    r = simulate(spec(DAY_SHIFT, cycle=Dist("fixed", job), rate=2.0, days=50_000), 0)
    assert r.delivered > 95_000
    theory = (16 / 24) * (8 / 24) + job
    assert r.lead_time_mean == pytest.approx(theory, rel=0.015)
    always = simulate(spec(Site("pharmacy"), cycle=Dist("fixed", job), rate=2.0, days=2000), 0)
    assert always.lead_time_mean == pytest.approx(job, rel=0.01)


def test_work_is_conserved_and_utilisation_is_of_the_shift_time() -> None:
    """lambda x E[S] of machine time a day whatever the shifts: 2 x 0.1 = 0.2 day a day, which is
    60 % of an 8-hour shift and 20 % of round-the-clock time; longer queues with the shift."""
    cycle = Dist("exponential", 0.1)
    runs = [simulate(spec(DAY_SHIFT, cycle=cycle, rate=2.0, days=3000), r) for r in range(3)]
    used = statistics.mean(r.utilisation["pharmacy"] for r in runs)
    assert used == pytest.approx(2 * 0.1 / (8 / 24), rel=0.03)
    always = [
        simulate(spec(Site("pharmacy"), cycle=cycle, rate=2.0, days=3000), r) for r in range(3)
    ]
    assert statistics.mean(r.utilisation["pharmacy"] for r in always) == pytest.approx(
        0.2, rel=0.03
    )
    assert (
        statistics.mean(r.lead_time_mean for r in runs)
        > statistics.mean(r.lead_time_mean for r in always) + 2 / 9 * 0.9
    )


def test_breakdowns_on_a_shift_site_keep_work_on_shift() -> None:
    site = replace(DAY_SHIFT, mtbf_days=5.0, mttr=Dist("fixed", 0.2))
    result, work = simulate_traced(spec(site, cycle=Dist("exponential", 0.05), rate=2.0), 0)
    assert result.waste["scrapped_in_process"] > 0 and result.delivered > 500
    for _, start, end, _, _ in work:
        _, shift_end = on_shift(site, start)
        assert end <= shift_end + EPS
    assert 0 < result.utilisation["pharmacy"] < 1


def test_the_scenario_file_takes_shifts_and_checks_them() -> None:
    base = {
        "name": "x",
        "horizon_days": 10,
        "products": [{"name": "p"}],
        "regions": [{"name": "r", "site": "s", "rate_per_day": 1}],
    }
    site = {"name": "s", "hours_per_day": 10, "shift_start_h": 7, "days_per_week": 6}
    parsed = parse_scenario({**base, "sites": [{**site, "shift_end": "finish"}]}).to_spec()
    s = parsed.sites[0]
    assert (s.hours_per_day, s.shift_start_h, s.days_per_week, s.shift_end) == (10, 7, 6, "finish")
    assert parse_scenario({**base, "sites": [site]}).to_spec().sites[0].shift_end == "pause"
    for bad, field in (
        ({"shift_end": "stretch"}, "sites.0.shift_end"),
        ({"days_per_week": 0}, "sites.0.days_per_week"),
        ({"shift_start_h": 24}, "sites.0.shift_start_h"),
    ):
        with pytest.raises(ScenarioInvalid) as err:
            parse_scenario({**base, "sites": [{**site, **bad}]})
        assert err.value.field == field
