"""Planning logic on small instances whose optimum is known by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from nearfab.scheduling.logic import (
    Exclusion,
    Instance,
    Option,
    PlanJob,
    PlanMachine,
    allowed_starts,
    diff_plans,
    edd,
    evaluate,
    explain,
    intersect,
    lower_bound,
    rebuild,
    solve,
    subtract,
)

H = 24 * 60
M1, M2 = PlanMachine("m1", "alpha", "s1"), PlanMachine("m2", "beta", "s2")


def opt(
    machine: str = "m1",
    *,
    release: int = 0,
    occupy: int = 10,
    transport: int = 0,
    windows: list[tuple[int, int]] | None = None,
    latest_end: int | None = None,
    processing: int | None = None,
) -> Option:
    starts = allowed_starts(
        windows or [(0, H)],
        release=release,
        occupy=occupy,
        processing=processing if processing is not None else occupy,
        latest_end=latest_end,
    )
    return Option(machine, starts, transport)


def job(
    id_: str,
    p: int = 10,
    *,
    due: int = H,
    weight: int = 10,
    product: str = "A",
    options: tuple[Option, ...] | None = None,
    **kw: object,
) -> PlanJob:
    return PlanJob(
        id=id_,
        product=product,
        processing=p,
        due=due,
        weight=weight,
        options=options if options is not None else (opt(occupy=p),),
        **kw,  # type: ignore[arg-type]
    )


def inst(*jobs: PlanJob, machines: tuple[PlanMachine, ...] = (M1,), **kw: object) -> Instance:
    return Instance(jobs=jobs, machines=machines, horizon=H, **kw)  # type: ignore[arg-type]


# --- calendars ----------------------------------------------------------------------------------


def test_calendar_helpers() -> None:
    assert subtract([(0, 100)], [(20, 30), (50, 60)]) == [(0, 20), (30, 50), (60, 100)]
    assert intersect([(0, 50), (60, 100)], [(40, 70)]) == [(40, 50), (60, 70)]
    # the job (10 min) must fit wholly in a window, after release, and end before the lot expires
    assert allowed_starts([(0, 30), (40, 100)], release=5, occupy=10, processing=10) == (
        (5, 20),
        (40, 90),
    )
    assert allowed_starts([(0, 100)], release=0, occupy=10, processing=10, latest_end=50) == (
        (0, 40),
    )
    assert allowed_starts([(0, 100)], release=95, occupy=10, processing=10) == ()


# --- solver: known optima ------------------------------------------------------------------------


def test_weighted_tardiness_beats_edd_on_two_jobs() -> None:
    """EDD makes the long job first (due 10): the urgent short one is 1 min late (cost 50).
    The optimum makes the short one first: the long one is 2 min late (cost 20)."""
    long_ = job("long", 10, due=10, weight=10)
    short = job("short", 2, due=11, weight=50, options=(opt(occupy=2),))
    instance = inst(long_, short)
    greedy = evaluate(instance, edd(instance, keep_current=False))
    assert greedy.weighted_tardiness == 50 * 1
    result = solve(instance, time_limit_s=2, workers=2)
    assert result.score.weighted_tardiness == 10 * 2
    assert result.status == "optimal"
    assert result.schedule.placements["short"].start == 0


def test_changeover_groups_products_when_that_is_cheaper() -> None:
    """X1 due 10, Y due 20, X2 due 30, changeover 30. EDD (X1, Y, X2) costs 30 + 60 late
    minutes; grouping (X1, X2, Y) costs 40, the optimum."""
    jobs = (
        job("x1", due=10, product="X"),
        job("y", due=20, product="Y"),
        job("x2", due=30, product="X"),
    )
    instance = inst(*jobs, changeover=30)
    assert evaluate(instance, edd(instance, keep_current=False)).weighted_tardiness == 10 * 90
    result = solve(instance, time_limit_s=2, workers=2)
    assert result.score.weighted_tardiness == 10 * 40
    assert result.status == "optimal"
    on_m1 = [p.job_id for p in result.schedule.on_machine("m1")]
    assert on_m1 == ["x1", "x2", "y"]


def test_cleaning_holds_the_machine_after_each_job() -> None:
    instance = inst(
        job("a", occupy_note := 10, options=(opt(occupy=15, processing=10),)),
        job("b", 10, options=(opt(occupy=15, processing=10),)),
        cleaning=5,
    )
    del occupy_note
    result = solve(instance, time_limit_s=1)
    starts = sorted(p.start for p in result.schedule.placements.values())
    assert starts == [0, 15]


def test_transport_picks_the_nearer_site_and_counts_against_the_due_time() -> None:
    j = job("o", 10, due=40, options=(opt("m1", transport=60), opt("m2", transport=20)))
    instance = inst(j, machines=(M1, M2))
    result = solve(instance, time_limit_s=1)
    p = result.schedule.placements["o"]
    assert (p.machine_id, p.arrival) == ("m2", 30)
    assert result.score.weighted_tardiness == 0
    # only the far site left: made in time, but it arrives 30 min late, and it says why
    far = inst(replace(j, options=(opt("m1", transport=60),)))
    result = solve(far, time_limit_s=1)
    assert result.score.weighted_tardiness == 10 * 30
    (why,) = explain(far, result.schedule)
    assert (why.reason, why.minutes_late) == ("transport_time", 30)


def test_downtime_and_shifts_move_the_job_into_a_window() -> None:
    # machine down 0-60, operator on shift 30-120: the job can start at 60 at the earliest
    windows = intersect(subtract([(0, H)], [(0, 60)]), [(30, 120)])
    j = job("o", 30, due=50, options=(opt(occupy=30, windows=windows),))
    instance = inst(j)
    result = solve(instance, time_limit_s=1)
    assert result.schedule.placements["o"].start == 60
    (why,) = explain(instance, result.schedule)
    assert why.reason == "calendar"
    # a window too short for the job: no place at all
    short = inst(replace(j, options=(opt(occupy=30, windows=[(0, 20)]),)))
    assert solve(short, time_limit_s=1).schedule.unplaced == ["o"]


def test_material_budget_sends_the_second_job_to_another_site() -> None:
    a = job("a", due=10, material="HC", grams=6, options=(opt("m1"), opt("m2", transport=30)))
    b = replace(a, id="b")
    instance = inst(a, b, machines=(M1, M2), material_budget={("s1", "HC"): 10.0})
    result = solve(instance, time_limit_s=1)
    assert {p.machine_id for p in result.schedule.placements.values()} == {"m1", "m2"}
    # no material anywhere else: one order stays unplaced, and says it is material
    only = inst(
        replace(a, options=(opt("m1"),)),
        replace(b, options=(opt("m1"),)),
        material_budget={("s1", "HC"): 10.0},
    )
    result = solve(only, time_limit_s=1)
    assert len(result.schedule.unplaced) == 1
    (why,) = [e for e in explain(only, result.schedule) if e.status == "unplaced"]
    assert why.reason == "material_missing"


def test_lot_expiry_limits_the_start() -> None:
    j = job("o", 10, options=(opt(occupy=10, latest_end=5),))
    assert solve(inst(j), time_limit_s=1).schedule.unplaced == ["o"]


def test_no_option_is_explained_by_the_rule_that_stopped_the_furthest_machine() -> None:
    j = job(
        "o",
        options=(),
        excluded=(
            Exclusion("alpha", "no_qualified_machine", "not qualified for MF-X"),
            Exclusion("beta", "material_missing", "no approved lot of FIL with 2.00 g at its site"),
        ),
    )
    instance = inst(j, machines=(M1, M2))
    result = solve(instance, time_limit_s=1)
    (why,) = explain(instance, result.schedule)
    assert (why.status, why.reason) == ("unplaced", "material_missing")
    assert "beta: no approved lot" in why.message


def test_capacity_is_the_reason_when_alone_it_would_be_on_time() -> None:
    jobs = [job(f"o{i}", 30, due=30) for i in range(3)]
    instance = inst(*jobs)
    result = solve(instance, time_limit_s=1)
    reasons = {e.reason for e in explain(instance, result.schedule)}
    assert reasons == {"capacity"}
    assert result.score.weighted_tardiness == 10 * (30 + 60)


# --- replanning ---------------------------------------------------------------------------------


def test_replan_keeps_jobs_in_place_unless_moving_pays() -> None:
    """Two machines; a planned job on m1 (due 10) and a new urgent job (due 10) only m1 can
    make. Keeping both on m1 costs at least 10 x 10; moving the planned job to m2 costs one
    move (30): the optimum."""
    planned = job(
        "p", 10, due=10, options=(opt("m1"), opt("m2")), current_machine="m1", current_start=0
    )
    urgent = job("u", 10, due=10, weight=50, options=(opt("m1"),))
    instance = inst(planned, urgent, machines=(M1, M2))
    result = solve(instance, time_limit_s=2)
    assert result.schedule.placements["u"].machine_id == "m1"
    assert result.schedule.placements["u"].start == 0
    assert result.schedule.placements["p"].machine_id == "m2"
    assert (result.score.moves, result.score.objective, result.status) == (1, 30, "optimal")
    # a routine new job due late: nothing moves, the new one goes after it
    calm = inst(planned, replace(urgent, due=H, weight=10), machines=(M1, M2))
    result = solve(calm, time_limit_s=2)
    assert result.schedule.placements["p"].machine_id == "m1"
    assert result.schedule.placements["p"].start == 0
    assert result.score.moves == 0


def test_machine_failure_moves_only_the_jobs_of_that_machine() -> None:
    a = job("a", options=(opt("m1"), opt("m2")), current_machine="m1", current_start=0)
    b = job("b", options=(opt("m1"), opt("m2")), current_machine="m2", current_start=0)
    failed = inst(replace(a, options=(opt("m2"),)), b, machines=(M1, M2))  # m1 broke
    result = solve(failed, time_limit_s=1)
    assert result.score.moves == 1
    assert result.schedule.placements["b"].start == 0  # b keeps its place
    assert result.schedule.placements["a"].start == 10
    old = {"a": ("m1", "0"), "b": ("m2", "0")}
    new = {k: (p.machine_id, str(p.start)) for k, p in result.schedule.placements.items()}
    assert diff_plans(old, new) == [
        {
            "order_id": "a",
            "kind": "moved",
            "from_machine": "m1",
            "from_start": "0",
            "to_machine": "m2",
            "to_start": "10",
        }
    ]


def test_greedy_plan_is_kept_when_it_meets_the_bound() -> None:
    both = (opt("m1"), opt("m2"))
    instance = inst(job("a", options=both), job("b", options=both), machines=(M1, M2))
    result = solve(instance, time_limit_s=5)
    assert (result.solver, result.status, result.gap) == ("edd", "optimal", 0.0)
    # ties go to the machine name, like the foundation's earliest-finish rule
    assert result.schedule.placements["a"].machine_id == "m1"
    assert result.schedule.placements["b"].machine_id == "m2"
    assert lower_bound(instance) == 0


def test_rebuild_never_starts_a_job_later_than_the_solver_said() -> None:
    instance = inst(job("a"), job("b"), changeover=5)
    schedule = rebuild(instance, {"a": ("m1", 20), "b": ("m1", 40)})
    assert [p.start for p in schedule.on_machine("m1")] == [0, 10]


@pytest.mark.parametrize("seed", [1, 2])
def test_random_instances_cp_sat_is_never_worse_than_edd(seed: int) -> None:
    import random

    rng = random.Random(seed)
    jobs = []
    for i in range(12):
        p = rng.randint(5, 30)
        jobs.append(
            job(
                f"o{i}",
                p,
                due=rng.randint(20, 120),
                weight=rng.choice([10, 50]),
                product=rng.choice("XY"),
                options=tuple(opt(m, occupy=p) for m in ("m1", "m2") if rng.random() < 0.7)
                or (opt("m1", occupy=p),),
            )
        )
    instance = inst(*jobs, machines=(M1, M2), changeover=10)
    base = evaluate(instance, edd(instance, keep_current=False)).objective
    result = solve(instance, time_limit_s=2, workers=2, keep_current=False)
    assert result.score.objective <= base
    assert result.bound <= result.score.objective


def test_runs_of_days_hold_their_machine_on_both_planners() -> None:
    """Three 7-day runs (10,080 min), each startable 48 h (2,880 min) from now (its material is
    collected first), on two machines with 5 min cleaning; all due when a run started at once
    would end (2,880 + 10,080 = 12,960). The urgent one and one routine run start at 2,880; the
    other routine run waits for a machine: 2,880 + 10,085 = 12,965, late by 10,085 min ->
    weighted tardiness 10 × 10,085 = 100,850, for EDD and for CP-SAT alike (no plan does
    better: two machines, three runs). The horizon is LONG_RUN_SLOTS runs past the release."""
    week, release = 7 * H, 2 * H
    horizon = release + 3 * (week + 5)

    def run(id_: str, weight: int) -> PlanJob:
        options = tuple(
            opt(m, release=release, occupy=week + 5, processing=week, windows=[(0, horizon)])
            for m in ("m1", "m2")
        )
        return job(id_, week, due=release + week, weight=weight, options=options, release=release)

    instance = Instance(
        jobs=(run("a", 10), run("b", 10), run("urgent", 50)),
        machines=(M1, M2),
        horizon=horizon,
        cleaning=5,
    )
    greedy = edd(instance, keep_current=False)
    result = solve(instance, time_limit_s=2, workers=2)
    for schedule in (greedy, result.schedule):
        assert evaluate(instance, schedule).weighted_tardiness == 10 * 10_085
        starts = sorted((p.start, p.machine_id) for p in schedule.placements.values())
        assert [s for s, _ in starts] == [release, release, release + week + 5]
        assert schedule.placements["urgent"].start == release
        # the waiting run is on a machine whose run ends (with cleaning) when it starts
        assert starts[2][1] in {m for _, m in starts[:2]}
