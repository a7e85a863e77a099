"""Issue 17, second slice: a site node acts on what the control site sends.

A recall decided at the control node arrives through a real Mosquitto and marks the site's
packs through custody's recall service, once, whatever the redeliveries; a pack the site
dispensed while cut off is re-verified when the control's records arrive, and one found
recalled raises an alert naming the patient to contact; the control's use cases (QP release,
master-file changes) are refused at a site node. Expected values come from the site's own
tables read directly (its packs, its dispenses), never from the replication code's answers."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.cli_helpers import run
from tests.quality.release_helpers import token
from tests.replication import test_replication_mqtt as base
from tests.replication.test_master_file_across import signed_entry_held_back
from tests.replication.test_release_across import canonical_sha256, control_key_known, deliver
from tests.replication.test_replication_mqtt import _forged, repl, wait_for
from tests.replication.test_site_node_work import order_for
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.common.node import CONTROL_ONLY
from nearfab.custody import CustodyAlert, Recall, SerialUnit, make_identifier
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry
from nearfab.orders.models import Order
from nearfab.replication import OutboxPublisher, start_inbox
from nearfab.replication.decisions import APPLIED_ENTITY, REFUSED_ENTITY, alerts_for_site
from nearfab.telemetry import BrokerAddress
from nearfab.web.server import create_web_app

# the fixtures: a private Mosquitto, two nodes, the two nodes after a batch made at the site
broker, nodes, made_at_site = base.broker, base.nodes, base.made_at_site

HC_LOT = "HC-FIL-2.5-GSTT-PH-001"  # the seeded hydrocortisone lot at GSTT-PH (demo seed)


def released_batch(site: App, medication: str = "hydrocortisone") -> str:
    """A batch made at the site node and certified. The certification is the control site's
    (refused at a site node, test_control_only_use_cases_…); applying a release sent by the
    control is not in this slice, so for this one step the test lets the node act as a
    control node (its services' shared `NodeRole`), to have released packs here."""
    batch_id = fh.make_batch(site, medication=medication)
    fh.prepare_release(site, batch_id)
    node = site.quality.node
    control_site_id, node.control_site_id = node.control_site_id, None
    try:
        with site.uow() as uow:
            site.quality.decide(
                uow,
                fh.actor(site, "qp"),
                batch_id,
                decision="release",
                password=fh.TEST_PASSWORD,
                meaning="QP certification: batch released",
                reason="record reviewed by the QP",  # the rule may ask for the QP's review
            )
    finally:
        node.control_site_id = control_site_id
    assert site.quality.node.site_node
    return batch_id


def _keyed_and_released(site: App, control: App) -> str:
    """The first two steps of the recall tests: provisioning (the control signs its recalls:
    `control_key_known`), then a batch made at the site node and certified
    (`released_batch`); its id."""
    control_key_known(control, site)
    return released_batch(site)


#: (site, control, batch id): `nodes` after `_keyed_and_released` (copied per test)
released_at_site = base.nodes_world(_keyed_and_released)


def units(app: App, batch_id: str) -> list[SerialUnit]:
    with app.uow() as uow:
        found = app.custody.units_of_batch(uow, batch_id)
        for unit in found:
            uow.session.expunge(unit)
        return found


def dispense(site: App, unit: SerialUnit) -> str:
    """Dispense the pack to its patient at GSTT-PH; the patient's reference."""
    with site.uow() as uow:
        ref = site.orders.patient(uow, site.orders.get(uow, unit.order_id).patient_id).ref
    scan = (
        "]d2"
        + make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry).datamatrix_data()
    )
    with site.uow() as uow:
        site.custody.dispense(uow, fh.actor(site, "pharmacist"), scan=scan, patient_ref=ref)
    return ref


def recall_at_control(control: App, lot: str) -> Recall:
    with control.uow() as uow:
        return control.custody_chain.recalls.create(
            uow, fh.actor(control, "qp"), lot=lot, reason="supplier assay out of specification"
        )


