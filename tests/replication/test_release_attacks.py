"""Issue 17, release across the network, attacked: what a tampering site node, a man in the
middle with broker access, a QP of another site or a forged form can and cannot make the
control site's QP sign, or a site node record.

Each attack goes through the real nodes (`nodes`: site node GSTT-PH and control node CTRL, each
its own database) and the in-process delivery of test_release_across.py; a tampered record is
re-hashed here by the documented formula (docs/replication.md: SHA-256 of the canonical JSON of
the record's fields), with hashlib, so it is the broker's copy that lies, not its hash."""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh
from tests.cli_helpers import run
from tests.quality.release_helpers import register_release, token, user
from tests.quality.test_exceptional_release import WHY, OutOfSpecRelease
from tests.replication import test_replication_mqtt as base
from tests.replication.test_release_across import (
    MEANING,
    applied_rows,
    canonical_sha256,
    decide,
    deliver,
    dossier_at_control,
    dossiers_of,
    pack_statuses,
    releases_of,
    review_of,
    signature_row,
    site_keys_known,
    unsent,
    waiting,
)
from tests.replication.test_replication_mqtt import repl

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError, Forbidden, NotFound, Refused, ValidationFailed
from nearfab.custody import LedgerKind
from nearfab.identity import AuditAction, AuditEntry, Signature, audit
from nearfab.materials.models import MaterialLot
from nearfab.network.models import Site
from nearfab.production.models import BatchRecord
from nearfab.quality.models import ExceptionalRelease
from nearfab.replication.capture import DOSSIER_ENTITY
from nearfab.web.server import create_web_app

nodes = base.nodes  # the fixture: two nodes, each its own database
#: (site, control, batch id) after `fh.make_batch(site)`; (site, control, batch id) after
#: `dossier_at_control(site, control)`: each built once per worker, each test its own copy of
#: both nodes (`base.nodes_world`)
made_at_site = base.made_at_site
dossier_held = base.nodes_world(dossier_at_control)


def _made_unready(site: App, control: App) -> str:
    """A batch made at the site node, its dossier not sent (`fh.make_batch(site, ready=False)`);
    its id."""
    return fh.make_batch(site, ready=False)


#: (site, control, batch id) after `_made_unready`, as `made_at_site`
unready_at_site = base.nodes_world(_made_unready)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rehash(record: dict[str, Any]) -> dict[str, Any]:
    """docs/replication.md: `record_hash` = SHA-256 of the canonical JSON of the record's fields
    and the previous record's hash (everything but `record_hash` and `created_at`)."""
    fields = {k: v for k, v in record.items() if k not in ("record_hash", "created_at")}
    return {**record, "record_hash": hashlib.sha256(canonical(fields)).hexdigest()}


def deliver_tampered(src: App, dst: App, tamper: Callable[[dict[str, Any]], None]) -> None:
    """`deliver`, with every record passed through `tamper` (which edits the wire form in
    place) and re-hashed, as a man in the middle holding the broker would."""
    with src.uow() as uow:
        repl(src).capture_now(uow)
    with src.uow() as uow:
        records = repl(src).pending(uow, 100_000)
    messages = []
    for r in records:
        wire = json.loads(r.to_message())
        before = dict(wire)
        tamper(wire)
        messages.append(canonical(rehash(wire) if wire != before else wire))
    with dst.uow() as uow:
        repl(dst).apply(uow, messages)
    with src.uow() as uow:
        ids = [r.id for r in records]
        repl(src).mark_published(uow, ids, ids)
    if repl(dst).decisions is not None:
        repl(dst).decisions.apply_pending(dst.uow)


def send(site: App) -> None:
    dossiers_of(site).send_ready(site.uow)


