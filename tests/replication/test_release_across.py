"""Issue 17: a site node's batch is released by the control site's QP.

The site node sends a release dossier; the control node's QP signs a decision on it with a
Part 11 signature; the decision travels back and the site records it with the QP's signature
row. What is checked comes from each node's own tables read directly (the batch, its review,
its packs, the signature rows), and the signature is re-checked here from the documented
formula (SHA-256 of the canonical JSON of the signed content; docs/accounts-and-signatures.md)
with hashlib, not with the code that made it."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.cli_helpers import run
from tests.quality.release_helpers import token
from tests.replication import test_replication_mqtt as base
from tests.replication.test_replication_mqtt import repl, wait_for
from tests.telemetry.test_mqtt import Broker

from nearfab.bootstrap import App
from nearfab.common.errors import Forbidden, Refused, Unauthenticated, ValidationFailed
from nearfab.custody import SerialUnit, export_site_keys, import_site_keys, parse_site_keys
from nearfab.demo import AUTOPILOT
from nearfab.demo_loop import DemoLoop
from nearfab.identity import AuditEntry, Signature, system_actor
from nearfab.quality import ReleaseReview
from nearfab.replication import OutboxPublisher, start_inbox
from nearfab.replication.decisions import APPLIED_ENTITY
from nearfab.replication.releases import ControlReleases, SiteDossiers
from nearfab.telemetry import BrokerAddress
from nearfab.web.server import create_web_app

broker, nodes = base.broker, base.nodes  # the fixtures: a private Mosquitto, two nodes

MEANING = "QP certification: batch released"


def canonical_sha256(value: Any) -> str:
    """docs/accounts-and-signatures.md: SHA-256 of the canonical JSON (sorted keys, no
    spaces, UTF-8) of the record's content."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dossiers_of(site: App) -> SiteDossiers:
    assert site.dossiers is not None
    return site.dossiers


def releases_of(control: App) -> ControlReleases:
    assert control.remote_releases is not None
    return control.remote_releases


def control_key_known(control: App, site: App) -> None:
    """Provisioning: the control site's ledger key (which signs its decisions) made at the
    control and its public half registered at the site (`nearfab node keys export` there,
    `keys import` here), as `demo --nodes` does before the copies. Idempotent."""
    control_id = repl(control).site_id
    with control.uow() as uow:
        if not export_site_keys(uow.session, control_id)["keys"]:
            control.custody_chain.ledger.rotate(
                uow, system_actor("provisioning"), control_id, reason="the control's key"
            )
    with control.uow() as uow:
        document = export_site_keys(uow.session, control_id)
    with site.uow() as uow:
        import_site_keys(
            uow,
            system_actor("provisioning"),
            parse_site_keys(document),
            own_site_id=repl(site).site_id,
            reason="the control site's keys, exported there",
        )


def site_keys_known(site: App, control: App) -> None:
    """Provisioning: the site node's ledger keys (which sign its dossiers) registered at the
    control (`nearfab node keys export` at the site, `keys import` at the control). Keys
    already held are skipped; idempotent."""
    with site.uow() as uow:
        document = export_site_keys(uow.session, repl(site).site_id)
    with control.uow() as uow:
        import_site_keys(
            uow,
            system_actor("provisioning"),
            parse_site_keys(document),
            own_site_id=repl(control).site_id,
            reason="the site node's keys, exported there",
        )


def deliver(src: App, dst: App) -> int:
    """Everything `src` has not sent yet, applied at `dst` as its inbox does (then, at a site
    node, the control's decisions acted on); the records are marked sent. In-process, no
    broker: the broker path is the first test's."""
    if repl(dst).decisions is not None:  # a site node: provisioned with the control's key
        control_key_known(src, dst)
    else:  # the control: provisioned with the site's keys
        site_keys_known(src, dst)
    records = unsent(src)
    with dst.uow() as uow:
        repl(dst).apply(uow, [r.to_message() for r in records])
    with src.uow() as uow:
        ids = [r.id for r in records]
        repl(src).mark_published(uow, ids, ids)  # commits
    if repl(dst).decisions is not None:
        repl(dst).decisions.apply_pending(dst.uow)
    return len(records)


