"""Issue 17: a master-file version made effective at the control site is installed at the site
nodes, with the QP's approval signature, and a withdrawal there withdraws it at the sites.

Expected values come from the two nodes' own tables read directly (the version's columns and
status, the signature rows), and the approval is re-checked here from the documented formula
(SHA-256 of the canonical JSON of the version's content; docs/accounts-and-signatures.md)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.replication import test_replication_mqtt as base
from tests.replication.test_release_across import (
    applied_rows,
    canonical_sha256,
    control_key_known,
    deliver,
)
from tests.replication.test_replication_mqtt import repl

from nearfab.bootstrap import App
from nearfab.common.errors import Refused
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, Signature
from nearfab.masterfiles import MasterFile

nodes = base.nodes  # the fixture: a site node GSTT-PH and the control node, each its own db

STORAGE = "Store below 25 °C in the original container; protect from moisture"


def version(app: App, mf_id: str) -> MasterFile | None:
    with app.uow() as uow:
        row = uow.session.get(MasterFile, mf_id)
        if row is not None:
            uow.session.expunge(row)
        return row


def signature(app: App, sig_id: str) -> Signature | None:
    with app.uow() as uow:
        row = uow.session.get(Signature, sig_id)
        if row is not None:
            uow.session.expunge(row)
        return row


def published_row(control: App, mf_id: str) -> dict[str, Any]:
    with control.uow() as uow:
        row = uow.session.scalar(
            select(AuditEntry).where(
                AuditEntry.entity_type == "master_file_published", AuditEntry.entity_id == mf_id
            )
        )
        assert row is not None and row.new is not None
        return dict(row.new)


def applied_to(app: App, mf_id: str, outcome: str | None = None) -> list[AuditEntry]:
    """The site's applied rows about one master-file version (with `outcome`, those only)."""
    return [
        r
        for r in applied_rows(app, None)
        if r.new
        and r.new.get("master_file_id") == mf_id
        and (outcome is None or r.new.get("outcome") == outcome)
    ]


def count_versions(app: App) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(MasterFile)) or 0)