def send_forged(site: App, batch_id: str, **changes: Any) -> dict[str, Any]:
    """The site node (tampered with) sends a dossier of its own making: the real one with
    `changes`, through the same audit row and capture as `send_ready`, signed in its ledger
    chain with its own key as `send_ready` signs (docs/replication.md: an entry `dossier`,
    ref `release_dossier:<batch id>`, body the SHA-256 of the dossier's canonical JSON): the
    node holds its key, so the control's signature check passes and its other checks are
    what is attacked."""
    with site.uow() as uow:
        dossier = site.quality.remote.dossier(uow, batch_id)
    forged = {**dossier, **changes}
    with site.uow() as uow:
        row = audit(
            uow,
            dossiers_of(site).actor,
            AuditAction.CREATE,
            DOSSIER_ENTITY,
            batch_id,
            new=forged,
            reason="sent to the control site's QP",
            site_id=repl(site).site_id,
        )
        sent = hashlib.sha256(canonical(row.new)).hexdigest()  # the dossier as its row holds it
        site.custody_chain.ledger.append(
            uow,
            repl(site).site_id,
            LedgerKind.DOSSIER,
            f"release_dossier:{batch_id}",
            {"sha256": sent, "batch_id": batch_id},
        )
        uow.commit()
    return forged


def shown(control: App, batch_id: str) -> str:
    (row,) = [d for d in waiting(control) if d.dossier["batch_id"] == batch_id]
    return str(row.dossier["shown_hash"])


def outcomes(site: App, batch_id: str) -> list[tuple[str, str]]:
    return [
        (r.action, str(r.new["outcome"]))
        for r in applied_rows(site)
        if r.new is not None and r.new.get("batch_id") == batch_id
    ]


def signatures_at(app: App) -> int:
    with app.uow() as uow:
        return len(uow.session.scalars(select(Signature.id)).all())


def locked(app: App, username: str) -> bool:
    with app.uow() as uow:
        user = app.users.by_username(uow, username)
        assert user is not None
        return user.locked_at is not None


def remote_decisions(control: App, batch_id: str) -> list[AuditEntry]:
    with control.uow() as uow:
        return list(
            uow.session.scalars(
                select(AuditEntry).where(
                    AuditEntry.entity_type == "remote_release", AuditEntry.entity_id == batch_id
                )
            )
        )


# --- the dossier -------------------------------------------------------------------------------
def test_a_dossier_claiming_another_sites_batch_is_neither_shown_nor_decided_nor_hides_the_real(
    dossier_held: tuple[App, App, str],
) -> None:
    site, control, batch_id = dossier_held
    genuine = shown(control, batch_id)
    man = fh.site_id(control, "MAN-PH")
    # then the GSTT node sends, about its batch, a dossier saying it is Manchester's
    send_forged(site, batch_id, site_id=man)
    deliver(site, control)
    fh.site_user(control, "qp-man", "qp", "MAN-PH")
    with control.uow() as uow:
        seen_by_man = releases_of(control).read(uow, fh.actor(control, "qp-man"))
    assert seen_by_man == []  # Manchester's QP is offered nothing
    with pytest.raises(NotFound):
        decide(control, batch_id, who="qp-man", shown_hash=genuine)
    # the genuine dossier is still the one waiting, under its own site
    (row,) = waiting(control)
    assert row.dossier["site_id"] == repl(site).site_id == row.origin_site
    assert row.dossier["shown_hash"] == genuine
    body = decide(control, batch_id, shown_hash=genuine)
    assert body["site_id"] == repl(site).site_id
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "released"


def test_a_dossier_whose_labels_disagree_with_the_content_signed_is_refused(
    made_at_site: tuple[App, App, str],
) -> None:
    """The control checks the signer against the master file, the proposal and the tests
    failed; the site names them beside the content the QP signs. A label that is not what the
    content says (another master file: another QP's, another TOTP rule; a proposal of release
    where the record proposes rejection, so no reason asked) is refused."""
    site, control, batch_id = made_at_site
    other_mf = fh.master_file_id(site, "MF-PROP-PRINTLET")
    with site.uow() as uow:
        real = site.quality.remote.dossier(uow, batch_id)
    assert real["master_file_id"] != other_mf
    before = signatures_at(control)
    for field, forged in (
        ("master_file_id", {"master_file_id": other_mf}),
        ("proposed_decision", {"proposed_decision": "reject"}),
        ("out_of_specification", {"out_of_specification": ["unit_mass"]}),
    ):
        send_forged(site, batch_id, **forged)
        deliver(site, control)
        with pytest.raises(Refused) as refused:
            decide(control, batch_id, shown_hash=real["shown_hash"])
        assert refused.value.code == "dossier_inconsistent" and refused.value.field == field
        fh.assert_refusal_audited(control, refused.value, "batch", batch_id)
    assert signatures_at(control) == before
    assert remote_decisions(control, batch_id) == []


