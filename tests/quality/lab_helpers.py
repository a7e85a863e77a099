"""Shared steps of the laboratory-results tests: the demo's cell product (nearfab.demo:
MF-CART-CMF) with a release rule that lists the laboratory's tests, a made cell batch, an entry.

The demo's rule releases from the micro-factory's in-process counts with sterility pending
(identity/purity, endotoxin and mycoplasma are not in it); a new version lists all six tests,
with the specifications written out (not the family's defaults):

- identity and purity: CD3+ at least 0.80 of viable cells;
- endotoxin: at most 5 EU/kg, the threshold pyrogenic dose K of Ph. Eur. 5.1.10 for a
  parenteral, non-intrathecal route. The demo prescription (2e6 viable cells/kg for 70 kg) is
  infused as one bag of 70 mL (1.4e8 cells ÷ 2e6 cells/mL), so a result of x EU/mL gives
  x × 70 mL ÷ 70 kg = x EU/kg.
"""

from __future__ import annotations

import random
from typing import Any

from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.demo import CAR_T, CELL_MACHINE, cell_therapy_bundle

FULL_RULE: dict[str, Any] = {
    "mode": "rtrt",
    "tests": [
        "viable_cell_dose",
        "viability",
        "identity_purity",
        "endotoxin",
        "mycoplasma",
        "sterility",
    ],
    "in_process": ["viable_cell_dose", "viability"],
}
SPECS: dict[str, Any] = {
    "dose": {"min_pct": 80, "max_pct": 120},
    "viability": {"min": 0.7},
    "markers": {"CD3+": {"min": 0.80}},
    "endotoxin": {"max_eu_per_kg": 5.0},
    "growth_trajectory": {"tolerance_pct": 50},
}
METHOD = "QC-LAB SOP-017 (LAL kinetic chromogenic; flow panel FP-3; NAT mycoplasma)"
WEIGHT_KG, VOLUME_ML = 70.0, 70.0
# the collection's ISBT 128 DIN as scanned (ST-001 Appendix A: G1234 17 654321, flags 00)
DIN = "=G12341765432100"


def with_lab_tests(app: App) -> None:
    """The next version of the demo's cell product: the release rule lists every test."""
    fh.new_version(app, CAR_T, release_rule=FULL_RULE, cqa_specs=SPECS)


def _collected(app: App, order_id: str) -> None:
    """Where the product is made from a collection from the patient, the clinician records
    what the family requires before it (signed) and the collection (the bag's DIN scanned)."""
    scheduling: Any = app.scheduling
    if not hasattr(scheduling, "record_collected"):
        return
    clinician = fh.actor(app, "clinician")
    with app.uow() as uow:
        order = app.orders.get(uow, order_id)
        required = scheduling.required_before_collection(uow, order)
        patient = app.orders.patient(uow, order.patient_id).ref
    for kind in required:
        with app.uow() as uow:
            scheduling.record_pre_collection(
                uow,
                clinician,
                order_id,
                kind=kind,
                reference=f"{kind} form v1",
                statement=f"{kind} confirmed",
                password=fh.TEST_PASSWORD,
                username="clinician",
            )
    with app.uow() as uow:
        scheduling.record_collected(uow, clinician, order_id, identifier=DIN, patient=patient)


def cell_batch(app: App, seed: int = 1, *, finish: bool = True) -> str:
    """A made cell batch (2e6 viable cells/kg for 70 kg) waiting for the QP; its id.
    `finish=False`: the run started, not yet finished."""
    bundle = cell_therapy_bundle(
        random.Random(seed),
        today=app.clock.now().date(),
        dose_per_kg=2.0e6,
        weight_kg=WEIGHT_KG,
        din=DIN,
    )
    with app.uow() as uow:
        (order,) = app.orders.submit(uow, fh.actor(app, "clinician"), bundle)
        assert order.status == "designed", order.stop_reason
        order_id = order.id
    job_id = fh.schedule(app, order_id)
    _collected(app, order_id)
    fh.issue_ticket(app, job_id)
    machine = fh.machine(app, fh.machine_id(app, CELL_MACHINE))
    app.fleet.clear_faults(machine)
    batch_id = fh.start(app, job_id)
    if finish:
        fh.finish(app, batch_id)
    return batch_id


def enter(
    app: App,
    username: str,
    batch_id: str,
    results: dict[str, Any],
    *,
    method: str = METHOD,
    reason: str | None = None,
    password: str = fh.TEST_PASSWORD,
) -> str:
    """`username` enters and signs laboratory results; the entry's id."""
    who = fh.actor(app, username)
    with app.uow() as uow:
        return app.quality.lab_results.enter(
            uow,
            who,
            batch_id,
            results=results,
            method=method,
            reason=reason,
            password=password,
            username=username,
        )


def checks(app: App, batch_id: str) -> dict[str, tuple[bool | None, str]]:
    """The review's checks: name -> (passed, detail)."""
    with app.uow() as uow:
        review = app.quality.get_review(uow, batch_id)
        return {c["name"]: (c["passed"], c["detail"]) for c in review.proposal["checks"]}


def review(app: App, batch_id: str) -> dict[str, Any]:
    with app.uow() as uow:
        row = app.quality.get_review(uow, batch_id)
        return {
            "proposed_decision": row.proposed_decision,
            "pending": list(row.proposal.get("pending") or []),
            "status": row.status,
        }


def lab_batch(app: App) -> str:
    """`with_lab_tests`, then a made cell batch waiting for the QP (`cell_batch`): the world
    of the lab-result tests, built once per backend and worker (flow_helpers.seeded_or_world)
    and shared by their modules; its id."""
    with_lab_tests(app)
    return cell_batch(app)
