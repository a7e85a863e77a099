"""Issue 17, plans back to the sites: an order the control node takes for a site travels to
that site's node, which stores it with the same ids and makes it; the control makes nothing.

Two real nodes, each its own copy of the seeded network (test_replication_mqtt.nodes). Expected
values come from the control's own tables read directly (the order's columns, the patient's
encrypted identity opened with the vault) and from the documented formula of the control's
signed entry (SHA-256 of the canonical JSON of the hand-over's audit body, computed here)."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.orders.test_dose_adjust import RULE, sign, vitals
from tests.replication.test_master_file_across import signed_entry_held_back
from tests.replication.test_release_across import (
    applied_rows,
    canonical_sha256,
    control_key_known,
    deliver,
)
from tests.replication.test_replication_mqtt import nodes, nodes_world, repl
from tests.replication.test_site_node_work import order_for

from nearfab.bootstrap import App
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.custody import LedgerEntry
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, system_actor
from nearfab.masterfiles import MasterFile
from nearfab.orders import IdentityVault
from nearfab.orders.models import Order, Patient, PatientIdentity, Prescription
from nearfab.production import BatchRecord
from nearfab.replication.decisions import WAITING_ENTITY
from nearfab.replication.models import InboxRecord
from nearfab.scheduling import Job

__all__ = ["nodes"]


def handover_row(control: App, order_id: str) -> dict[str, Any]:
    with control.uow() as uow:
        row = uow.session.scalar(
            select(AuditEntry).where(
                AuditEntry.entity_type == "order_handover", AuditEntry.entity_id == order_id
            )
        )
        assert row is not None and row.new is not None
        return dict(row.new)


def order_columns(app: App, order_id: str) -> dict[str, Any] | None:
    """The order's columns as `app` holds them (row_version aside: each copy's own lock)."""
    with app.uow() as uow:
        order = uow.session.get(Order, order_id)
        if order is None:
            return None
        cols = {c.key: getattr(order, c.key) for c in Order.__table__.columns}
    cols.pop("row_version")
    return cols


def vault_of(app: App) -> IdentityVault:
    """The node's patient-identity key, from its data folder's key file."""
    return IdentityVault.load_or_create(
        Path(app.settings.data_dir) / "keys" / "patient_identity.key"
    )


def identity_of(app: App, patient_id: str) -> Any:
    with app.uow() as uow:
        held = uow.session.get(PatientIdentity, patient_id)
        assert held is not None
        return vault_of(app).decrypt(held.ciphertext)


def batches_of(app: App, order_id: str) -> int:
    with app.uow() as uow:
        return int(
            uow.session.scalar(
                select(func.count())
                .select_from(BatchRecord)
                .where(BatchRecord.order_id == order_id)
            )
            or 0
        )


def take(site: App, body: dict[str, Any]) -> None:
    with site.uow() as uow:
        site.orders.take_handed_over(
            uow, system_actor("replication"), body, site_id=repl(site).site_id, note="test"
        )


def test_an_order_taken_at_the_control_for_a_site_is_made_by_that_sites_node(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes  # the site node is St Thomas' (GSTT-PH)
    order_id = order_for(control, "GSTT-PH")
    assert order_columns(site, order_id) is None  # not there before the control's records
    deliver(control, site)

    # the same order, column for column, and the same prescription and patient
    there, here = order_columns(control, order_id), order_columns(site, order_id)
    assert here is not None and here == there
    with control.uow() as uow:
        rx_there = uow.session.get(Prescription, here["prescription_id"])
        assert rx_there is not None
        raw_sha, patient_ref = rx_there.raw_sha256, uow.session.get(Patient, here["patient_id"])
        assert patient_ref is not None
        ref = patient_ref.ref
    with site.uow() as uow:
        rx_here = uow.session.get(Prescription, here["prescription_id"])
        patient_here = uow.session.get(Patient, here["patient_id"])
        assert rx_here is not None and patient_here is not None
        assert rx_here.raw_sha256 == raw_sha and patient_here.ref == ref
    assert identity_of(site, here["patient_id"]) == identity_of(control, here["patient_id"])
    (applied,) = [r for r in applied_rows(site, None) if r.new and r.new.get("order_id")]
    assert applied.new is not None and applied.new["outcome"] == "taken here"
    assert applied.new["order_id"] == order_id
    # acted on once: delivered again, nothing new
    deliver(control, site)
    assert len([r for r in applied_rows(site, None) if r.new and r.new.get("order_id")]) == 1

    # the site makes it; the control, which took it, makes nothing
    fh.run(site)
    fh.run(control)
    assert batches_of(site, order_id) == 1
    assert batches_of(control, order_id) == 0
    # and what the site then sends about it names the order the control holds
    deliver(site, control)
    with control.uow() as uow:
        summaries = [
            r.payload
            for r in uow.session.scalars(
                select(InboxRecord).where(
                    InboxRecord.kind == "batch", InboxRecord.origin_site == repl(site).site_id
                )
            )
        ]
    assert any(order_id in p for p in summaries)


def test_a_handover_is_taken_only_with_the_controls_signed_entry_naming_it(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    control_key_known(control, site)
    order_id = order_for(control, "GSTT-PH")
    held = signed_entry_held_back(control, site, f"order_handover:{order_id}")
    # the signed entry names the SHA-256 of the hand-over's audit body, computed by hand
    body = handover_row(control, order_id)
    assert held["body"] == {"sha256": canonical_sha256(body), "order_id": order_id}
    assert order_columns(site, order_id) is None  # waits for the control's signature
    held["give_the_rest"]()
    assert order_columns(site, order_id) is not None


def test_another_sites_order_and_the_controls_own_stay_where_they_are(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes  # St Thomas' node
    theirs = order_for(control, "MAN-PH")
    deliver(control, site)
    assert order_columns(site, theirs) is None  # Manchester's node takes it, not St Thomas'
    assert handover_row(control, theirs)["site_id"] == fh.site_id(control, "MAN-PH")
    body = handover_row(control, theirs)
    with pytest.raises(Refused) as refused:
        take(site, body)
    assert refused.value.code == "another_site" and refused.value.field == "site_id"
    # one hand-over: the orders every copy held already (the seed's) are not handed over
    with control.uow() as uow:
        count = uow.session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.entity_type == "order_handover")
        )
    assert count == 1


def test_an_altered_handover_is_refused_and_nothing_is_written(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    body = handover_row(control, order_id)

    # the encrypted prescription swapped for another resource: it no longer matches its hash
    swapped = copy.deepcopy(body)
    other = vault_of(control).encrypt({"resourceType": "MedicationRequest", "id": "forged"})
    swapped["prescription"]["raw_ciphertext"] = base64.b64encode(other).decode()
    with pytest.raises(Refused) as altered:
        take(site, swapped)
    assert altered.value.code == "prescription_altered"

    # ciphertext that does not open with the network's patient-identity key
    garbage = copy.deepcopy(body)
    garbage["prescription"]["raw_ciphertext"] = base64.b64encode(b"not a token").decode()
    with pytest.raises(Refused) as closed:
        take(site, garbage)
    assert closed.value.code == "not_decryptable"

    # the patient's identity that does not open here either
    sealed = copy.deepcopy(body)
    sealed["identity"]["ciphertext"] = base64.b64encode(b"sealed elsewhere").decode()
    with pytest.raises(Refused) as identity:
        take(site, sealed)
    assert (identity.value.code, identity.value.field) == ("not_decryptable", "identity.ciphertext")

    # a column missing: named
    missing = copy.deepcopy(body)
    del missing["order"]["units"]
    with pytest.raises(ValidationFailed) as named:
        take(site, missing)
    assert named.value.field == "order.units"

    # a stopped order (its design refused) is not made anywhere
    stopped = copy.deepcopy(body)
    stopped["order"]["status"] = "stopped"
    with pytest.raises(Refused) as not_designed:
        take(site, stopped)
    assert not_designed.value.code == "not_designed"
    assert order_columns(site, order_id) is None  # nothing half-written by any of them
    with site.uow() as uow:
        assert uow.session.get(Prescription, body["prescription"]["id"]) is None


def test_an_order_to_a_version_superseded_at_the_site_is_refused_on_record(
    nodes: tuple[App, App],
) -> None:
    """The site makes only the version effective there: an order whose master-file version
    the site holds as superseded will never be made there, so the refusal is final and on
    record (the control sees it in the site's audit trail)."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    mf_id = fh.master_file_id(site, HYDROCORTISONE)
    with site.uow() as uow:  # no version of the code effective at the site any more
        mf = uow.session.get(MasterFile, mf_id)
        assert mf is not None
        mf.status = "superseded"
        uow.commit()
    deliver(control, site)
    assert order_columns(site, order_id) is None
    (refused,) = [r for r in applied_rows(site, None) if r.new and r.new.get("order_id")]
    assert refused.action == "refuse" and refused.new is not None
    assert refused.new["outcome"].startswith("not applied here: ")
    assert "superseded here" in refused.new["outcome"]
    assert waiting_rows(site) == []  # final: nothing waits


def waiting_rows(site: App, order_id: str | None = None) -> list[AuditEntry]:
    """The site's rows saying a control record waits (entity `replication_waiting`)."""
    with site.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_type == WAITING_ENTITY)
                .order_by(AuditEntry.seq)
            )
        )
        for row in rows:
            uow.session.expunge(row)
    return [r for r in rows if order_id is None or (r.new or {}).get("order_id") == order_id]