def test_a_dossier_altered_on_the_broker_is_not_signed(
    unready_at_site: tuple[App, App, str],
) -> None:
    """A man in the middle strips the blockers of a batch not ready (steps unsigned) and
    re-hashes the record: the record checks, but it is not what the site's audit row sent."""
    site, control, batch_id = unready_at_site
    send(site)

    def strip_blockers(wire: dict[str, Any]) -> None:
        if wire["kind"] == "dossier":
            payload = json.loads(wire["payload"])
            assert payload["blockers"], "the site names why it is not ready"
            payload["blockers"] = []
            wire["payload"] = canonical(payload).decode()

    deliver_tampered(site, control, strip_blockers)
    (row,) = waiting(control)
    assert row.dossier["blockers"] == []  # what the control holds says "ready"
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert any("is not the dossier" in p for p in status.chain_problems)
    before = signatures_at(control)
    with pytest.raises(Refused) as refused:
        decide(control, batch_id, shown_hash=row.dossier["shown_hash"])
    assert refused.value.code == "dossier_not_verified"
    assert signatures_at(control) == before and remote_decisions(control, batch_id) == []


def test_a_dossier_is_signed_only_once_the_sites_signed_entry_naming_it_is_held_and_checked(
    made_at_site: tuple[App, App, str],
) -> None:
    """docs/replication.md: the site signs each dossier it sends in its ledger chain (an entry
    `dossier`, ref `release_dossier:<batch id>`, naming the SHA-256 of the canonical JSON of
    the dossier as the audit row sending it holds it). The control's QP signs nothing while
    that entry is not held, nor while the key that signed it is not known there; each refusal
    is on record; with both, the decision is signed."""
    site, control, batch_id = made_at_site
    send(site)
    records = unsent(site)
    (entry,) = [
        r
        for r in records
        if r.kind == "ledger" and json.loads(r.payload)["ref"] == f"release_dossier:{batch_id}"
    ]
    (sent_by,) = [
        r
        for r in records
        if r.kind == "audit" and json.loads(r.payload).get("entity_type") == DOSSIER_ENTITY
    ]
    body = json.loads(json.loads(entry.payload)["payload"])["body"]
    # the digest by hand, from the row's `new` as it travels
    assert body == {
        "sha256": hashlib.sha256(canonical(json.loads(sent_by.payload)["new"])).hexdigest(),
        "batch_id": batch_id,
    }
    with control.uow() as uow:  # everything before the signed entry
        repl(control).apply(uow, [r.to_message() for r in records if r.seq < entry.seq])
    (row,) = waiting(control)
    before = signatures_at(control)
    with pytest.raises(Refused) as held_back:
        decide(control, batch_id, shown_hash=row.dossier["shown_hash"])
    assert held_back.value.code == "dossier_not_verified"
    assert "ledger chain signing this dossier is not held here" in str(held_back.value)
    fh.assert_refusal_audited(control, held_back.value, "batch", batch_id)

    with control.uow() as uow:  # the rest, with the site's key not registered at the control
        repl(control).apply(uow, [r.to_message() for r in records if r.seq >= entry.seq])
    with site.uow() as uow:
        ids = [r.id for r in records]
        repl(site).mark_published(uow, ids, ids)
    key_id = json.loads(entry.payload)["key_id"]
    with control.uow() as uow:
        assert key_id in {k for s in repl(control).inbox_status(uow) for k in s.unverified_keys}
    with pytest.raises(Refused) as unknown:
        decide(control, batch_id, shown_hash=row.dossier["shown_hash"])
    assert unknown.value.code == "dossier_not_verified"
    assert key_id in str(unknown.value) and "nearfab node keys import" in str(unknown.value)
    fh.assert_refusal_audited(control, unknown.value, "batch", batch_id)
    assert signatures_at(control) == before and remote_decisions(control, batch_id) == []

    site_keys_known(site, control)
    decide(control, batch_id, shown_hash=row.dossier["shown_hash"])
    assert signatures_at(control) == before + 1
    assert len(remote_decisions(control, batch_id)) == 1