def control_sends(control: App, broker: Broker) -> None:
    publisher = OutboxPublisher(BrokerAddress("127.0.0.1", broker.port), "nearfab-node-control")
    try:
        result = repl(control).replicate_once(control.uow, publisher)
    finally:
        publisher.close()
    assert result.error is None and result.pending == 0, result


def statuses(app: App, batch_id: str) -> set[str]:
    return {u.status for u in units(app, batch_id)}


def audit_rows(app: App, entity_type: str) -> list[AuditEntry]:
    with app.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_type == entity_type)
                .order_by(AuditEntry.seq)
            )
        )
        for row in rows:
            uow.session.expunge(row)
        return rows


def recalls_applied(app: App) -> list[AuditEntry]:
    """The site's applied rows about the control's recalls (the control's other records, such
    as the seed's master-file publications, have theirs)."""
    return [
        r
        for r in audit_rows(app, APPLIED_ENTITY)
        if r.new is not None and r.new.get("entity_type") == "recall"
    ]


def count(app: App, model: type[Any]) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_recall_from_the_control_marks_the_site_packs_once_naming_the_control_record(
    released_at_site: tuple[App, App, str], broker: Broker
) -> None:
    # `nodes`, then control_key_known(control, site) and released_batch(site)
    site, control, batch_id = released_at_site
    packs = units(site, batch_id)
    assert packs and statuses(site, batch_id) == {"released"}
    assert fh.batch(site, batch_id).material_lot_number == HC_LOT
    recalls_before = count(site, Recall)
    recall = recall_at_control(control, HC_LOT)
    address = BrokerAddress("127.0.0.1", broker.port)
    inbox = start_inbox(repl(site), site.uow, address, control_site_id=repl(control).site_id)
    try:
        control_sends(control, broker)
        assert wait_for(lambda: statuses(site, batch_id) == {"recalled"})
    finally:
        inbox.stop()
    # the recall went through the site's own recall service: one recall here, for the lot
    with site.uow() as uow:
        here = uow.session.scalars(select(Recall).order_by(Recall.created_at)).all()[-1]
        (record,) = [
            r
            for r in repl(site).received(uow, repl(control).site_id)
            if r.kind == "audit" and json.loads(r.payload)["entity_type"] == "recall"
        ]
    assert count(site, Recall) == recalls_before + 1
    assert (here.scope_ref, here.created_by) == (HC_LOT, "system:replication")
    assert recall.id in here.reason and record.id in here.reason
    (applied,) = recalls_applied(site)
    assert applied.actor_id == "system:replication" and applied.entity_id == record.id
    assert applied.new is not None
    assert (applied.new["record_hash"], applied.new["entity_id"], applied.new["lot"]) == (
        record.record_hash,
        recall.id,
        HC_LOT,
    )
    # every pack of the batch was marked by the site's recall, with the site's audit row
    unit_rows = [r for r in audit_rows(site, "unit") if r.new and r.new.get("status") == "recalled"]
    assert {r.entity_id for r in unit_rows} >= {u.id for u in packs}
    # redelivered and applied again: nothing more happens
    with site.uow() as uow:
        held = repl(site).received(uow, repl(control).site_id)
    with site.uow() as uow:
        again = repl(site).apply(uow, [r.to_message() for r in held])
    assert again.applied == 0 and len(again.problems) == len(held)  # all duplicates
    assert repl(site).decisions.apply_pending(site.uow).applied == []
    assert count(site, Recall) == recalls_before + 1
    assert len(recalls_applied(site)) == 1


def test_a_recall_is_applied_only_with_the_controls_signed_entry_naming_it(
    released_at_site: tuple[App, App, str],
) -> None:
    """A recall is a control decision like a release: the site marks its packs only once the
    control's Ed25519-signed ledger entry names the SHA-256 of the recall's audit body (a
    record altered or forged on the broker has no such entry)."""
    # `nodes`, then control_key_known(control, site) and released_batch(site)
    site, control, batch_id = released_at_site
    recall = recall_at_control(control, HC_LOT)
    held = signed_entry_held_back(control, site, f"recall:{recall.id}")
    with control.uow() as uow:
        row = uow.session.scalar(
            select(AuditEntry).where(
                AuditEntry.entity_type == "recall", AuditEntry.entity_id == recall.id
            )
        )
        assert row is not None and row.new is not None
        body = dict(row.new)
    assert held["body"] == {"sha256": canonical_sha256(body), "recall_id": recall.id}
    assert statuses(site, batch_id) == {"released"} and recalls_applied(site) == []
    held["give_the_rest"]()
    assert statuses(site, batch_id) == {"recalled"} and len(recalls_applied(site)) == 1


