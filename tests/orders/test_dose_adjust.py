"""Dose adjusted from outcomes (issue 19 part 5; docs/dose-adjustment.md).

Known answers, worked by hand here (not taken from the code):

- Mosteller (N Engl J Med 1987;317:1098): BSA = sqrt(height cm × weight kg / 3600).
  140 cm, 35 kg: 140 × 35 = 4900; 4900 / 3600 = 1.361111; sqrt = 1.166667 m².
  180 cm, 80 kg: 14400 / 3600 = 4; sqrt = 2 m² exactly.
- Hydrocortisone for children with adrenal insufficiency: 8–10 mg/m²/day (starting dose
  8 mg/m²/day in three or four doses: Bornstein et al., Endocrine Society guideline, J Clin
  Endocrinol Metab 2016;101:364; daily physiological 8–10 mg/m²/day: Ahmet et al. 2011).
  At 1.166667 m²: 8 × 1.166667 = 9.333 mg/day, 3 a day = 3.111 mg a tablet; in steps of
  0.5 mg that is 3.0 mg (9 mg/day = 7.714 mg/m²/day, under 8) so the rule takes 3.5 mg
  (10.5 mg/day = 9.0 mg/m²/day, inside 8–10).
- The FHIR R4 example Observation weighs 185 [lb_av]; the avoirdupois pound is 0.45359237 kg
  exactly (UCUM), so 83.91458845 kg.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.demo import HYDROCORTISONE
from nearfab.families.solid_dose import dosing
from nearfab.identity import AuditEntry, Signature
from nearfab.orders import Order
from nearfab.orders.kit import ObservationIn
from nearfab.orders.observations import read_observations

seeded = fh.seeded

RULE: dict[str, Any] = {
    "kind": "body_surface_area",
    "mg_per_m2_per_day": 8,
    "range_mg_per_m2_per_day": {"min": 8, "max": 10},
    "step_mg": 0.5,
    "doses_per_day": 3,
    "max_observation_age_days": 30,
    "source": "Bornstein 2016 JCEM 101:364 (8 mg/m2/day start); Ahmet 2011 (8-10 mg/m2/day)",
}
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _obs(code: str, value: float, unit: str, at: datetime = NOW, i: str = "o") -> ObservationIn:
    return ObservationIn(f"{i}-{code}", dosing.LOINC, code, value, unit, at)


def _propose(weight: float, height: float, **rule: Any) -> Any:
    return dosing.propose(
        {**RULE, **rule},
        current=Quantity(2.0, "mg"),
        doses_per_day=rule.pop("split", None) if "split" in rule else None,
        observations=[
            _obs(dosing.BODY_WEIGHT, weight, "kg"),
            _obs(dosing.BODY_HEIGHT, height, "cm"),
        ],
        on=NOW,
    )


# --- the rule, by hand ------------------------------------------------------------------------
def test_mosteller_known_answers() -> None:
    assert dosing.mosteller_bsa(140, 35) == pytest.approx(1.1666667, abs=1e-6)
    assert dosing.mosteller_bsa(180, 80) == pytest.approx(2.0, abs=1e-12)
    # 100 cm, 16 kg: 1600 / 3600 = 0.444444; sqrt = 0.666667 m²
    assert dosing.mosteller_bsa(100, 16) == pytest.approx(2 / 3, abs=1e-9)


def test_the_proposal_stays_inside_the_guideline_range() -> None:
    answer = _propose(35, 140)
    assert answer.dose == Quantity(3.5, "mg")
    w = answer.working
    assert w["bsa_m2"] == pytest.approx(1.166667, abs=1e-6)
    assert w["daily_target_mg"] == pytest.approx(9.333333, abs=1e-6)
    assert w["given_mg_per_m2_per_day"] == pytest.approx(9.0, abs=1e-6)  # 10.5 / 1.166667
    # finer steps: 3.111 -> 3.0 (7.714, under 8) -> 3.25 mg: 9.75 / 1.166667 = 8.357143
    finer = _propose(35, 140, step_mg=0.25)
    assert finer.dose == Quantity(3.25, "mg")
    assert finer.working["given_mg_per_m2_per_day"] == pytest.approx(8.357143, abs=1e-6)
    # 180 cm, 80 kg (2 m²): 16 mg/day, 5.333 a tablet -> 5.5 mg (16.5 mg/day = 8.25 mg/m²/day)
    assert _propose(80, 180).dose == Quantity(5.5, "mg")


def test_units_convert_exactly_and_what_is_missing_is_named() -> None:
    # the FHIR R4 example weight, 185 [lb_av], and 66.9 [in_i] tall (169.926 cm)
    answer = dosing.propose(
        RULE,
        current=Quantity(2.0, "mg"),
        doses_per_day=None,
        observations=[
            _obs(dosing.BODY_WEIGHT, 185, "[lb_av]"),
            _obs(dosing.BODY_HEIGHT, 66.9, "[in_i]"),
        ],
        on=NOW,
    )
    assert answer.working["weight_kg"] == pytest.approx(83.91458845, abs=1e-8)
    assert answer.working["height_cm"] == pytest.approx(169.926, abs=1e-9)
    assert answer.working["bsa_m2"] == pytest.approx(math.sqrt(169.926 * 83.91458845 / 3600))
    with pytest.raises(ValidationFailed, match=r"body height \(LOINC 8302-2\)") as exc:
        dosing.propose(
            RULE,
            current=Quantity(2.0, "mg"),
            doses_per_day=None,
            observations=[_obs(dosing.BODY_WEIGHT, 35, "kg")],
            on=NOW,
        )
    assert exc.value.field == "observations"
    old = NOW - timedelta(days=31)
    with pytest.raises(ValidationFailed, match="older than 30 days"):
        dosing.propose(
            RULE,
            current=Quantity(2.0, "mg"),
            doses_per_day=None,
            observations=[
                _obs(dosing.BODY_WEIGHT, 35, "kg", old),
                _obs(dosing.BODY_HEIGHT, 140, "cm"),
            ],
            on=NOW,
        )
    # no step inside the range: 1 m², 8-8.2 mg/m²/day, steps of 5 mg once a day
    with pytest.raises(ValidationFailed) as none:
        dosing.propose(
            {**RULE, "range_mg_per_m2_per_day": {"min": 8, "max": 8.2}, "step_mg": 5},
            current=Quantity(2.0, "mg"),
            doses_per_day=1,
            observations=[_obs(dosing.BODY_WEIGHT, 36, "kg"), _obs(dosing.BODY_HEIGHT, 100, "cm")],
            on=NOW,
        )
    assert none.value.field == "dose_rule"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mg_per_m2_per_day": "eight"}, "dose_rule.mg_per_m2_per_day"),
        ({"mg_per_m2_per_day": 12}, "dose_rule.mg_per_m2_per_day"),
        ({"range_mg_per_m2_per_day": {"min": 10, "max": 8}}, "dose_rule.range_mg_per_m2_per_day"),
        ({"step_mg": 0}, "dose_rule.step_mg"),
        ({"kind": "per_kg"}, "dose_rule.kind"),
        ({"source": ""}, "dose_rule.source"),
        ({"colour": "red"}, "dose_rule.colour"),
    ],
)
def test_a_wrong_rule_is_refused_naming_its_key(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        dosing.check_rule({**RULE, **change})
    assert exc.value.field == field


def test_fhir_observations_are_read_or_refused_naming_the_field() -> None:
    weight: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "example",
        "status": "final",
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "27113001"},
                {"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"},
            ]
        },
        "subject": {"reference": "Patient/example", "display": "Never stored"},
        "effectiveDateTime": "2016-03-28",
        "valueQuantity": {
            "value": 185,
            "unit": "lbs",
            "system": "http://unitsofmeasure.org",
            "code": "[lb_av]",
        },
    }
    [read] = read_observations(weight, now=NOW)
    assert (read.system, read.code, read.value, read.unit) == (
        "http://loinc.org",
        "29463-7",
        185.0,
        "[lb_av]",
    )
    assert read.effective_at == datetime(2016, 3, 28, tzinfo=UTC)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"status": "preliminary"}, "Observation.status"),
        ({"valueQuantity": {"value": "heavy", "code": "kg"}}, "Observation.valueQuantity.value"),
        ({"valueQuantity": {"value": -1, "code": "kg"}}, "Observation.valueQuantity.value"),
        ({"effectiveDateTime": "2027-01-01T00:00:00Z"}, "Observation.effectiveDateTime"),
        ({"code": {"coding": []}}, "Observation.code.coding"),
    ]
    for change, field in bad:
        with pytest.raises(ValidationFailed) as exc:
            read_observations({**weight, **change}, now=NOW)
        assert exc.value.field == field, change
    no_date = {k: v for k, v in weight.items() if k != "effectiveDateTime"}
    with pytest.raises(ValidationFailed) as exc:
        read_observations(no_date, now=NOW)
    assert exc.value.field == "Observation.effectiveDateTime"


# --- the service, on both databases -----------------------------------------------------------
def vital(code: str, value: float, unit: str, at: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": at.isoformat(),
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit},
    }


def vitals(app: App, weight: float = 35, height: float = 140) -> dict[str, Any]:
    at = app.clock.now() - timedelta(hours=1)
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": vital("29463-7", weight, "kg", at)},
            {"resource": vital("8302-2", height, "cm", at)},
        ],
    }


def with_rule(app: App) -> str:
    """The hydrocortisone master file with the dose rule, and an order under it."""
    fh.new_version(app, HYDROCORTISONE, dose_rule=RULE)
    return fh.submit(app, dose_mg=2.0)


def clinician_elsewhere(app: App) -> Any:
    with app.uow() as uow:
        user = app.users.create_user(
            uow,
            fh.actor(app, "admin"),
            username="clin-man",
            full_name="Clin Man",
            roles=["clinician"],
            password=fh.TEST_PASSWORD,
            home_site_id=app.network.get_site(uow, "MAN-PH").id,
            temporary=False,
        )
    return fh.actor(app, user.username)


def sign(username: str, **extra: Any) -> dict[str, Any]:
    return {"username": username, "password": fh.TEST_PASSWORD, "meaning": "dose accepted", **extra}


def test_observations_propose_and_a_signed_acceptance_makes_a_new_version(seeded: App) -> None:
    app = seeded
    order_id = with_rule(app)
    pharmacist, clinician = fh.actor(app, "pharmacist"), fh.actor(app, "clinician")
    with app.uow() as uow:
        done = app.dose_adjustment.record_observations(uow, pharmacist, order_id, vitals(app))
        proposal_id = done.proposal.id if done.proposal else None
    assert proposal_id is not None, done.note
    with app.uow() as uow:
        proposal = app.dose_adjustment.get(uow, clinician, proposal_id)
        order = app.orders.get(uow, order_id)
        # the proposal changes nothing by itself
        assert (order.dose_value, order.dose_unit, order.status) == (2.0, "mg", "designed")
        assert (proposal.proposed_value, proposal.proposed_unit) == (3.5, "mg")
        assert proposal.status == "proposed"
        assert len(proposal.observation_ids) == 2
    with app.uow() as uow:
        accepted = app.dose_adjustment.accept(uow, clinician, proposal_id, sign("clinician"))
        new_id = accepted.new_order_id
        signature_id = accepted.signature_id
    assert new_id
    with app.uow() as uow:
        new = app.orders.get(uow, new_id)
        old = app.orders.get(uow, order_id)
        assert (new.dose_value, new.dose_unit, new.status) == (3.5, "mg", "designed")
        assert (new.supersedes, new.prescription_version) == (order_id, 2)
        assert new.prescription_id == old.prescription_id
        assert new.design is not None
        assert old.status == "cancelled"  # no batch started: the new version takes its place
        sig = uow.session.get(Signature, signature_id)
        assert sig is not None and sig.record_type == "dose_proposal"
        trail = list(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_id.in_([proposal_id, new_id]))
            )
        )
    actions = {(a.entity_type, a.action) for a in trail}
    assert ("dose_proposal", "create") in actions
    assert ("dose_proposal", "transition") in actions
    assert ("order", "create") in actions
    # the next batch follows the new version; the old one is never scheduled again
    fh.schedule(app, new_id)
    assert fh.order_status(app, new_id) == "scheduled"
    with app.uow() as uow, pytest.raises(Refused) as twice:
        app.dose_adjustment.accept(uow, clinician, proposal_id, sign("clinician"))
    assert twice.value.code == "decided"


def test_attacks_on_the_decision(seeded: App) -> None:
    app = seeded
    order_id = with_rule(app)
    clinician, pharmacist = fh.actor(app, "clinician"), fh.actor(app, "pharmacist")
    elsewhere = clinician_elsewhere(app)
    with app.uow() as uow:
        done = app.dose_adjustment.record_observations(uow, clinician, order_id, vitals(app))
    assert done.proposal is not None
    proposal_id = done.proposal.id
    orders_before = fh.count(app, Order)
    # a pharmacist may record observations but not decide a dose
    with app.uow() as uow, pytest.raises(Forbidden):
        app.dose_adjustment.accept(uow, pharmacist, proposal_id, sign("pharmacist"))
    # a clinician of another site: refused for the site
    with app.uow() as uow, pytest.raises(Forbidden):
        app.dose_adjustment.accept(uow, elsewhere, proposal_id, sign("clin-man"))
    # another site's clinician may not record observations for this order either
    with app.uow() as uow, pytest.raises(Forbidden):
        app.dose_adjustment.record_observations(uow, elsewhere, order_id, vitals(app))
    # no signature: no password
    with app.uow() as uow, pytest.raises(ValidationFailed) as nosig:
        app.dose_adjustment.accept(uow, clinician, proposal_id, {"meaning": "accepted"})
    assert nosig.value.field == "decision.password"
    # a wrong password: refused, the refusal audited, nothing made
    with app.uow() as uow, pytest.raises(Exception) as wrong:
        app.dose_adjustment.accept(
            uow, clinician, proposal_id, sign("clinician", password="not-my-password")
        )
    fh.assert_refusal_audited(app, wrong.value, "dose_proposal", proposal_id)
    # a rejection needs its reason
    with app.uow() as uow, pytest.raises(ValidationFailed) as noreason:
        app.dose_adjustment.reject(uow, clinician, proposal_id, sign("clinician"))
    assert noreason.value.field == "reason"
    assert fh.count(app, Order) == orders_before
    with app.uow() as uow:
        assert app.dose_adjustment.get(uow, clinician, proposal_id).status == "proposed"
        rejected = app.dose_adjustment.reject(
            uow, clinician, proposal_id, sign("clinician", reason="weight taken in a cast")
        )
        assert rejected.status == "rejected" and rejected.signature_id
    assert fh.count(app, Order) == orders_before
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        assert (order.dose_value, order.status) == (2.0, "designed")


def test_no_proposal_without_what_the_rule_needs(seeded: App) -> None:
    app = seeded
    order_id = with_rule(app)
    pharmacist = fh.actor(app, "pharmacist")
    only_weight = vital("29463-7", 35, "kg", app.clock.now() - timedelta(hours=1))
    with app.uow() as uow:
        done = app.dose_adjustment.record_observations(uow, pharmacist, order_id, only_weight)
    assert done.proposal is None and done.note and "8302-2" in done.note
    assert len(done.observations) == 1
    with app.uow() as uow, pytest.raises(ValidationFailed) as exc:
        app.dose_adjustment.propose(uow, pharmacist, order_id)
    assert exc.value.field == "observations"
    # a bad Observation in a bundle: nothing of the bundle is kept
    bundle = vitals(app)
    bundle["entry"][1]["resource"]["status"] = "registered"
    with app.uow() as uow, pytest.raises(ValidationFailed) as bad:
        app.dose_adjustment.record_observations(uow, pharmacist, order_id, bundle)
    assert bad.value.field == "Bundle.entry[1].resource.status"
    with app.uow() as uow:
        assert len(app.dose_adjustment.observations(uow, pharmacist, order_id)) == 1


def test_a_master_file_draft_with_a_wrong_rule_is_refused_naming_the_key(seeded: App) -> None:
    app = seeded
    with pytest.raises(ValidationFailed) as exc:
        fh.new_version(app, HYDROCORTISONE, dose_rule={**RULE, "mg_per_m2_per_day": "eight"})
    assert exc.value.field == "dose_rule.mg_per_m2_per_day"


def test_an_order_with_a_batch_keeps_it_and_a_scheduled_one_is_refused(seeded: App) -> None:
    app = seeded
    fh.new_version(app, HYDROCORTISONE, dose_rule=RULE)
    batch_id = fh.make_batch(app)
    made = fh.batch(app, batch_id).order_id
    status_before = fh.order_status(app, made)
    assert status_before not in ("received", "designed", "failed", "scheduled")
    clinician = fh.actor(app, "clinician")
    with app.uow() as uow:
        done = app.dose_adjustment.record_observations(uow, clinician, made, vitals(app))
        assert done.proposal is not None, done.note
        proposal_id = done.proposal.id
    with app.uow() as uow:
        accepted = app.dose_adjustment.accept(uow, clinician, proposal_id, sign("clinician"))
        new_id = accepted.new_order_id
    assert fh.order_status(app, made) == status_before  # its batch goes on
    assert fh.order_status(app, new_id or "") == "designed"
    with app.uow() as uow:
        marks = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_id == made, AuditEntry.action == "superseded"
            )
        ).all()
        assert len(marks) == 1 and marks[0].new == {
            "superseded_by": new_id,
            "dose_proposal": proposal_id,
        }
    # a scheduled order: its job would make the old dose, so the acceptance waits
    planned = fh.submit(app, dose_mg=2.0)
    fh.schedule(app, planned)
    with app.uow() as uow:
        done = app.dose_adjustment.record_observations(uow, clinician, planned, vitals(app))
        assert done.proposal is not None
        pid = done.proposal.id
    with app.uow() as uow, pytest.raises(Refused) as exc:
        app.dose_adjustment.accept(uow, clinician, pid, sign("clinician"))
    assert exc.value.code == "scheduled"
    assert fh.order_status(app, planned) == "scheduled"