def test_a_dossier_content_changed_after_its_hash_is_not_signed(
    made_at_site: tuple[App, App, str],
) -> None:
    """The site (tampered with) sends a content that is not what `shown_hash` covers: a
    deviation dropped from what the QP reads, the hash of the real one kept."""
    site, control, batch_id = made_at_site
    with site.uow() as uow:
        site.quality.records.open_deviation(
            uow, fh.actor(site, "pharmacist"), batch_id, description="cracked tablet"
        )
    with site.uow() as uow:
        real = site.quality.remote.dossier(uow, batch_id)
    assert real["content"]["deviations"]
    send_forged(site, batch_id, content={**real["content"], "deviations": []})
    deliver(site, control)
    with pytest.raises(Refused) as refused:
        decide(control, batch_id, decision="reject", reason="x", shown_hash=real["shown_hash"])
    assert refused.value.code == "record_changed" and refused.value.field == "shown_hash"
    assert remote_decisions(control, batch_id) == []


def test_a_decision_needs_the_dossier_shown_by_every_entry_point(
    dossier_held: tuple[App, App, str],
) -> None:
    _site, control, batch_id = dossier_held
    with pytest.raises(Refused) as none:
        decide(control, batch_id, shown_hash="")
    assert none.value.field == "shown_hash" and none.value.code == "record_changed"
    fh.assert_refusal_audited(control, none.value, "batch", batch_id)
    sign = [
        "release", "sign-remote", batch_id, "--decision", "release", "--user", "qp",
        "--password", fh.TEST_PASSWORD, "--meaning", MEANING, "--json", "--shown-hash", "",
    ]  # fmt: skip
    cli = run(sign, env={"NEARFAB_NODE_SITE": "CTRL"}, data_dir=Path(control.settings.data_dir))
    assert cli.returncode == 2 and "record_changed" in cli.stdout
    api = TestClient(create_web_app(control))
    answer = api.post(
        f"/api/v1/release/remote/{batch_id}/decision",
        json={"decision": "release", "meaning": MEANING, "password": fh.TEST_PASSWORD},
        headers=token(control, "qp"),
    )
    assert answer.status_code == 422 and "shown_hash" in answer.text
    web = fh.web_login(control, "qp")
    page = web.get("/release/remote").text
    form = {
        "csrf_token": fh.csrf(page),
        "decision": "release",
        "meaning": MEANING,
        "password": fh.TEST_PASSWORD,
        "username": "qp",
        "shown_hash": "",
    }
    assert web.post(f"/release/remote/{batch_id}", data=form).status_code in (400, 422)
    assert remote_decisions(control, batch_id) == [] and len(waiting(control)) == 1


# --- the signer at the control --------------------------------------------------------------------
def test_only_an_assigned_qp_of_the_batchs_site_signs_with_the_sites_totp_rule(
    dossier_held: tuple[App, App, str],
) -> None:
    site, control, batch_id = dossier_held
    hash_ = shown(control, batch_id)
    fh.site_user(control, "rp-gstt", "responsible_person", "GSTT-PH")  # a device's signer
    fh.site_user(control, "qp-two", "qp", "GSTT-PH")  # a QP, not named on the master file
    fh.site_user(control, "qp-man", "qp", "MAN-PH")  # a QP of another site
    with pytest.raises(Forbidden) as device:
        decide(control, batch_id, who="rp-gstt", shown_hash=hash_)
    assert device.value.code == "wrong_signatory"
    with pytest.raises(Refused) as unassigned:
        decide(control, batch_id, who="qp-two", shown_hash=hash_)
    assert unassigned.value.code == "not_qp_for_master_file"
    with pytest.raises(NotFound):  # never confirmed to exist elsewhere
        decide(control, batch_id, who="qp-man", shown_hash=hash_)
    # the site's signing policy, as the control holds it: a TOTP code too
    fh.edit(control, Site, repl(site).site_id, totp_for_signing=True)
    with pytest.raises(DomainError) as totp:
        decide(control, batch_id, shown_hash=hash_)
    assert totp.value.field == "totp"
    assert remote_decisions(control, batch_id) == [] and len(waiting(control)) == 1