def handover_outcomes(site: App, order_id: str) -> list[tuple[str, str]]:
    """The site's applied rows about the hand-over of `order_id`: (action, outcome)."""
    return [
        (r.action, str((r.new or {}).get("outcome")))
        for r in applied_rows(site, "order_handover")
        if (r.new or {}).get("order_id") == order_id
    ]


def pass_again(site: App) -> Any:
    """A pass of the site's decisions with nothing new received (as after the next batch)."""
    decisions = repl(site).decisions
    assert decisions is not None
    return decisions.apply_pending(site.uow)


def test_an_order_whose_version_is_not_effective_at_the_site_yet_waits_and_is_taken_once_it_is(
    nodes: tuple[App, App],
) -> None:
    """The control publishes a new version of the code and takes an order on it. At the site
    the publication fails unexpectedly in the first pass (fault injected: the site's
    master-file install fails once, as a database error would), so the hand-over after it
    finds the version not held here. Before, that refusal was final: the order was never
    made. It waits, on record once, and is taken in the next pass, after the publication."""
    site, control = nodes
    control_key_known(control, site)
    new_mf = fh.new_version(control, HYDROCORTISONE)
    order_id = order_for(control, "GSTT-PH")
    assert order_columns(control, order_id)["master_file_id"] == new_mf  # type: ignore[index]
    decisions = repl(site).decisions
    assert decisions is not None
    real = decisions._master_files

    class Broken:
        def install_published(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("disk I/O error")

    decisions._master_files = Broken()  # type: ignore[assignment]
    try:
        deliver(control, site)
    finally:
        decisions._master_files = real
    assert order_columns(site, order_id) is None
    assert handover_outcomes(site, order_id) == []  # not refused: nothing final on record
    (waits,) = waiting_rows(site, order_id)
    assert waits.reason is not None and "not yet effective here (not held here)" in waits.reason
    with site.uow() as uow:
        assert list(decisions.waiting(uow).values()) == [waits.reason]

    result = pass_again(site)  # the publication installed, then the hand-over taken
    assert result.waiting == {} and len(result.applied) == 2
    with site.uow() as uow:
        mf = uow.session.get(MasterFile, new_mf)
        assert mf is not None and mf.status == "effective"
        assert decisions.waiting(uow) == {}
    assert order_columns(site, order_id) == order_columns(control, order_id)
    assert handover_outcomes(site, order_id) == [("create", "taken here")]
    assert len(waiting_rows(site, order_id)) == 1  # the wait stays as history
    fh.run(site)
    assert batches_of(site, order_id) == 1


def test_a_waiting_order_whose_version_is_withdrawn_meanwhile_is_refused_on_record(
    nodes: tuple[App, App],
) -> None:
    """Waiting is for what may come right by itself: the version the order is made to held
    here but not yet effective waits; once withdrawn here it never will be, and the refusal
    is final (on record, never tried again, even if the version came back)."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    mf_id = fh.master_file_id(site, HYDROCORTISONE)
    fh.edit(site, MasterFile, mf_id, status="approved")  # held, not yet effective here
    deliver(control, site)
    assert order_columns(site, order_id) is None
    assert handover_outcomes(site, order_id) == []
    (waits,) = waiting_rows(site, order_id)
    assert waits.reason is not None and "not yet effective here (approved here)" in waits.reason
    # a pass that finds it waiting for the same thing writes nothing more
    assert list(pass_again(site).waiting.values()) == [waits.reason]
    assert len(waiting_rows(site, order_id)) == 1

    fh.edit(site, MasterFile, mf_id, status="withdrawn")
    pass_again(site)
    ((action, outcome),) = handover_outcomes(site, order_id)
    assert action == "refuse" and "withdrawn here" in outcome
    fh.edit(site, MasterFile, mf_id, status="effective")
    pass_again(site)  # final: not tried again
    assert order_columns(site, order_id) is None
    assert len(handover_outcomes(site, order_id)) == 1


# --- a new version of an order handed over (a dose adjusted at the control) -------------------


def with_dose_rule(site: App, control: App) -> None:
    """The hydrocortisone master file with the dose rule, published at the control and
    installed at the site (as the control's signed decision)."""
    control_key_known(control, site)
    mf_id = fh.new_version(control, HYDROCORTISONE, dose_rule=RULE)
    deliver(control, site)
    with site.uow() as uow:
        mf = uow.session.get(MasterFile, mf_id)
        assert mf is not None and mf.status == "effective"


#: (site, control, None) after `with_dose_rule`: built once per worker, each test its own copy
#: of both nodes (`nodes_world`)
dose_ruled = nodes_world(with_dose_rule)


def adjust_at_control(control: App, order_id: str) -> str:
    """A clinician at the control records the patient's weight and height (35 kg, 140 cm)
    against the order and accepts the dose the rule proposes with an e-signature; the new
    version's id. By hand (tests/orders/test_dose_adjust.py): 3.5 mg a tablet."""
    clinician = fh.actor(control, "clinician")
    with control.uow() as uow:
        done = control.dose_adjustment.record_observations(
            uow, clinician, order_id, vitals(control)
        )
    assert done.proposal is not None, done.note
    with control.uow() as uow:
        accepted = control.dose_adjustment.accept(
            uow, clinician, done.proposal.id, sign("clinician")
        )
    assert accepted.new_order_id is not None
    return accepted.new_order_id


def test_a_dose_adjusted_at_the_control_reaches_the_site_as_a_new_version_of_the_order(
    dose_ruled: tuple[App, App, None],
) -> None:
    """An order handed over to St Thomas', not yet planned there; the control's clinician
    adjusts its dose. The new version travels signed like the first hand-over: the site stores
    it column for column (3.5 mg, version 2, superseding the first), cancels the first (no
    batch started: the dose-adjustment rule), and makes the new one only."""
    site, control, _ = dose_ruled
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    assert order_columns(site, first) is not None
    second = adjust_at_control(control, first)
    body = handover_row(control, second)
    assert body["order"]["supersedes"] == first
    # the control's signed entry names the SHA-256 of the new version's body, by hand
    with control.uow() as uow:
        entries = [
            json.loads(e.payload)["body"]
            for e in uow.session.scalars(
                select(LedgerEntry).where(LedgerEntry.ref == f"order_handover:{second}")
            )
        ]
    assert entries == [{"sha256": canonical_sha256(body), "order_id": second}]

    deliver(control, site)
    there, here = order_columns(control, second), order_columns(site, second)
    assert here is not None and here == there
    assert (here["dose_value"], here["dose_unit"]) == (3.5, "mg")
    assert (here["supersedes"], here["prescription_version"]) == (first, 2)
    assert fh.order_status(site, first) == "cancelled"
    assert handover_outcomes(site, second) == [("create", "taken here")]
    fh.run(site)
    assert (batches_of(site, first), batches_of(site, second)) == (0, 1)
    deliver(control, site)  # acted on once
    assert handover_outcomes(site, second) == [("create", "taken here")]


def test_a_new_version_for_an_order_made_at_the_site_keeps_its_batch_and_is_made_too(
    dose_ruled: tuple[App, App, None],
) -> None:
    """The first version already made at the site (its batch awaiting release): as when the
    dose is adjusted there, it keeps its batch, unchanged but marked superseded on record, and
    the new version is made for the batches to come."""
    site, control, _ = dose_ruled
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.run(site)
    made = fh.order_status(site, first)
    assert made not in ("received", "designed", "failed", "scheduled")
    second = adjust_at_control(control, first)
    deliver(control, site)
    assert order_columns(site, second) == order_columns(control, second)
    assert fh.order_status(site, first) == made  # not silently changed
    with site.uow() as uow:
        marks = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_id == first, AuditEntry.action == "superseded"
            )
        ).all()
        assert [m.new for m in marks] == [{"superseded_by": second}]
    fh.run(site)
    assert (batches_of(site, first), batches_of(site, second)) == (1, 1)