def dossier_at_control(site: App, control: App, *, ready: bool = True) -> str:
    """A batch made at the site node, its dossier sent and held at the control; its id."""
    batch_id = fh.make_batch(site, ready=ready)
    dossiers_of(site).send_ready(site.uow)
    deliver(site, control)
    return batch_id


def unsent(app: App) -> list[Any]:
    """Every record the node has not sent yet, captured first."""
    with app.uow() as uow:
        repl(app).capture_now(uow)
    with app.uow() as uow:
        return list(repl(app).pending(uow, 100_000))


def review_of(app: App, batch_id: str) -> ReleaseReview:
    with app.uow() as uow:
        row = uow.session.scalar(select(ReleaseReview).where(ReleaseReview.batch_id == batch_id))
        assert row is not None
        uow.session.expunge(row)
        return row


def signature_row(app: App, sig_id: str) -> Signature | None:
    with app.uow() as uow:
        row = uow.session.get(Signature, sig_id)
        if row is not None:
            uow.session.expunge(row)
        return row


def pack_statuses(app: App, batch_id: str) -> set[str]:
    with app.uow() as uow:
        return set(
            uow.session.scalars(select(SerialUnit.status).where(SerialUnit.batch_id == batch_id))
        )


def applied_rows(app: App, about: str | None = "remote_release") -> list[AuditEntry]:
    """The site's applied rows about the control's records of entity `about` (None: all)."""
    with app.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_type == APPLIED_ENTITY)
                .order_by(AuditEntry.seq)
            )
        )
        for row in rows:
            uow.session.expunge(row)
    return [r for r in rows if about is None or (r.new or {}).get("entity_type") == about]


def decide(control: App, batch_id: str, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "decision": "release",
        "password": fh.TEST_PASSWORD,
        "meaning": MEANING,
        **kw,
    }
    who = args.pop("who", "qp")
    if "shown_hash" not in args:  # the QP was shown the newest dossier
        with control.uow() as uow:
            args["shown_hash"] = releases_of(control).newest(uow, batch_id).dossier["shown_hash"]
    with control.uow() as uow:
        return releases_of(control).decide(uow, fh.actor(control, who), batch_id, **args)


def batch_id_of(dossier: Any) -> str:
    return str(dossier.dossier["batch_id"])


def waiting(control: App) -> list[Any]:
    with control.uow() as uow:
        return releases_of(control).dossiers(uow)