# --- applying at the site ------------------------------------------------------------------------
def test_a_record_changed_after_the_rtrt_is_not_released_whatever_the_dossier_said(
    made_at_site: tuple[App, App, str],
) -> None:
    """The batch record is edited at the site after the RTRT evaluation (the dossier names it
    as a blocker); a tampered site node strips that blocker, the QP signs the record as it is
    now, and the release comes back: the site still refuses it, as `decide` would."""
    site, control, batch_id = made_at_site
    with site.uow() as uow:
        used = site.production.get(uow, batch_id).material_used_g or 0.0
    fh.edit(site, BatchRecord, batch_id, material_used_g=used + 5.0)
    with site.uow() as uow:
        real = site.quality.remote.dossier(uow, batch_id)
    assert any("changed after the RTRT" in b for b in real["blockers"])
    send_forged(site, batch_id, blockers=[])
    deliver(site, control)
    decide(control, batch_id, shown_hash=real["shown_hash"])  # the control cannot know
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "completed"
    assert pack_statuses(site, batch_id) == {"quarantine"}
    ((action, outcome),) = outcomes(site, batch_id)
    assert action == "refuse" and "changed after the RTRT" in outcome
    (decision,) = remote_decisions(control, batch_id)
    assert decision.new is not None
    assert signature_row(site, decision.new["signature"]["id"]) is None  # nothing half-written


def physician_asks(site: App, batch_id: str) -> None:
    """The treating physician (a clinician of the order's site) asks for the exceptional
    release of the out-of-specification batch, at the site node."""
    with site.uow() as uow:
        order = site.orders.get(uow, fh.batch(site, batch_id).order_id)
        code = site.network.get_site(uow, order.site_id).code
    user(site, f"doc-{batch_id[-6:].lower()}", ["clinician"], code)
    with site.uow() as uow:
        site.quality.exceptional.request(
            uow,
            fh.actor(site, f"doc-{batch_id[-6:].lower()}"),
            batch_id,
            circumstances=WHY,
            password=fh.TEST_PASSWORD,
        )


def request_status(site: App, batch_id: str) -> str:
    with site.uow() as uow:
        row = uow.session.scalar(
            select(ExceptionalRelease).where(ExceptionalRelease.batch_id == batch_id)
        )
        assert row is not None
        return row.status


def test_an_out_of_specification_batch_is_not_released_plainly_across_the_network(
    nodes: tuple[App, App],
) -> None:
    """The site's family releases an out-of-specification batch only exceptionally (the
    physician's request and the QP's signature). A control whose family says
    otherwise (another version of it, say) signs a plain release: the site refuses it, as its
    own `decide` would. The same family at the control refuses it there; a rejection signed
    there closes the physician's open request at the site, as a local rejection does."""
    site, control = nodes
    register_release(site, OutOfSpecRelease())
    first = fh.make_batch(site)
    assert review_of(site, first).proposed_decision == "reject"
    physician_asks(site, first)
    send(site)
    deliver(site, control)
    body = decide(
        control, first, reason="the physician's circumstances", shown_hash=shown(control, first)
    )
    deliver(control, site)
    assert fh.batch(site, first).status == "completed"
    assert pack_statuses(site, first) == {"quarantine"}
    ((action, outcome),) = outcomes(site, first)
    assert action == "refuse" and "out of specification" in outcome
    assert signature_row(site, body["signature"]["id"]) is None
    assert request_status(site, first) == "requested"  # still the physician's, untouched

    register_release(control, OutOfSpecRelease())
    second = fh.make_batch(site)
    physician_asks(site, second)
    send(site)
    deliver(site, control)
    with pytest.raises(Refused) as plain:
        decide(control, second, reason="circumstances", shown_hash=shown(control, second))
    assert plain.value.code == "out_of_specification"
    decide(
        control, second, decision="reject", reason="no release", shown_hash=shown(control, second)
    )
    deliver(control, site)
    assert fh.batch(site, second).status == "rejected"
    assert request_status(site, second) == "closed"