def test_a_new_version_for_an_order_scheduled_at_the_site_waits_until_it_is_made(
    dose_ruled: tuple[App, App, None],
) -> None:
    """Adjusting a scheduled order is refused where it is scheduled (its job would make the
    old dose). At the site the new version waits, the first version's job untouched, and is
    taken once that order has left the plan (here: made, so it keeps its batch)."""
    site, control, _ = dose_ruled
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.schedule(site, first)
    second = adjust_at_control(control, first)
    deliver(control, site)
    assert order_columns(site, second) is None
    assert fh.order_status(site, first) == "scheduled"
    assert handover_outcomes(site, second) == []
    (waits,) = waiting_rows(site, second)
    assert waits.reason is not None and "scheduled here" in waits.reason
    fh.run(site)  # the first version is made
    pass_again(site)
    assert order_columns(site, second) == order_columns(control, second)
    assert handover_outcomes(site, second) == [("create", "taken here")]


def test_a_new_version_for_an_order_cancelled_at_the_site_is_refused_on_record(
    dose_ruled: tuple[App, App, None],
) -> None:
    """An order cancelled at the site takes no new version (as a dose is not adjusted there
    for an ended order): refused, final, on record."""
    site, control, _ = dose_ruled
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    with site.uow() as uow:
        site.orders.cancel(uow, fh.actor(site, "pharmacist"), first, reason="patient moved")
    second = adjust_at_control(control, first)
    deliver(control, site)
    assert order_columns(site, second) is None
    ((action, outcome),) = handover_outcomes(site, second)
    assert action == "refuse" and "cancelled here: no batch will follow it" in outcome
    assert fh.order_status(site, first) == "cancelled"