def test_a_version_made_effective_at_the_control_is_installed_at_the_site_with_its_approval(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    old_id = fh.master_file_id(site, HYDROCORTISONE)
    new_id = fh.new_version(control, HYDROCORTISONE, storage=STORAGE)
    assert version(site, new_id) is None  # not there before the control's records arrive
    deliver(control, site)

    there, here = version(control, new_id), version(site, new_id)
    assert there is not None and here is not None
    assert here.status == "effective" and here.storage == STORAGE
    assert here.content() == there.content() and here.version == there.version
    old = version(site, old_id)
    assert old is not None and old.status == "superseded"
    # the approval: the QP's signature row as the control made it, over this content
    sig_here = signature(site, here.approval_signature_id or "")
    sig_there = signature(control, there.approval_signature_id or "")
    assert sig_here is not None and sig_there is not None
    assert (sig_here.id, sig_here.signature_hash) == (sig_there.id, sig_there.signature_hash)
    assert sig_here.record_hash == canonical_sha256(here.content())
    with site.uow() as uow:
        assert site.master_files.approval_is_valid(uow, site.master_files.get(uow, new_id))
    (applied,) = applied_to(site, new_id)
    assert applied.new is not None and applied.new["outcome"] == "installed here"
    # the seed's versions, published when the seed made them effective, were already here:
    # nothing to do and nothing written (every copy holds them)
    assert [r.new.get("master_file_id") for r in applied_rows(site, None) if r.new] == [new_id]
    deliver(control, site)  # acted on once
    assert len(applied_to(site, new_id)) == 1
    # the site now makes the new version
    batch_id = fh.make_batch(site, ready=False)
    assert fh.batch(site, batch_id).master_file_id == new_id


def test_a_published_version_that_is_not_what_the_qp_approved_is_not_installed(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    new_id = fh.new_version(control, HYDROCORTISONE, storage=STORAGE)
    published = published_row(control, new_id)
    altered = copy.deepcopy(published)
    altered["master_file"]["shelf_life_days"] += 30  # a longer shelf life than approved
    before = count_versions(site)
    with pytest.raises(Refused) as refused, site.uow() as uow:
        site.master_files.install_published(uow, fh.actor(site, "qp"), altered)
    assert refused.value.code == "approval_invalid"
    forged = copy.deepcopy(published)
    forged["signature"]["meaning"] = "approved by nobody"  # its hash no longer covers it
    with pytest.raises(Refused) as unsigned, site.uow() as uow:
        site.master_files.install_published(uow, fh.actor(site, "qp"), forged)
    assert unsigned.value.code == "signature_invalid"
    assert count_versions(site) == before and version(site, new_id) is None
    assert signature(site, published["signature"]["id"]) is None  # nothing half-written
    # at the control (or in one database) nothing is installed from a publication
    with pytest.raises(Refused) as not_site, control.uow() as uow:
        control.master_files.install_published(uow, fh.actor(control, "qp"), published)
    assert not_site.value.code == "not_a_site_node"


def test_a_withdrawal_at_the_control_withdraws_the_version_at_the_site(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    mf_id = fh.master_file_id(control, HYDROCORTISONE)
    with control.uow() as uow:
        control.master_files.withdraw(
            uow, fh.actor(control, "qp"), mf_id, reason="assay method no longer validated"
        )
    deliver(control, site)
    withdrawn = version(site, mf_id)
    assert withdrawn is not None and withdrawn.status == "withdrawn"
    (applied,) = applied_to(site, mf_id, "withdrawn here")
    assert applied.action == "create"
    with site.uow() as uow:
        assert site.master_files.effective(uow) == [] or all(
            m.code != HYDROCORTISONE for m in site.master_files.effective(uow)
        )


def signed_entry_held_back(control: App, site: App, ref: str) -> dict[str, Any]:
    """The control's records applied at the site without the signed ledger entry `ref`, and
    the site's decisions acted on; returns the entry's body and a function giving the site
    the rest (the entry and after) and acting again."""
    with control.uow() as uow:
        repl(control).capture_now(uow)
    with control.uow() as uow:
        records = repl(control).pending(uow, 100_000)
    (entry,) = [r for r in records if r.kind == "ledger" and json.loads(r.payload)["ref"] == ref]
    with site.uow() as uow:  # everything but the signed entry
        repl(site).apply(uow, [r.to_message() for r in records if r.seq < entry.seq])
    assert repl(site).decisions is not None
    repl(site).decisions.apply_pending(site.uow)
    rest = [r.to_message() for r in records if r.seq >= entry.seq]

    def give_the_rest() -> None:
        with site.uow() as uow:
            repl(site).apply(uow, rest)
        assert repl(site).decisions is not None
        repl(site).decisions.apply_pending(site.uow)

    body = json.loads(json.loads(entry.payload)["payload"])["body"]
    return {"body": body, "give_the_rest": give_the_rest}


def test_a_publication_is_installed_only_with_the_controls_signed_entry_naming_it(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    control_key_known(control, site)
    new_id = fh.new_version(control, HYDROCORTISONE, storage=STORAGE)
    held = signed_entry_held_back(control, site, f"master_file_published:{new_id}")
    assert held["body"]["sha256"] == canonical_sha256(published_row(control, new_id))  # by hand
    assert version(site, new_id) is None  # waits for the control's signature
    held["give_the_rest"]()
    installed = version(site, new_id)
    assert installed is not None and installed.status == "effective"


def test_a_withdrawal_is_applied_only_with_the_controls_signed_entry_naming_it(
    nodes: tuple[App, App],
) -> None:
    """A withdrawal is a control decision like a publication: the site withdraws the version
    only once the control's signed ledger entry names this withdrawal (version, reason)."""
    site, control = nodes
    control_key_known(control, site)
    mf_id = fh.master_file_id(control, HYDROCORTISONE)
    reason = "assay method no longer validated"
    with control.uow() as uow:
        control.master_files.withdraw(uow, fh.actor(control, "qp"), mf_id, reason=reason)
    held = signed_entry_held_back(control, site, f"master_file_withdrawn:{mf_id}")
    # the signed body names the SHA-256 of the withdrawal's audit body, by hand
    mf = version(control, mf_id)
    assert mf is not None
    expected = {
        "status": "withdrawn",
        "master_file_id": mf_id,
        "code": HYDROCORTISONE,
        "version": mf.version,
        "reason": reason,
    }
    assert held["body"] == {"sha256": canonical_sha256(expected), "master_file_id": mf_id}
    still = version(site, mf_id)
    assert still is not None and still.status == "effective"  # waits for the signature
    assert applied_to(site, mf_id) == []
    held["give_the_rest"]()
    withdrawn = version(site, mf_id)
    assert withdrawn is not None and withdrawn.status == "withdrawn"
    assert len(applied_to(site, mf_id, "withdrawn here")) == 1