def test_a_record_that_fails_unexpectedly_does_not_hold_up_a_recall_after_it(
    released_at_site: tuple[App, App, str],
) -> None:
    """A control record whose use case fails with an unexpected error (a bug, the database)
    is not a refusal: nothing is on record and the next pass tries it again; meanwhile the
    records after it, here a recall, are acted on. Fault injected: the site's order intake
    fails once for the hand-over, as an unforeseen error would."""
    # `nodes`, then control_key_known(control, site) and released_batch(site)
    site, control, batch_id = released_at_site
    order_id = order_for(control, "GSTT-PH")  # handed over to the site: first in seq order
    recall_at_control(control, HC_LOT)  # then the recall
    decisions = repl(site).decisions
    assert decisions is not None
    real = decisions._orders

    class Broken:
        def take_handed_over(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("disk I/O error")

    decisions._orders = Broken()
    try:
        deliver(control, site)  # applies, then acts on what it holds
    finally:
        decisions._orders = real
    assert statuses(site, batch_id) == {"recalled"}  # the recall was not held up
    with site.uow() as uow:
        assert uow.session.get(Order, order_id) is None  # not taken, and not refused either
    assert [
        r for r in audit_rows(site, "replication_applied") if (r.new or {}).get("order_id")
    ] == []
    again = decisions.apply_pending(site.uow)  # the next pass: taken now
    assert again.failed == {} and len(again.applied) == 1
    with site.uow() as uow:
        assert uow.session.get(Order, order_id) is not None


def test_a_recall_in_a_chain_that_does_not_verify_is_refused_and_named(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    batch_id = released_batch(site)
    recall_at_control(control, HC_LOT)
    with control.uow() as uow:
        repl(control).capture_now(uow)
    with control.uow() as uow:
        records = repl(control).pending(uow, 10_000)
    assert records
    # the first record's content rewritten, its record hash made to match: the chain check
    # names it (the audit row's hash no longer covers its content)
    first = records[0]
    body = json.loads(first.payload)
    body["reason"] = "rewritten in transit"
    forged = _forged(first, payload=json.dumps(body, sort_keys=True, separators=(",", ":")))
    with site.uow() as uow:
        repl(site).apply(uow, [forged.to_message(), *[r.to_message() for r in records[1:]]])
    result = repl(site).decisions.apply_pending(site.uow)
    # every decision the site would act on is refused (the recall, and the seed's master-file
    # publications, also in the control's chain): none is acted on
    acted_on = [
        r.id
        for r in records
        if json.loads(r.payload).get("entity_type") in ("recall", "master_file_published")
    ]
    assert result.applied == [] and sorted(result.refused) == sorted(acted_on)
    assert statuses(site, batch_id) == {"released"}  # nothing marked
    refusals = audit_rows(site, REFUSED_ENTITY)
    assert sorted(r.entity_id for r in refusals) == sorted(acted_on)
    for refused in refusals:
        assert refused.actor_id == "system:replication" and refused.action == "refuse"
        assert refused.reason and "do not verify" in refused.reason
    # asked again: refused, but named once
    assert repl(site).decisions.apply_pending(site.uow).refused
    assert len(audit_rows(site, REFUSED_ENTITY)) == len(acted_on)


def test_a_pack_dispensed_offline_and_recalled_meanwhile_raises_an_alert_naming_the_patient(
    nodes: tuple[App, App], broker: Broker
) -> None:
    site, control = nodes
    control_key_known(control, site)  # provisioning: the control signs its recalls
    recalled_batch = released_batch(site)  # hydrocortisone: the lot the control recalls
    good_batch = released_batch(site, medication="propranolol")  # another lot, stays good
    assert fh.batch(site, good_batch).material_lot_number != HC_LOT
    address = BrokerAddress("127.0.0.1", broker.port)
    inbox = start_inbox(repl(site), site.uow, address, control_site_id=repl(control).site_id)
    try:
        broker.stop()  # the site is cut off
        # the inbox has seen the cut (else its `connected` would still be the old session's)
        assert wait_for(lambda: not inbox.connected.is_set(), 30)
        site.clock.sleep(60)
        to_recall, stays_good = units(site, recalled_batch)[0], units(site, good_batch)[0]
        patient = dispense(site, to_recall)
        other_patient = dispense(site, stays_good)
        site.clock.sleep(60)
        recall_at_control(control, HC_LOT)  # meanwhile, at the control site
        with site.uow() as uow:
            assert not alerts_for_site(uow, repl(site).site_id)  # the site cannot know yet
        broker.start()
        assert wait_for(lambda: inbox.connected.is_set(), 30)  # subscribed again (SUBACK)
        control_sends(control, broker)

        def alerted() -> bool:
            with site.uow() as uow:
                return bool(alerts_for_site(uow, repl(site).site_id))

        assert wait_for(alerted, 60)
        time.sleep(0.3)  # any redelivery arrives and is judged
    finally:
        inbox.stop()
    with site.uow() as uow:
        alerts = alerts_for_site(uow, repl(site).site_id)
        for a in alerts:
            uow.session.expunge(a)
    (alert,) = alerts  # one pack recalled, one alert; none for the pack that stayed good
    assert alert.unit_id == to_recall.id and alert.site_id == repl(site).site_id
    assert alert.detail["patient_ref"] == patient
    assert patient in alert.detail["message"] and to_recall.serial in alert.detail["message"]
    assert other_patient not in json.dumps(alert.detail)
    assert statuses(site, good_batch) >= {"dispensed"}
    # the pass is on record, and a second pass raises nothing again
    (reverified,) = audit_rows(site, "replication_reverify")
    assert reverified.new is not None and reverified.new["packs"] == 2
    alerts_before = count(site, CustodyAlert)
    repl(site).decisions.apply_pending(site.uow)
    assert count(site, CustodyAlert) == alerts_before
    assert len(audit_rows(site, "replication_reverify")) == 1


def test_a_recall_held_after_a_pass_at_its_own_time_still_raises_the_alert(
    nodes: tuple[App, App],
) -> None:
    """The control stamps every record of a transaction with one time, and the broker may hand
    them over in several batches (it did under load: one record, then the twelve others with
    the recall). A pass run on the first batch must not settle the packs up to that time: the
    recall, created at the same time, arrives after it and must still raise the alert. Here
    the first batch ends with the recall's own row and the control's signed entry naming it
    comes in the second: the recall is acted on only then."""
    site, control = nodes
    deliver(control, site)  # provisioning (the control's signing key), and the control's past
    batch_id = released_batch(site)
    to_recall = units(site, batch_id)[0]
    site.clock.sleep(60)
    patient = dispense(site, to_recall)
    site.clock.sleep(60)
    recall_at_control(control, HC_LOT)
    with control.uow() as uow:
        repl(control).capture_now(uow)
    with control.uow() as uow:
        records = repl(control).pending(uow, 10_000)
    # what the test relies on: more than one record, all of one time: the recall's audit row,
    # then the control's signed entry naming it (without which the recall waits)
    (at,) = [
        i
        for i, r in enumerate(records)
        if r.kind == "audit" and json.loads(r.payload)["entity_type"] == "recall"
    ]
    at += 1  # the first batch ends with the recall's row; its signed entry comes later
    assert at < len(records) and len({r.created_at for r in records}) == 1
    with site.uow() as uow:
        repl(site).apply(uow, [r.to_message() for r in records[:at]])
    assert repl(site).decisions.apply_pending(site.uow).alerts == []  # nothing recalled yet
    with site.uow() as uow:
        assert not alerts_for_site(uow, repl(site).site_id)
        repl(site).apply(uow, [r.to_message() for r in records[at:]])
    result = repl(site).decisions.apply_pending(site.uow)
    with site.uow() as uow:
        alerts = alerts_for_site(uow, repl(site).site_id)
        for a in alerts:
            uow.session.expunge(a)
    (alert,) = alerts
    assert result.alerts == [alert.id]
    assert alert.unit_id == to_recall.id and alert.detail["patient_ref"] == patient
    assert statuses(site, batch_id) >= {"recalled"}


def test_control_only_use_cases_are_refused_at_a_site_node(
    made_at_site: tuple[App, App, str],
) -> None:
    site, control, batch_id = made_at_site  # `nodes`, then fh.make_batch(site)
    with pytest.raises(Refused) as caught, site.uow() as uow:
        site.quality.decide(
            uow,
            fh.actor(site, "qp"),
            batch_id,
            decision="release",
            password=fh.TEST_PASSWORD,
            meaning="QP certification: batch released",
        )
    assert caught.value.code == "control_site_only"
    assert caught.value.message == f"a QP release or rejection {CONTROL_ONLY}"
    assert fh.batch(site, batch_id).status == "completed"  # not released
    mf_id = fh.master_file_id(site, HYDROCORTISONE)
    with (
        pytest.raises(Refused, match="needs the control site: this node is a site node"),
        site.uow() as uow,
    ):
        site.master_files.approve(uow, fh.actor(site, "qp"), mf_id, password=fh.TEST_PASSWORD)
    # the control node is not a site node: its services run these use cases
    assert site.quality.node.site_node and not control.quality.node.site_node
    assert site.master_files.node is site.quality.node  # one role per process


def test_the_api_the_cli_and_the_screen_of_a_site_node_refuse_the_release_naming_why(
    made_at_site: tuple[App, App, str],
) -> None:
    """The same refusal through the entry points a QP uses: the API answers 409 with the
    reason, the CLI exits non-zero saying it, the release screen shows it; the batch stays
    awaiting its decision."""
    site, _control, batch_id = made_at_site  # `nodes`, then fh.make_batch(site)
    api = TestClient(create_web_app(site))
    body = {
        "decision": "release",
        "password": fh.TEST_PASSWORD,
        "meaning": "QP certification: batch released",
        "username": "qp",
    }
    answer = api.post(f"/api/v1/batches/{batch_id}/decision", json=body, headers=token(site, "qp"))
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == {
        "code": "control_site_only",
        "field": "node",
        "message": "a QP release or rejection needs the control site: this node is a site node",
    }
    out = run(
        [
            "release", "sign", batch_id, "--decision", "release", "--user", "qp",
            "--password", fh.TEST_PASSWORD, "--meaning", "QP certification: batch released",
        ],
        env={"NEARFAB_NODE_SITE": "GSTT-PH"},
        data_dir=Path(site.settings.data_dir),
    )  # fmt: skip
    assert out.returncode != 0
    assert "needs the control site: this node is a site node" in out.stdout + out.stderr
    # the release screen: the QP's signing form answers with the reason, nothing signed
    qp = fh.web_login(site, "qp")
    queue = qp.get("/release").text
    form = {"csrf_token": fh.csrf(queue), **body}
    page = qp.post(f"/release/{batch_id}", data=form)
    assert page.status_code == 409
    number = fh.batch(site, batch_id).batch_number
    assert (
        f"Batch {number} not signed: a QP release or rejection needs the control site: "
        "this node is a site node"
    ) in html.unescape(page.text)
    assert fh.batch(site, batch_id).status == "completed"
    # the master file's screen: the approval form answers with the same reason
    mf_id = fh.master_file_id(site, HYDROCORTISONE)
    version = qp.get(f"/master-files/{mf_id}").text
    answer_page = qp.post(
        f"/master-files/{mf_id}/approve",
        data={"csrf_token": fh.csrf(version), "password": fh.TEST_PASSWORD, "username": "qp"},
    )
    assert (
        "Refused: a master-file change needs the control site: this node is a site node"
        in html.unescape(answer_page.text)
    )
