"""Issue 17, plans back to the sites: an order the control node takes for a site travels to
that site's node, which stores it with the same ids and makes it; the control makes nothing.

Two real nodes, each its own copy of the seeded network (test_replication_mqtt.nodes). Expected
values come from the control's own tables read directly (the order's columns, the patient's
encrypted identity opened with the vault) and from the documented formula of the control's
signed entry (SHA-256 of the canonical JSON of the hand-over's audit body, computed here)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.replication.test_master_file_across import signed_entry_held_back
from tests.replication.test_release_across import (
    applied_rows,
    canonical_sha256,
    control_key_known,
    deliver,
)
from tests.replication.test_replication_mqtt import nodes, repl
from tests.replication.test_site_node_work import order_for

from nearfab.bootstrap import App
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.demo import HYDROCORTISONE
from nearfab.identity import AuditEntry, system_actor
from nearfab.masterfiles import MasterFile
from nearfab.orders import IdentityVault
from nearfab.orders.models import Order, Patient, PatientIdentity, Prescription
from nearfab.production import BatchRecord
from nearfab.replication.models import InboxRecord

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


def test_an_order_to_a_version_not_effective_at_the_site_is_refused_on_record(
    nodes: tuple[App, App],
) -> None:
    """The site makes only the version effective there: an order whose master-file version
    the site does not hold as effective is not taken, and the refusal is on record (the
    control sees it in the site's audit trail)."""
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