def test_a_lot_recalled_after_the_decision_stops_the_release_at_the_site(
    dossier_held: tuple[App, App, str],
) -> None:
    site, control, batch_id = dossier_held
    body = decide(control, batch_id, shown_hash=shown(control, batch_id))
    with site.uow() as uow:
        lot_id = site.production.get(uow, batch_id).material_lot_id
    fh.edit(site, MaterialLot, lot_id, status="recalled")  # meanwhile, at the site
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "completed"
    assert pack_statuses(site, batch_id) == {"quarantine"}
    ((action, outcome),) = outcomes(site, batch_id)
    assert action == "refuse" and "recalled" in outcome
    assert signature_row(site, body["signature"]["id"]) is None
    assert review_of(site, batch_id).status == "pending"


def test_a_decision_replayed_onto_another_batch_or_with_another_signature_is_refused(
    made_at_site: tuple[App, App, str],
) -> None:
    """The control's decision on batch X, applied (through quality, as the site's replicator
    does) to batch Y, or Y's decision with X's signature row, or Y's with its meaning edited and
    its signature hash left: each refused, nothing written. Then each applied once."""
    site, control, x = made_at_site
    y = dossier_at_control(site, control)
    on_x = decide(control, x, shown_hash=shown(control, x))
    on_y = decide(
        control, y, decision="reject", reason="photos show a chip", shown_hash=shown(control, y)
    )
    replicator = repl(site).decisions
    assert replicator is not None
    actor = replicator.actor

    def apply(body: dict[str, Any], **over: Any) -> None:
        args = {
            "batch_id": body["batch_id"],
            "review_id": body["review_id"],
            "decision": body["decision"],
            "reason": body["reason"],
            "signature": body["signature"],
            **over,
        }
        with site.uow() as uow:
            site.quality.remote.apply(uow, actor, **args)
            uow.commit()

    attempts: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        (on_x, {"batch_id": y}, "not_this_review"),
        (on_x, {"batch_id": y, "review_id": on_y["review_id"]}, "signature_invalid"),
        (on_y, {"signature": on_x["signature"]}, "signature_invalid"),
        (on_y, {"decision": "release", "reason": None}, "record_changed"),
        (
            on_y,
            {"signature": {**on_y["signature"], "meaning": "QP rejection withdrawn"}},
            "signature_invalid",
        ),
    ]
    before = signatures_at(site)
    for body, over, code in attempts:
        with pytest.raises(Refused) as refused:
            apply(body, **over)
        assert refused.value.code == code, (over, refused.value.message)
    assert signatures_at(site) == before
    assert {fh.batch(site, x).status, fh.batch(site, y).status} == {"completed"}

    deliver(control, site)
    deliver(control, site)  # delivered again: acted on once
    assert fh.batch(site, x).status == "released" and fh.batch(site, y).status == "rejected"
    assert outcomes(site, x) == [("create", "released here")]
    assert outcomes(site, y) == [("create", "rejected here")]
    with pytest.raises(Refused) as twice:
        apply(on_x)
    assert twice.value.code == "already_decided"


def test_a_decision_edited_on_the_broker_is_refused_by_the_site(
    dossier_held: tuple[App, App, str],
) -> None:
    """The control's rejection of batch Y edited in transit into a release (the record
    re-hashed, not the audit row it carries): the site's chain check refuses it, on record."""
    site, control, y = dossier_held
    decide(control, y, decision="reject", reason="coating defect", shown_hash=shown(control, y))

    def into_release(wire: dict[str, Any]) -> None:
        payload = json.loads(wire["payload"])
        if payload.get("entity_type") == "remote_release":
            payload["new"]["decision"] = "release"
            payload["new"]["reason"] = None
            wire["payload"] = canonical(payload).decode()

    deliver_tampered(control, site, into_release)
    assert fh.batch(site, y).status == "completed"
    assert pack_statuses(site, y) == {"quarantine"}
    with site.uow() as uow:
        refused = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "replication_refused")
        ).all()
    assert refused and "do not verify" in str(refused[0].reason)


