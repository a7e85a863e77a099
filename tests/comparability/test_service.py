"""The comparability service on the seeded demo network (SQLite and PostgreSQL): the report
over real batches, drift of a site whose means shifted, proficiency rounds scored with ISO 13528
z-scores, a suspended site that scheduling and production refuse until its CAPA is closed by an
e-signature, and every change on the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, NotFound, Refused, ValidationFailed
from nearfab.comparability import Suspension
from nearfab.identity import AuditEntry
from nearfab.production import BatchRecord

seeded = fh.seeded
SITES = ("GSTT-PH", "MAN-PH", "MOB-1", "CTRL")


def _code(app: App) -> str:
    with app.uow() as uow:
        return app.orders.get(uow, fh.batch(app, fh.make_batch(app)).order_id).master_file_code


def _round(app: App, code: str, **extra: Any) -> str:
    with app.uow() as uow:
        return app.comparability.open_round(
            uow,
            fh.actor(app, "qp"),
            {
                "master_file_code": code,
                "attribute": "assay of the blind reference sample",
                "unit": "%",
                "reference": "blind sample PT-1",
                "site_ids": list(SITES),
                **extra,
            },
        ).id


def _enter(app: App, round_id: str, values: dict[str, float]) -> None:
    for site, value in values.items():
        with app.uow() as uow:
            app.comparability.enter_result(
                uow, fh.actor(app, "qp"), round_id, {"site_id": site, "value": value}
            )


def _audits(app: App, entity_type: str) -> list[AuditEntry]:
    with app.uow() as uow:
        return list(
            uow.session.scalars(select(AuditEntry).where(AuditEntry.entity_type == entity_type))
        )


def test_a_site_with_z_above_3_is_suspended_until_its_capa_closes(seeded: App) -> None:
    app = seeded
    code = _code(app)
    # hand: x_pt = 100, σ_pt = 2: z = 0.5, 3.5, -0.5, 0 -> MAN-PH (|z| = 3.5 > 3) suspended
    round_id = _round(app, code, assigned_value=100.0, sd_pt=2.0)
    _enter(app, round_id, {"GSTT-PH": 101.0, "MAN-PH": 107.0, "MOB-1": 99.0, "CTRL": 100.0})
    with app.uow() as uow:
        app.comparability.score_round(uow, fh.actor(app, "qp"), round_id)
    with app.uow() as uow:
        view = app.comparability.round(uow, fh.actor(app, "qp"), round_id)
    scores = {r["site_code"]: (r["z"], r["verdict"]) for r in view["results"]}
    assert scores == {
        "GSTT-PH": (0.5, "satisfactory"),
        "MAN-PH": (3.5, "unsatisfactory"),
        "MOB-1": (-0.5, "satisfactory"),
        "CTRL": (0.0, "satisfactory"),
    }
    man = fh.site_id(app, "MAN-PH")
    with app.uow() as uow:
        [suspension] = app.comparability.suspensions(uow, fh.actor(app, "qp"))
        mf = app.master_files.effective_for_code(uow, code)
        man_machine = next(m for m in app.network.list_machines(uow) if m.site_id == man)
        site = app.network.get_site(uow, man)
        # production refuses the master file at the suspended site
        with pytest.raises(Refused) as refused:
            app.production.check_production_allowed(uow, mf, site, man_machine)
    assert refused.value.code == "site_suspended" and refused.value.field == "site"
    assert suspension["site_code"] == "MAN-PH" and suspension["status"] == "active"
    # scheduling leaves the suspended site's machines out
    order_id = fh.submit(app)
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        eligible = app.scheduling.eligibility(uow, order)
    assert man not in {c.site_id for c in eligible.candidates}
    assert any("suspended" in why for why in eligible.excluded.values()), eligible.excluded
    # the CAPA is closed with the QP's e-signature: a wrong password changes nothing
    with app.uow() as uow, pytest.raises(Exception) as wrong:
        app.comparability.close_capa(
            uow,
            fh.actor(app, "qp"),
            suspension["id"],
            {"capa_reference": "CAPA-19", "summary": "recalibrated", "password": "nope"},
        )
    assert getattr(wrong.value, "field", None) == "password"
    with app.uow() as uow:
        assert uow.session.get(Suspension, suspension["id"]).status == "active"
    with app.uow() as uow:
        app.comparability.close_capa(
            uow,
            fh.actor(app, "qp"),
            suspension["id"],
            {
                "capa_reference": "CAPA-19",
                "summary": "balance recalibrated, analyst retrained",
                "password": fh.TEST_PASSWORD,
                "username": "qp",
            },
        )
    with app.uow() as uow:
        row = uow.session.get(Suspension, suspension["id"])
        assert row.status == "lifted" and row.signature_id and row.capa_reference == "CAPA-19"
        mf = app.master_files.effective_for_code(uow, code)
        app.production.check_production_allowed(
            uow, mf, app.network.get_site(uow, man), man_machine
        )  # no longer refused
        assert app.comparability.suspension_reason(uow, man, code) is None
    # suspended, e-signed and lifted: each on the audit trail
    kinds = {e.action for e in _audits(app, "proficiency_suspension")}
    assert kinds == {"create", "sign", "transition"}
    assert {e.action for e in _audits(app, "proficiency_round")} == {"create", "transition"}
    assert len(_audits(app, "proficiency_result")) == 4


def test_without_an_assigned_value_algorithm_a_gives_x_pt_and_sd_pt(seeded: App) -> None:
    from nearfab.comparability.logic import algorithm_a  # checked on ISO 13528's example

    app = seeded
    code = _code(app)
    round_id = _round(app, code)
    values = {"GSTT-PH": 10.0, "MAN-PH": 10.4, "MOB-1": 9.7, "CTRL": 10.1}
    _enter(app, round_id, values)
    with app.uow() as uow:
        app.comparability.score_round(uow, fh.actor(app, "qp"), round_id)
    robust = algorithm_a(list(values.values()))
    with app.uow() as uow:
        view = app.comparability.round(uow, fh.actor(app, "qp"), round_id)
    assert view["robust_mean"] == pytest.approx(robust.mean)
    for r in view["results"]:
        assert r["z"] == pytest.approx((values[r["site_code"]] - robust.mean) / robust.sd)
    with app.uow() as uow:
        assert app.comparability.suspensions(uow, fh.actor(app, "qp")) == []


def test_refusals_name_the_field_and_write_nothing(seeded: App) -> None:
    app = seeded
    code = _code(app)
    qp = fh.actor(app, "qp")
    with app.uow() as uow, pytest.raises(ValidationFailed) as caught:
        app.comparability.open_round(
            uow,
            qp,
            {
                "master_file_code": code,
                "attribute": "x",
                "unit": "%",
                "reference": "r",
                "site_ids": ["GSTT-PH", "NOWHERE", "CTRL"],
            },
        )
    assert caught.value.field == "site_ids.1"
    with app.uow() as uow, pytest.raises(ValidationFailed) as caught:
        app.comparability.open_round(uow, qp, {"master_file_code": code})
    assert caught.value.field.startswith("round.")
    round_id = _round(app, code)
    _enter(app, round_id, {"GSTT-PH": 1.0})
    with app.uow() as uow, pytest.raises(Exception) as twice:
        app.comparability.enter_result(uow, qp, round_id, {"site_id": "GSTT-PH", "value": 2.0})
    assert getattr(twice.value, "field", None) == "site_id"
    with app.uow() as uow, pytest.raises(Refused) as few:
        app.comparability.score_round(uow, qp, round_id)
    assert few.value.code == "too_few_results"
    # a site's pharmacist enters for their own site only; never scores
    pharmacist = fh.actor(app, "pharmacist")  # GSTT-PH
    with app.uow() as uow, pytest.raises(Forbidden) as other:
        app.comparability.enter_result(
            uow, pharmacist, round_id, {"site_id": "MAN-PH", "value": 2.0}
        )
    assert other.value.code == "other_site"
    with app.uow() as uow, pytest.raises(Forbidden):
        app.comparability.score_round(uow, pharmacist, round_id)
    with app.uow() as uow, pytest.raises(NotFound):
        app.comparability.round(uow, qp, "no-such-round")
    assert len(_audits(app, "proficiency_result")) == 1


def test_a_site_sees_its_own_result_only_the_control_site_every_one(seeded: App) -> None:
    app = seeded
    code = _code(app)
    round_id = _round(app, code)
    _enter(app, round_id, {"GSTT-PH": 10.0, "MAN-PH": 10.4, "MOB-1": 9.7})
    with app.uow() as uow:
        own = app.comparability.round(uow, fh.actor(app, "pharmacist"), round_id)
        every = app.comparability.round(uow, fh.actor(app, "qp"), round_id)
    assert [r["site_code"] for r in own["results"]] == ["GSTT-PH"]
    assert len(every["results"]) == 3


def test_a_site_whose_means_shifted_is_flagged_before_a_batch_fails(seeded: App) -> None:
    """Nine made batches, three per site; one critical process parameter's batch means set
    (behind the services' back) to A = B = 9, 10, 11 and C = 12, 13, 14. Hand: grand mean 11,
    pooled σ 1, limits for three batches 11 ± √3 = 9.268 ... 12.732: C's mean 13 is outside,
    A's and B's (10) inside. TOST with the master file's margin 1: C against the rest,
    13 - 10 = +3, not equivalent. Every value lies inside the parameter's limits."""
    app = seeded
    batches = [fh.make_batch(app) for _ in range(9)]
    with app.uow() as uow:
        order = app.orders.get(uow, fh.batch(app, batches[0]).order_id)
        mf = app.master_files.effective_for_code(uow, order.master_file_code)
        cpp = sorted(mf.process_parameters)[0]
        limits = mf.process_parameters[cpp]
        machines = {}
        for m in app.network.list_machines(uow):
            machines.setdefault(m.site_id, m.id)
    sites = [fh.site_id(app, c) for c in ("GSTT-PH", "MAN-PH", "MOB-1")]
    assert all(s in machines for s in sites), "the demo has a machine at each of the sites"
    # centre the constructed means on the parameter's target, 1 unit = a tenth of its range
    target, step = float(limits["target"]), (float(limits["high"]) - float(limits["low"])) / 10
    means = [9, 10, 11, 9, 10, 11, 12, 13, 14]
    for i, (batch_id, mean) in enumerate(zip(batches, means, strict=True)):
        site = sites[i // 3]
        row = fh.batch(app, batch_id)
        summary = dict(row.telemetry_summary or {})
        summary[cpp] = {**summary.get(cpp, {}), "mean": target + (mean - 11) * step}
        fh.edit(app, BatchRecord, batch_id, site_id=site, machine_id=machines[site])
        fh.edit(app, BatchRecord, batch_id, telemetry_summary=summary)
    fh.new_version(app, mf.code, comparability={"margins": {cpp: 1.0 * step}})
    with app.uow() as uow:
        report = app.comparability.report(uow, fh.actor(app, "qp"), mf.code)
    [attribute] = [a for a in report["attributes"] if a["name"] == cpp]
    groups = {g["label"]: g for g in attribute["groups"]}
    assert attribute["centre"] == pytest.approx(target)
    assert attribute["sigma"] == pytest.approx(step)
    c = groups["MOB-1"]
    assert c["outside_limits"] is True
    assert (c["lcl"], c["ucl"]) == pytest.approx(
        (target - 3**0.5 * step, target + 3**0.5 * step), abs=1e-9
    )
    assert not groups["GSTT-PH"]["outside_limits"] and not groups["MAN-PH"]["outside_limits"]
    assert c["tost"]["difference"] == pytest.approx(3 * step)
    assert c["tost"]["equivalent"] is False
    assert any("MOB-1" in f and "outside the network's limits" in f for f in report["flagged"])
    # Cpk of C's batch means: s = 1 step, mean = target + 2 steps (NIST §6.1.6)
    low, high = float(limits["low"]), float(limits["high"])
    mean_c = target + 2 * step
    cpk_c = min(high - mean_c, mean_c - low) / (3 * step)
    assert c["capability"]["cpk"] == pytest.approx(cpk_c)
    assert cpk_c < 1.33  # 3 steps to the nearer limit over 3 s = 1 for a centred target
    assert any(f.startswith(f"Cpk {cpk_c:.2f}") and "below 1.33" in f for f in c["flags"])
    assert report["margins_from"] == "master file"
    # site staff see their own site's rows only
    with app.uow() as uow:
        own = app.comparability.report(uow, fh.actor(app, "pharmacist"), mf.code)
    [mine] = [a for a in own["attributes"] if a["name"] == cpp]
    assert [g["label"] for g in mine["groups"]] == ["GSTT-PH"]
    assert {p["group"] for p in mine["points"]} == {"GSTT-PH"}
    assert all("MOB-1" not in f for f in own["flagged"])
    # by month: the network's months for the QP, the site's own batches' months for its staff
    with app.uow() as uow:
        months = app.comparability.report(uow, fh.actor(app, "qp"), mf.code, "month")
        own_months = app.comparability.report(uow, fh.actor(app, "pharmacist"), mf.code, "month")
    [net] = [a for a in months["attributes"] if a["name"] == cpp]
    [site] = [a for a in own_months["attributes"] if a["name"] == cpp]
    assert sum(g["batches"] for g in net["groups"]) == 9
    assert sum(g["batches"] for g in site["groups"]) == 3  # GSTT-PH's three
    with app.uow() as uow, pytest.raises(ValidationFailed) as bad:
        app.comparability.report(uow, fh.actor(app, "qp"), mf.code, "weekday")
    assert bad.value.field == "by"


def test_a_quality_capa_raised_by_the_suspension_must_close_first(seeded: App) -> None:
    """Central QA's CAPA (quality.Capa, source proficiency_suspension) is the CAPA of record:
    while it is open the suspension stays; once its QP closes it, the suspension is lifted
    naming it; a CAPA of something else is refused as the reference."""
    from datetime import timedelta

    app = seeded
    code = _code(app)
    round_id = _round(app, code, assigned_value=100.0, sd_pt=2.0)
    _enter(app, round_id, {"GSTT-PH": 100.0, "MAN-PH": 93.0, "MOB-1": 101.0, "CTRL": 99.0})
    qp = fh.actor(app, "qp")
    with app.uow() as uow:
        app.comparability.score_round(uow, qp, round_id)
    with app.uow() as uow:
        [suspension] = app.comparability.suspensions(uow, qp)
    assert suspension["site_code"] == "MAN-PH" and suspension["z"] == -3.5  # (93 - 100) / 2
    due = (app.clock.now() + timedelta(days=30)).date().isoformat()

    def capa(source_kind: str, source_id: str | None) -> str:
        with app.uow() as uow:
            return app.qms.open_capa(
                uow,
                qp,
                {
                    "owner": "qp",
                    "due_date": due,
                    "site_id": "MAN-PH",
                    "master_file_code": code,
                    "title": "proficiency failure",
                    "description": "z = -3.5 on the blind sample",
                    "source_kind": source_kind,
                    "source_id": source_id,
                },
            ).id

    raised = capa("proficiency_suspension", suspension["id"])
    other = capa("other", None)
    closing = {"summary": "method retrained", "password": fh.TEST_PASSWORD, "username": "qp"}
    with app.uow() as uow, pytest.raises(Refused) as still_open:
        app.comparability.close_capa(
            uow, qp, suspension["id"], {**closing, "capa_reference": raised}
        )
    assert still_open.value.code == "capa_open" and still_open.value.field == "capa_reference"
    with app.uow() as uow:
        app.qms.close_capa(
            uow,
            qp,
            raised,
            {"effectiveness": "re-test passed", "password": fh.TEST_PASSWORD, "username": "qp"},
        )
    with app.uow() as uow, pytest.raises(Refused) as not_its:
        app.comparability.close_capa(
            uow, qp, suspension["id"], {**closing, "capa_reference": other}
        )
    assert not_its.value.code == "capa_not_of_suspension"
    with app.uow() as uow:
        lifted = app.comparability.close_capa(
            uow, qp, suspension["id"], {**closing, "capa_reference": raised}
        )
    assert lifted.status == "lifted" and lifted.capa_reference == raised


def test_the_planner_leaves_a_suspended_site_out(seeded: App) -> None:
    """The network plan (CP-SAT instance) places nothing at a suspended site: with every other
    machine out of service, an order is placed at MAN-PH before the suspension and the next
    one is left unplaced after it."""
    app = seeded
    code = _code(app)
    man = fh.site_id(app, "MAN-PH")
    with app.uow() as uow:
        others = [m.id for m in app.network.list_machines(uow) if m.site_id != man]
    for machine_id in others:
        with app.uow() as uow:
            app.network.set_machine_status(
                uow, fh.actor(app, "admin"), machine_id, "maintenance", reason="only MAN-PH left"
            )
    before = fh.submit(app)
    with app.uow() as uow:
        version = app.scheduling.plan(uow, fh.actor(app, "planner"), time_limit_s=2)
        placed = {a["order_id"]: a for a in version.assignments}
    assert before in placed and placed[before]["site_id"] == man  # the control: MAN-PH makes it
    round_id = _round(app, code, assigned_value=100.0, sd_pt=2.0)
    _enter(app, round_id, {"GSTT-PH": 100.0, "MAN-PH": 93.0, "MOB-1": 101.0, "CTRL": 99.0})
    with app.uow() as uow:
        app.comparability.score_round(uow, fh.actor(app, "qp"), round_id)
    after = fh.submit(app)
    with app.uow() as uow:
        version = app.scheduling.plan(uow, fh.actor(app, "planner"), time_limit_s=2)
        placed = {a["order_id"]: a for a in version.assignments}
        unplaced = {e["order_id"] for e in version.explanations if e["status"] == "unplaced"}
    assert after not in placed and after in unplaced