def test_a_site_batch_is_released_by_the_control_qp_and_the_site_records_it_through_mosquitto(
    nodes: tuple[App, App], broker: Broker
) -> None:
    site, control = nodes
    assert site.dossiers is not None and site.remote_releases is None
    assert control.remote_releases is not None and control.dossiers is None
    control_key_known(control, site)
    batch_id = fh.make_batch(site)  # made here, steps signed, audit trail reviewed
    site_keys_known(site, control)  # the key that signs its dossiers, registered there
    made = fh.batch(site, batch_id)
    assert made.status == "completed" and pack_statuses(site, batch_id) == {"quarantine"}
    at_site = fh.web_login(site, "qp")
    assert "Not sent to the control site yet" in at_site.get("/release").text

    assert dossiers_of(site).send_ready(site.uow) == [batch_id]
    assert dossiers_of(site).send_ready(site.uow) == []  # unchanged: not sent again
    assert "Dossier sent to the control site's QP" in html.unescape(at_site.get("/release").text)

    address = BrokerAddress("127.0.0.1", broker.port)
    control_inbox = start_inbox(
        repl(control), control.uow, address, control_site_id=repl(control).site_id
    )
    site_inbox = start_inbox(repl(site), site.uow, address, control_site_id=repl(control).site_id)
    try:
        base.send(site, broker)
        assert wait_for(lambda: len(waiting(control)) == 1)
        (dossier,) = waiting(control)
        # what the control's QP is shown is the site's own record, as the site holds it
        assert dossier.dossier["content"]["batch"] == json.loads(
            json.dumps(made.content(), default=lambda v: v.isoformat())
        )
        assert dossier.dossier["blockers"] == []
        assert dossier.dossier["shown_hash"] == canonical_sha256(dossier.dossier["content"])
        assert dossier.origin_site == repl(site).site_id

        body = decide(control, batch_id, shown_hash=dossier.dossier["shown_hash"])
        sig_at_control = signature_row(control, body["signature"]["id"])
        assert sig_at_control is not None and sig_at_control.record_id == batch_id
        # the signature binds the dossier's content with the decision (hand-computed hash)
        signed = {**dossier.dossier["content"], "decision": "release", "reason": None}
        assert sig_at_control.record_hash == canonical_sha256(signed)
        assert waiting(control) == []

        publisher = OutboxPublisher(address, "nearfab-node-control")
        try:
            result = repl(control).replicate_once(control.uow, publisher)
        finally:
            publisher.close()
        assert result.error is None and result.pending == 0
        assert wait_for(lambda: fh.batch(site, batch_id).status == "released")
    finally:
        control_inbox.stop()
        site_inbox.stop()

    review = review_of(site, batch_id)
    qp = fh.actor(control, "qp")
    assert review.status == "released" and review.decision == "release"
    assert review.decided_by == qp.user_id  # the QP's decision, not the replicator's
    sig_here = signature_row(site, review.signature_id or "")
    assert sig_here is not None
    # the same signature row as the control's: id, signer, time, hashes
    for name in ("signer_id", "signer_name", "meaning", "record_hash", "signature_hash"):
        assert getattr(sig_here, name) == getattr(sig_at_control, name), name
    assert sig_here.signed_at.replace(tzinfo=None) == sig_at_control.signed_at.replace(tzinfo=None)
    assert pack_statuses(site, batch_id) == {"released"}
    assert fh.order_status(site, made.order_id) == "released"
    with site.uow() as uow:
        assert site.quality.signature_valid(uow, site.quality.get_review(uow, batch_id)) is True
    (applied,) = applied_rows(site)
    assert applied.new is not None and applied.new["outcome"] == "released here"
    assert applied.new["batch_id"] == batch_id and applied.action == "create"
    # what the site wrote in recording it (its audit rows, the release in its ledger chain)
    # reaches the control and verifies there
    deliver(site, control)
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok, status.to_dict()