# --- the forms ----------------------------------------------------------------------------------
def test_the_remote_signing_form_and_api_refuse_forgery_and_throttle_guessing(
    dossier_held: tuple[App, App, str],
) -> None:
    site, control, batch_id = dossier_held
    hash_ = shown(control, batch_id)
    web = fh.web_login(control, "qp")
    page = web.get("/release/remote").text
    form = {
        "decision": "release",
        "meaning": MEANING,
        "password": fh.TEST_PASSWORD,
        "username": "qp",
        "shown_hash": hash_,
    }
    no_csrf = web.post(f"/release/remote/{batch_id}", data=form)
    assert no_csrf.status_code == 403
    stale = web.post(f"/release/remote/{batch_id}", data={**form, "csrf_token": "x" * 32})
    assert stale.status_code == 403
    # a forged post at the site node: its QP decides nothing there
    at_site = fh.web_login(site, "qp")
    site_page = at_site.get("/release/remote").text
    posted = at_site.post(
        f"/release/remote/{batch_id}", data={**form, "csrf_token": fh.csrf(site_page)}
    )
    assert posted.status_code == 409
    # wrong passwords: five answered 401, then the guesser is stopped (the account locked at
    # the fifth, NEARFAB_LOCKOUT_AFTER_FAILURES=5; the throttle's 429 at its sixth try), and
    # the right password then signs nothing either
    assert control.settings.lockout_after_failures == 5
    wrong = {**form, "csrf_token": fh.csrf(page), "password": "not it"}
    codes = [web.post(f"/release/remote/{batch_id}", data=wrong).status_code for _ in range(5)]
    assert codes == [401] * 5
    web.post(f"/release/remote/{batch_id}", data={**wrong, "password": fh.TEST_PASSWORD})
    assert locked(control, "qp")
    api = TestClient(create_web_app(control))
    fh.site_user(control, "qp-b", "qp", "GSTT-PH")
    headers = token(control, "qp-b")
    url = f"/api/v1/release/remote/{batch_id}/decision"
    # (a rejection: qp-b is not named on the master file, and a release says so first)
    body = {**form, "decision": "reject", "reason": "x", "username": "qp-b", "password": "no"}
    answers = [api.post(url, json=body, headers=headers).status_code for _ in range(5)]
    assert answers == [401] * 5
    right = api.post(url, json={**body, "password": fh.TEST_PASSWORD}, headers=headers)
    assert right.status_code in (401, 423, 429) and locked(control, "qp-b")
    assert remote_decisions(control, batch_id) == [] and len(waiting(control)) == 1


def test_a_decision_the_site_refused_puts_the_batch_back_in_the_qps_queue(
    made_at_site: tuple[App, App, str],
) -> None:
    """A decision the site refuses for a reason its dossier does not show (here: a QP
    account made at the control after the site's copy, unknown at the site) sends the dossier
    again, unchanged, so the batch waits for a QP again instead of for no one."""
    site, control, batch_id = made_at_site
    fh.site_user(control, "qp-new", "qp", "GSTT-PH")  # made at the control after the copy
    send(site)
    deliver(site, control)
    decide(
        control,
        batch_id,
        decision="reject",
        reason="coating defect",
        who="qp-new",
        shown_hash=shown(control, batch_id),
    )
    deliver(control, site)
    ((action, outcome),) = outcomes(site, batch_id)
    assert action == "refuse" and "not known at this node" in outcome
    assert fh.batch(site, batch_id).status == "completed"
    assert dossiers_of(site).send_ready(site.uow) == [batch_id]
    assert dossiers_of(site).send_ready(site.uow) == []  # once
    deliver(site, control)
    assert [d.dossier["batch_id"] for d in waiting(control)] == [batch_id]
    decide(
        control,
        batch_id,
        decision="reject",
        reason="coating defect",
        shown_hash=shown(control, batch_id),
    )
    deliver(control, site)
    assert fh.batch(site, batch_id).status == "rejected"