# --- a handed-over order cancelled at the control ------------------------------------------------


def cancel_at_control(
    control: App, order_id: str, reason: str = "patient discharged", *, by: str = "clinician"
) -> None:
    """A user at the control cancels the order, as the API and the CLI do (scheduling's
    `cancel_order`: the control's copy of a site's order is never scheduled there)."""
    with control.uow() as uow:
        control.scheduling.cancel_order(uow, fh.actor(control, by), order_id, reason=reason)
    assert fh.order_status(control, order_id) == "cancelled"


def cancellation_row(control: App, order_id: str) -> AuditEntry:
    with control.uow() as uow:
        row = uow.session.scalar(
            select(AuditEntry).where(
                AuditEntry.entity_type == "order_cancellation", AuditEntry.entity_id == order_id
            )
        )
        assert row is not None and row.new is not None
        uow.session.expunge(row)
        return row


def cancellation_outcomes(site: App, order_id: str) -> list[tuple[str, str]]:
    """The site's applied rows about the control's cancellation of `order_id`."""
    return [
        (r.action, str((r.new or {}).get("outcome")))
        for r in applied_rows(site, "order_cancellation")
        if (r.new or {}).get("order_id") == order_id
    ]


def test_an_order_cancelled_at_the_control_is_cancelled_at_its_site_and_not_made(
    nodes: tuple[App, App],
) -> None:
    """Before, the site went on making an order the control had cancelled. The cancellation
    travels signed like the hand-over (ref `order_cancellation:<id>`, the SHA-256 of its audit
    body, computed here by hand) and the site, where the order is designed (not started),
    cancels it by its own rules: no batch is made there."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    deliver(control, site)
    assert fh.order_status(site, order_id) == "designed"
    cancel_at_control(control, order_id, "patient discharged")
    row = cancellation_row(control, order_id)
    assert row.new is not None
    assert {k: row.new[k] for k in ("format", "order_id", "site_id", "status", "reason")} == {
        "format": "nearfab-order-cancellation/1",
        "order_id": order_id,
        "site_id": fh.site_id(control, "GSTT-PH"),
        "status": "cancelled",
        "reason": "patient discharged",
    }
    with control.uow() as uow:
        entries = [
            json.loads(e.payload)["body"]
            for e in uow.session.scalars(
                select(LedgerEntry).where(LedgerEntry.ref == f"order_cancellation:{order_id}")
            )
        ]
    assert entries == [{"sha256": canonical_sha256(row.new), "order_id": order_id}]

    deliver(control, site)
    assert fh.order_status(site, order_id) == "cancelled"
    assert cancellation_outcomes(site, order_id) == [("create", "cancelled here")]
    with site.uow() as uow:  # the order's own transition names the control's decision
        moved = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "order",
                AuditEntry.entity_id == order_id,
                AuditEntry.action == "transition",
            )
        ).all()
    assert [(m.new or {}).get("status") for m in moved] == ["cancelled"]
    assert moved[0].reason is not None and "patient discharged" in moved[0].reason
    fh.run(site)
    assert batches_of(site, order_id) == 0
    deliver(control, site)  # acted on once
    assert cancellation_outcomes(site, order_id) == [("create", "cancelled here")]


def test_an_order_scheduled_at_the_site_leaves_the_plan_when_the_control_cancels_it(
    nodes: tuple[App, App],
) -> None:
    """Scheduled at the site: cancelled with its job (as a cancellation there does), so the
    machine makes nothing for it."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    deliver(control, site)
    job_id = fh.schedule(site, order_id)
    cancel_at_control(control, order_id)
    deliver(control, site)
    assert fh.order_status(site, order_id) == "cancelled"
    with site.uow() as uow:
        job = uow.session.get(Job, job_id)
        assert job is not None and job.status == "cancelled"
    assert cancellation_outcomes(site, order_id) == [
        ("create", "cancelled here, taken off the plan with its job")
    ]
    fh.run(site)
    assert batches_of(site, order_id) == 0