def test_a_record_changed_after_the_dossier_is_not_released_and_the_new_dossier_waits(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    batch_id = dossier_at_control(site, control)
    (first,) = waiting(control)
    decide(control, batch_id, shown_hash=first.dossier["shown_hash"])
    # meanwhile at the site: a deviation is reported on the batch (the record the QP signs)
    with site.uow() as uow:
        site.quality.records.open_deviation(
            uow,
            fh.actor(site, "pharmacist"),
            batch_id,
            description="tablet found chipped at inspection",
        )  # commits
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "completed"  # not released
    assert pack_statuses(site, batch_id) == {"quarantine"}
    (applied,) = applied_rows(site)
    assert applied.action == "refuse" and applied.new is not None
    assert "not the one the QP signed" in applied.new["outcome"]
    assert signature_row(site, applied.new["signature_id"]) is None  # nothing half-written
    deliver(control, site)  # acted on once: a second pass records nothing more
    assert len(applied_rows(site)) == 1

    assert dossiers_of(site).send_ready(site.uow) == [batch_id]  # the changed record
    deliver(site, control)
    (second,) = waiting(control)
    assert second.record_id != first.record_id
    descriptions = [d["description"] for d in second.dossier["content"]["deviations"]]
    assert "tablet found chipped at inspection" in descriptions
    with pytest.raises(Refused) as superseded:  # signing what was shown before: refused
        decide(control, batch_id, shown_hash=first.dossier["shown_hash"])
    assert superseded.value.code == "record_changed"
    assert "newer one" in superseded.value.message
    decide(control, batch_id, decision="reject", reason="chipped tablet")  # the newest: decided


def test_a_rejection_at_the_control_rejects_the_batch_and_its_packs_at_the_site(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    batch_id = dossier_at_control(site, control)
    (dossier,) = waiting(control)
    with pytest.raises(ValidationFailed) as no_reason:
        decide(control, batch_id_of(dossier), decision="reject")
    assert no_reason.value.field == "reason"
    decide(control, batch_id_of(dossier), decision="reject", reason="coating defect seen on photos")
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "rejected"
    assert pack_statuses(site, batch_id) == {"rejected"}
    review = review_of(site, batch_id)
    assert review.status == "rejected" and review.reason == "coating defect seen on photos"


def test_what_the_control_refuses_is_on_record_and_nothing_is_signed(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    not_ready = fh.make_batch(site, ready=False)  # steps unsigned, audit trail not reviewed
    dossiers_of(site).send_ready(site.uow)
    deliver(site, control)
    (dossier,) = waiting(control)
    assert dossier.dossier["blockers"], "the site names why it is not ready"

    def signatures_at_control() -> int:
        with control.uow() as uow:
            return len(uow.session.scalars(select(Signature.id)).all())

    before = signatures_at_control()
    with pytest.raises(Refused) as blocked:
        decide(control, batch_id_of(dossier))
    assert blocked.value.code == "not_ready"
    assert dossier.dossier["blockers"][0] in blocked.value.message
    with pytest.raises(Unauthenticated):
        decide(
            control,
            batch_id_of(dossier),
            decision="reject",
            reason="record incomplete",
            password="not the password",
        )
    with pytest.raises(Forbidden):
        decide(control, batch_id_of(dossier), who="pharmacist")
    with pytest.raises(Refused) as shown:
        decide(control, batch_id_of(dossier), shown_hash="0" * 64)
    assert shown.value.code == "record_changed"
    assert signatures_at_control() == before
    with control.uow() as uow:
        refusals = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "batch",
                AuditEntry.entity_id == not_ready,
                AuditEntry.action == "refuse",
            )
        ).all()
    assert len(refusals) >= 3  # each failed attempt at a QP decision is a record

    # a rejection needs no ready record: the QP may reject what is not ready
    decide(control, batch_id_of(dossier), decision="reject", reason="batch record incomplete")
    with pytest.raises(Refused) as twice:
        decide(control, batch_id_of(dossier), decision="reject", reason="again")
    assert twice.value.code == "already_decided"


def test_the_api_at_the_control_node_answers_each_role_from_each_site(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    batch_id = dossier_at_control(site, control)
    fh.site_user(control, "qp-man", "qp", "MAN-PH")  # a QP of another site
    fh.site_user(control, "pharm-gstt", "pharmacist", "GSTT-PH")  # the batch's site, no QP
    api = TestClient(create_web_app(control))
    url = f"/api/v1/release/remote/{batch_id}"

    listed = api.get("/api/v1/release/remote", headers=token(control, "qp"))
    assert listed.status_code == 200
    assert [d["batch_id"] for d in listed.json()] == [batch_id]
    detail = api.get(url, headers=token(control, "qp")).json()
    assert detail["content"]["batch"]["batch_number"] == fh.batch(site, batch_id).batch_number
    assert detail["shown_hash"] == canonical_sha256(detail["content"])

    # another site's QP: the batch is not confirmed to exist, and nothing is signed
    other = token(control, "qp-man")
    assert api.get("/api/v1/release/remote", headers=other).json() == []
    assert api.get(url, headers=other).status_code == 404
    sign = {
        "decision": "release",
        "meaning": MEANING,
        "password": fh.TEST_PASSWORD,
        "shown_hash": detail["shown_hash"],
    }
    refused = api.post(f"{url}/decision", json={**sign, "username": "qp-man"}, headers=other)
    assert refused.status_code == 404
    # the batch's own site's pharmacist sees the queue but does not sign
    pharm = token(control, "pharm-gstt")
    assert api.get(url, headers=pharm).status_code == 200  # release.queue.read: pharmacists too
    answer = api.post(f"{url}/decision", json={**sign, "username": "pharm-gstt"}, headers=pharm)
    assert answer.status_code == 403
    # the dossier shown must be named: a body without it names the field
    missing = {k: v for k, v in sign.items() if k != "shown_hash"}
    bad = api.post(
        f"{url}/decision", json={**missing, "username": "qp"}, headers=token(control, "qp")
    )
    assert bad.status_code == 422 and "shown_hash" in bad.text
    assert waiting(control) != []  # nothing decided by any of these

    done = api.post(
        f"{url}/decision", json={**sign, "username": "qp"}, headers=token(control, "qp")
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["decision"] == "release" and body["batch_id"] == batch_id
    assert body["signature"]["signer_id"] == fh.actor(control, "qp").user_id
    assert waiting(control) == []
    again = api.post(
        f"{url}/decision", json={**sign, "username": "qp"}, headers=token(control, "qp")
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"

    # a site node holds no dossiers: its queue is the control's business
    at_site = TestClient(create_web_app(site)).get(
        "/api/v1/release/remote", headers=token(site, "qp")
    )
    assert at_site.status_code == 409
    assert at_site.json()["error"]["code"] == "not_control_node"
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "released"


def test_the_demo_autopilot_reviews_at_the_site_and_releases_at_the_control(
    nodes: tuple[App, App],
) -> None:
    """`nearfab demo --nodes`: the site's autopilot signs the steps and the audit-trail review
    but no decision; the control's signs the dossier the RTRT rule proposed for release."""
    site, control = nodes
    batch_id = fh.make_batch(site, ready=False)
    review = review_of(site, batch_id)
    assert review.proposed_decision == "release"
    DemoLoop(site, qp_password=fh.TEST_PASSWORD).autopilot()
    assert fh.batch(site, batch_id).status == "completed"  # no decision at a site node
    dossiers_of(site).send_ready(site.uow)
    deliver(site, control)
    (dossier,) = waiting(control)
    assert dossier.dossier["blockers"] == []  # steps signed and the audit trail reviewed
    DemoLoop(site, qp_password=fh.TEST_PASSWORD).autopilot_remote()  # a site node: nothing
    DemoLoop(control, qp_password=fh.TEST_PASSWORD).autopilot_remote()
    assert waiting(control) == []
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "released"
    assert pack_statuses(site, batch_id) == {"released"}
    with site.uow() as uow:
        sig = signature_row(site, site.quality.get_review(uow, batch_id).signature_id or "")
    assert sig is not None and sig.signer_name == fh.actor(control, AUTOPILOT).full_name


def test_the_cli_lists_and_signs_at_the_control_node(nodes: tuple[App, App]) -> None:
    site, control = nodes
    batch_id = dossier_at_control(site, control)
    at_control = {"NEARFAB_NODE_SITE": "CTRL"}
    folder = Path(control.settings.data_dir)
    listed = run(["release", "remote", "--json"], env=at_control, data_dir=folder)
    assert listed.returncode == 0, listed.stdout
    (row,) = json.loads(listed.stdout)
    assert row["batch_id"] == batch_id and row["blockers"] == []
    sign = [
        "release", "sign-remote", batch_id, "--decision", "release", "--user", "qp",
        "--password", fh.TEST_PASSWORD, "--meaning", MEANING, "--json",
    ]  # fmt: skip
    stale = run([*sign, "--shown-hash", "f" * 64], env=at_control, data_dir=folder)
    assert stale.returncode == 2 and "record_changed" in stale.stdout
    done = run([*sign, "--shown-hash", row["shown_hash"]], env=at_control, data_dir=folder)
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["decision"] == "release"
    # at the site node the queue is not there: the command says why
    at_site = run(
        ["release", "remote"],
        env={"NEARFAB_NODE_SITE": "GSTT-PH"},
        data_dir=Path(site.settings.data_dir),
    )
    assert at_site.returncode == 2 and "only the control node" in at_site.stdout + at_site.stderr
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "released"


def test_the_control_node_page_shows_the_dossier_and_signs_it_and_other_sites_see_nothing(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    batch_id = dossier_at_control(site, control)
    number = fh.batch(site, batch_id).batch_number
    fh.site_user(control, "qp-man", "qp", "MAN-PH")
    other = fh.web_login(control, "qp-man")
    page_other = other.get("/release/remote").text
    assert number not in page_other  # another site's batch is not shown
    refused = other.post(
        f"/release/remote/{batch_id}",
        data={
            "csrf_token": fh.csrf(page_other),
            "decision": "release",
            "meaning": MEANING,
            "password": fh.TEST_PASSWORD,
            "username": "qp-man",
            "shown_hash": "0" * 64,
        },
    )
    assert refused.status_code == 404  # never confirmed to exist elsewhere

    qp = fh.web_login(control, "qp")
    queue = qp.get("/release/remote")
    assert queue.status_code == 200 and number in queue.text
    assert 'href="/release/remote"' in queue.text  # in the control node's menu
    (row,) = waiting(control)
    assert row.dossier["shown_hash"] in queue.text  # the hash the form signs on
    form = {
        "csrf_token": fh.csrf(queue.text),
        "decision": "release",
        "meaning": MEANING,
        "password": fh.TEST_PASSWORD,
        "username": "qp",
        "shown_hash": row.dossier["shown_hash"],
    }
    wrong = qp.post(f"/release/remote/{batch_id}", data={**form, "password": "wrong"})
    assert wrong.status_code == 401 and "not signed" in html.unescape(wrong.text)
    signed = qp.post(f"/release/remote/{batch_id}", data=form, follow_redirects=True)
    assert signed.status_code == 200 and f"Batch {number} release signed" in signed.text
    assert waiting(control) == []
    # a site node's menu has no such page, and the page says why
    at_site = fh.web_login(site, "qp").get("/release/remote").text
    assert 'id="not-control"' in at_site
    assert 'href="/release/remote"' not in at_site
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "released"


def test_a_decision_is_acted_on_only_with_the_controls_signed_entry_naming_it(
    nodes: tuple[App, App],
) -> None:
    """Whoever could publish on the control's topic could re-hash a decision record (its
    hashes are unkeyed SHA-256); the control's Ed25519-signed ledger entry naming the
    decision's digest is what only the control can make. Held back, the decision waits; with
    the control's key unknown here, it is refused on record."""
    site, control = nodes
    control_key_known(control, site)
    batch_id = dossier_at_control(site, control)
    decide(control, batch_id)
    records = unsent(control)
    entry = [
        r for r in records if r.kind == "ledger" and json.loads(r.payload)["kind"] == "decision"
    ]
    assert len(entry) == 1
    # the body the entry names is the decision's: SHA-256 of its canonical JSON, by hand
    (decision_record,) = [
        r
        for r in records
        if r.kind == "audit" and json.loads(r.payload)["entity_type"] == "remote_release"
    ]
    decision = json.loads(decision_record.payload)
    named = json.loads(json.loads(entry[0].payload)["payload"])["body"]["sha256"]
    assert named == canonical_sha256(decision["new"])
    before = [r for r in records if r.seq < entry[0].seq]
    with site.uow() as uow:
        repl(site).apply(uow, [r.to_message() for r in before])
    assert repl(site).decisions is not None
    waited = repl(site).decisions.apply_pending(site.uow)
    assert decision_record.id not in waited.applied and waited.refused == {}
    assert fh.batch(site, batch_id).status == "completed" and applied_rows(site) == []
    with site.uow() as uow:
        repl(site).apply(uow, [r.to_message() for r in records if r.seq >= entry[0].seq])
    repl(site).decisions.apply_pending(site.uow)
    assert fh.batch(site, batch_id).status == "released"


def test_a_decision_signed_by_a_control_key_unknown_here_is_refused_on_record(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    batch_id = dossier_at_control(site, control)
    decide(control, batch_id)  # the control's first signed entry: a key the site never got
    records = unsent(control)
    with site.uow() as uow:
        repl(site).apply(uow, [r.to_message() for r in records])
    assert repl(site).decisions is not None
    result = repl(site).decisions.apply_pending(site.uow)
    (why,) = result.refused.values()
    assert "signing key is not known here" in why
    assert fh.batch(site, batch_id).status == "completed"
    assert pack_statuses(site, batch_id) == {"quarantine"}