def test_an_exceptional_release_across_the_network_binds_the_physicians_request(
    nodes: tuple[App, App],
) -> None:
    """The treating physician asks at the site node; the dossier carries the request as
    signed there; the control's QP releases exceptionally (a reason required, a release
    only); the QP's signature binds the request with the batch, and the site completes the
    request with it and releases the batch, as a local exceptional release does."""
    site, control = nodes
    for app in (site, control):
        register_release(app, OutOfSpecRelease())
    batch_id = fh.make_batch(site)
    physician_asks(site, batch_id)
    send(site)
    deliver(site, control)
    with control.uow() as uow:
        received = releases_of(control).newest(uow, batch_id)
    shown_to_qp = received.to_dict()
    assert shown_to_qp["out_of_specification"] == ["unit_mass"]
    request = shown_to_qp["exceptional_request"]
    assert request["status"] == "requested" and request["circumstances"] == WHY
    content = received.dossier["content"]
    assert content["exceptional"]["circumstances"] == WHY  # part of what the QP signs

    # the local decision's rules: a reason, and only a release is exceptional
    with pytest.raises(ValidationFailed) as no_reason:
        decide(control, batch_id, exceptional=True)
    assert no_reason.value.field == "reason"
    with pytest.raises(ValidationFailed) as not_release:
        decide(control, batch_id, decision="reject", reason="x", exceptional=True)
    assert not_release.value.field == "exceptional"

    # the QP's page shows the request and offers the exceptional release; signed there
    qp = fh.web_login(control, "qp")
    queue = qp.get("/release/remote").text
    assert "Exceptional release requested" in queue and html.escape(WHY) in queue
    assert 'name="exceptional" value="yes"' in queue
    form = {
        "csrf_token": fh.csrf(queue),
        "decision": "release",
        "meaning": MEANING,
        "password": fh.TEST_PASSWORD,
        "username": "qp",
        "shown_hash": shown_to_qp["shown_hash"],
        "reason": "physician's request: no time",
        "exceptional": "yes",
    }
    signed = qp.post(f"/release/remote/{batch_id}", data=form, follow_redirects=True)
    assert signed.status_code == 200 and "release signed" in signed.text
    (row,) = remote_decisions(control, batch_id)
    assert row.new is not None
    body = row.new
    assert body["exceptional"] is True
    signature = body["signature"]
    assert "exceptional release at the treating physician's request" in signature["meaning"]
    # docs/accounts-and-signatures.md: the record hash is SHA-256 of the canonical JSON of the
    # content signed: the dossier's content (the request included) with decision and reason
    signed = {**content, "decision": "release", "reason": "physician's request: no time"}
    assert signature["record_hash"] == canonical_sha256(signed)

    deliver(control, site)
    assert fh.batch(site, batch_id).status == "released"
    ((action, outcome),) = outcomes(site, batch_id)
    assert (action, outcome) == (
        "create",
        "released here exceptionally, at the physician's request",
    )
    with site.uow() as uow:
        row = uow.session.scalar(
            select(ExceptionalRelease).where(ExceptionalRelease.batch_id == batch_id)
        )
        assert row is not None
        assert (row.status, row.qp_signature_id) == ("released", signature["id"])
    held = signature_row(site, signature["id"])
    assert held is not None and held.record_hash == signature["record_hash"]


def test_an_exceptional_release_without_the_physicians_request_is_refused_at_the_control(
    made_at_site: tuple[App, App, str],
) -> None:
    site, control, in_spec = made_at_site  # the demo family: every release test passed
    for app in (site, control):
        register_release(app, OutOfSpecRelease())
    nobody_asked = dossier_at_control(site, control)
    before = signatures_at(control)
    with pytest.raises(Refused) as passed:
        decide(control, in_spec, exceptional=True, reason="not needed")
    assert (passed.value.code, passed.value.field) == ("not_out_of_specification", "exceptional")
    with pytest.raises(Refused) as refused:
        decide(control, nobody_asked, exceptional=True, reason="no request")
    assert (refused.value.code, refused.value.field) == ("physician_request_missing", "exceptional")
    # the API carries the flag to the same rules; another site's QP is not told the batch exists
    api = TestClient(create_web_app(control))
    body = {
        "decision": "release",
        "meaning": MEANING,
        "password": fh.TEST_PASSWORD,
        "shown_hash": shown(control, nobody_asked),
        "reason": "no request",
        "exceptional": True,
    }
    url = f"/api/v1/release/remote/{nobody_asked}/decision"
    answer = api.post(url, json={**body, "username": "qp"}, headers=token(control, "qp"))
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "physician_request_missing"
    fh.site_user(control, "qp-man", "qp", "MAN-PH")
    other = api.post(url, json={**body, "username": "qp-man"}, headers=token(control, "qp-man"))
    assert other.status_code == 404
    assert signatures_at(control) == before  # nothing signed