def test_an_order_made_at_the_site_is_not_cancelled_and_the_refusal_reaches_the_control(
    nodes: tuple[App, App],
) -> None:
    """A batch has started from the order at the site: its rules do not cancel it. Refused,
    final, on record naming the state; the control's copy says cancelled, the site's does not,
    and the site's refusal reaches the control with the site's other records."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.run(site)
    made = fh.order_status(site, order_id)
    assert made not in ("received", "designed", "scheduled", "failed", "cancelled")
    cancel_at_control(control, order_id)
    deliver(control, site)
    assert fh.order_status(site, order_id) == made  # unchanged, its batch kept
    ((action, outcome),) = cancellation_outcomes(site, order_id)
    assert action == "refuse"
    assert f"order {order_id} is {made} here: a batch has started from it" in outcome
    assert waiting_rows(site, order_id) == []  # final
    assert fh.order_status(control, order_id) == "cancelled"  # the two copies disagree

    deliver(site, control)  # what the control's user sees: the site's refusal, as it sent it
    with control.uow() as uow:
        held = [
            json.loads(r.payload)
            for r in uow.session.scalars(
                select(InboxRecord).where(
                    InboxRecord.origin_site == repl(site).site_id, InboxRecord.kind == "audit"
                )
            )
        ]
    refusals = [
        h
        for h in held
        if h.get("entity_type") == "replication_applied"
        and (h.get("new") or {}).get("order_id") == order_id
        and h.get("action") == "refuse"
    ]
    assert [r["new"]["outcome"] for r in refusals] == [outcome]


def test_a_cancellation_of_an_order_not_taken_at_the_site_yet_waits_for_it(
    nodes: tuple[App, App],
) -> None:
    """The hand-over waits (its master-file version not effective at the site yet) when the
    control cancels the order: the cancellation waits too (`order_not_held`, on record once),
    and in the pass that takes the order it is cancelled, before the runner could plan it."""
    site, control = nodes
    order_id = order_for(control, "GSTT-PH")
    mf_id = fh.master_file_id(site, HYDROCORTISONE)
    fh.edit(site, MasterFile, mf_id, status="approved")  # held, not yet effective here
    deliver(control, site)
    cancel_at_control(control, order_id)
    deliver(control, site)
    rows = waiting_rows(site, order_id)
    assert [(r.new or {}).get("code") for r in rows] == [
        "master_file_not_effective",
        "order_not_held",
    ]
    assert rows[1].new is not None and rows[1].new["entity_type"] == "order_cancellation"
    assert cancellation_outcomes(site, order_id) == []
    fh.edit(site, MasterFile, mf_id, status="effective")
    pass_again(site)
    assert handover_outcomes(site, order_id) == [("create", "taken here")]
    assert cancellation_outcomes(site, order_id) == [("create", "cancelled here")]
    assert fh.order_status(site, order_id) == "cancelled"
