"""An order taken at the control node for a site, handed over to that site's node
(docs/replication.md, "Orders handed over to the sites").

In a replicated network each site node makes its own site's orders; the control node makes
nothing for a site. An order the control takes for a site (a central intake, say) therefore
travels to the site's node: `handover_body` is the order as the control stored it (its
pseudonymous patient, the patient's encrypted identity and keyed identifier hashes, the
prescription with its encrypted FHIR resource, and the designed order), every row column for
column; `install_handover` stores it at the site with the same ids, so what the site then
records about the order (its batch, its packs) names the order the control holds.

Identifying data stays as it was stored: ciphertext under the network's patient-identity key
and keyed hashes, never in clear, on the broker as in either database.
"""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import inspect, select
from sqlalchemy.orm.attributes import flag_modified

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.common.errors import Conflict, NotFound, Refused, ValidationFailed
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    audit,
    audited_transition,
    authorize,
)
from nearfab.masterfiles import MasterFileService, MasterFileStatus
from nearfab.orders.enums import (
    ENDED_STATES,
    NOT_STARTED_STATES,
    ORDER_TRANSITIONS,
    OrderStatus,
)
from nearfab.orders.identifiers import IdentifierKind
from nearfab.orders.models import (
    Order,
    Patient,
    PatientIdentifierHash,
    PatientIdentity,
    Prescription,
)
from nearfab.orders.vault import IdentityVault
from nearfab.uow import UnitOfWork

HANDOVER_FORMAT = "nearfab-order-handover/1"
# refusals that may come right by themselves at the site, without the control doing anything:
# the order's master-file version not effective here yet (its publication not arrived, or not
# acted on yet), the order a new version replaces not held here yet (its own hand-over waits),
# that order scheduled here (the new version waits until it is taken off the plan or made).
# The site tries such a hand-over again at each pass (replication/decisions.py); every other
# refusal (a version withdrawn or superseded here, another site's, a collision, an older
# version, an ended order, ...) is final and on record.
# A cancellation made at the control for an order whose hand-over is not taken here yet waits
# too (`order_not_held`): it is acted on once the order is held.
HANDOVER_WAITS = frozenset(
    {"master_file_not_effective", "superseded_not_held", "scheduled", "order_not_held"}
)
CANCELLATION_FORMAT = "nearfab-order-cancellation/1"
# the states an order is cancelled from (ORDER_TRANSITIONS): not started, or scheduled (its job
# goes with it: scheduling's `cancel_order`); from any other a batch has started or it ended
CANCELLABLE_STATES = frozenset(
    {
        OrderStatus.RECEIVED.value,
        OrderStatus.DESIGNED.value,
        OrderStatus.SCHEDULED.value,
        OrderStatus.FAILED.value,
    }
)


def _dump(row: Any) -> dict[str, Any]:
    """A row's columns as JSON values (times ISO 8601, bytes base64)."""
    out: dict[str, Any] = {}
    for attr in inspect(type(row)).column_attrs:
        value = getattr(row, attr.key)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif isinstance(value, datetime | date):
            value = value.isoformat()
        out[attr.key] = value
    return out


def _python_type(column: Any) -> type | None:
    """The Python type a column stores (a TypeDecorator's: its stored type's)."""
    stored = getattr(column.type, "impl_instance", column.type)
    try:
        return stored.python_type  # type: ignore[no-any-return]
    except NotImplementedError:
        return None


def _load(model: type[Any], data: Any, where: str) -> Any:
    """A row of `model` from `_dump`'s form; a missing or malformed column names its field."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{where}: expected an object", field=where)
    values: dict[str, Any] = {}
    for attr in inspect(model).column_attrs:
        if attr.key == "row_version":
            continue  # the site's own optimistic lock starts again
        if attr.key not in data:
            raise ValidationFailed(f"{where}.{attr.key}: missing", field=f"{where}.{attr.key}")
        value = data[attr.key]
        kind = _python_type(attr.columns[0]) if value is not None else None
        try:
            if kind is bytes:
                value = base64.b64decode(str(value), validate=True)
            elif kind is datetime:
                value = datetime.fromisoformat(str(value))
            elif kind is date:
                value = date.fromisoformat(str(value))
        except ValueError as exc:
            raise ValidationFailed(
                f"{where}.{attr.key}: not a valid {kind.__name__ if kind else 'value'} ({exc})",
                field=f"{where}.{attr.key}",
            ) from exc
        values[attr.key] = value
    return model(**values)


def _not_held_already(
    uow: UnitOfWork, patient: Patient, prescription: Prescription, here: Patient | None
) -> None:
    """Refuse, before anything is written, what this node holds already under another row:
    the prescription's id, the same prescription taken here too (a prescriber who sent it to
    the site and to the control), the patient's id or pseudonym as another patient's."""
    s = uow.session
    if s.get(Prescription, prescription.id) is not None:
        raise Refused(
            f"prescription.id: {prescription.id} is held here already",
            field="prescription.id",
            code="prescription_held",
        )
    if here is None:
        if s.get(Patient, patient.id) is not None:
            raise Refused(
                f"patient.id: {patient.id} is held here as another patient",
                field="patient.id",
                code="patient_id_taken",
            )
        if s.scalar(select(Patient.id).where(Patient.ref == patient.ref)) is not None:
            raise Refused(
                f"patient.ref: {patient.ref} is another patient's here",
                field="patient.ref",
                code="patient_ref_taken",
            )
    if prescription.identifier_system is None or prescription.identifier_value is None:
        return  # no business identifier: nothing unique to collide with
    same = s.scalar(
        select(Prescription.id).where(
            Prescription.patient_id == (here.id if here is not None else patient.id),
            Prescription.identifier_system == prescription.identifier_system,
            Prescription.identifier_value == prescription.identifier_value,
            Prescription.resubmission == prescription.resubmission,
        )
    )
    if same is not None:  # the unique prescription identifier (0013) would refuse it
        taken = s.scalar(select(Order.id).where(Order.prescription_id == same).limit(1))
        raise Refused(
            f"prescription.identifier_value: prescription {prescription.identifier_system}|"
            f"{prescription.identifier_value} for this patient was already received here: "
            f"order {taken or '(none)'}",
            field="prescription.identifier_value",
            code="duplicate_prescription",
        )


def handover_body(uow: UnitOfWork, order: Order) -> dict[str, Any]:
    """The order as the control stored it, for its site's node (`install_handover`)."""
    s = uow.session
    prescription = s.get(Prescription, order.prescription_id)
    patient = s.get(Patient, order.patient_id)
    identity = s.get(PatientIdentity, order.patient_id)
    if prescription is None or patient is None or identity is None:  # pragma: no cover
        raise Conflict(f"order {order.id}: its prescription or patient is missing")
    hashes = s.scalars(
        select(PatientIdentifierHash)
        .where(PatientIdentifierHash.patient_id == patient.id)
        .order_by(PatientIdentifierHash.id)
    )
    return {
        "format": HANDOVER_FORMAT,
        "order_id": order.id,
        "site_id": order.site_id,
        "order": _dump(order),
        "prescription": _dump(prescription),
        "patient": _dump(patient),
        "identity": _dump(identity),
        "identifier_hashes": [
            _dump(h)
            for h in hashes
            if h.prescription_id in (None, prescription.id)  # not the patient's other ones
        ],
    }


def install_handover(
    uow: UnitOfWork,
    actor: Actor,
    body: dict[str, Any],
    *,
    site_id: str,
    vault: IdentityVault,
    master_files: MasterFileService,
    note: str,
) -> tuple[Order, bool]:
    """At the site node `site_id`: store an order the control handed over, with its ids, in
    the caller's transaction, audited (`note` says from where). Checked first, nothing
    written on a refusal: the order is this site's; it was designed; its master-file version
    is the one effective here; its prescription's encrypted resource opens with this node's
    patient-identity key and hashes to what the prescription says. A patient this node holds
    already (the same keyed look-up hash) is used as it is. An order held here already
    changes nothing: (order, False)."""
    authorize(actor, Permission.ORDER_SUBMIT, site_id=site_id)
    if body.get("format") != HANDOVER_FORMAT:
        raise ValidationFailed(f"format: expected {HANDOVER_FORMAT!r}", field="format")
    order = _load(Order, body.get("order"), "order")
    if order.site_id != site_id or body.get("site_id") != site_id:
        raise Refused(
            f"order {order.id} is another site's: this node takes its own site's only",
            field="site_id",
            code="another_site",
        )
    held = uow.session.get(Order, order.id)
    if held is not None:
        if held.site_id != site_id or held.prescription_id != order.prescription_id:
            raise Refused(
                f"order.id: {order.id} is held here as another order (of prescription "
                f"{held.prescription_id}, site {held.site_id})",
                field="order.id",
                code="order_id_taken",
            )
        return held, False
    if order.status != OrderStatus.DESIGNED.value or not order.design:
        raise Refused(
            f"order {order.id} is {order.status}: only a designed order is handed over",
            field="order.status",
            code="not_designed",
        )
    _effective_here(uow, order, master_files)
    prescription = _load(Prescription, body.get("prescription"), "prescription")
    if prescription.id != order.prescription_id:
        raise ValidationFailed("prescription.id: not the order's", field="prescription.id")
    try:
        raw = vault.decrypt(prescription.raw_ciphertext)
    except (InvalidToken, ValueError) as exc:  # not a token of this node's key, or not JSON
        raise Refused(
            "prescription.raw_ciphertext: does not open with this node's patient-identity key",
            field="prescription.raw_ciphertext",
            code="not_decryptable",
        ) from exc
    if sha256_hex(canonical_json(raw)) != prescription.raw_sha256:
        raise Refused(
            "prescription.raw_ciphertext: the resource does not match its raw_sha256",
            field="prescription.raw_ciphertext",
            code="prescription_altered",
        )
    patient = _load(Patient, body.get("patient"), "patient")
    if patient.id != order.patient_id:
        raise ValidationFailed("patient.id: not the order's patient", field="patient.id")
    if prescription.patient_id != patient.id:
        raise ValidationFailed(
            "prescription.patient_id: not the order's patient", field="prescription.patient_id"
        )
    if order.supersedes is not None:  # a new version of an order handed over before
        return _install_version(uow, actor, order, prescription, site_id=site_id, note=note)
    identity = _load(PatientIdentity, body.get("identity"), "identity")
    try:
        vault.decrypt(identity.ciphertext)  # the patient's identity must open here too
    except (InvalidToken, ValueError) as exc:
        raise Refused(
            "identity.ciphertext: does not open with this node's patient-identity key",
            field="identity.ciphertext",
            code="not_decryptable",
        ) from exc
    hashes = [
        _load(PatientIdentifierHash, h, f"identifier_hashes[{i}]")
        for i, h in enumerate(body.get("identifier_hashes") or [])
    ]
    for i, h in enumerate(hashes):  # the order's patient's and prescription's only
        if h.patient_id != patient.id:
            where = f"identifier_hashes[{i}].patient_id"
            raise ValidationFailed(f"{where}: not the order's patient", field=where)
        if h.prescription_id not in (None, prescription.id):
            where = f"identifier_hashes[{i}].prescription_id"
            raise ValidationFailed(f"{where}: not the order's prescription", field=where)
        if uow.session.get(PatientIdentifierHash, h.id) is not None:
            where = f"identifier_hashes[{i}].id"
            raise Refused(f"{where}: {h.id} is held here already", field=where, code="hash_held")
    s = uow.session
    here = s.scalar(select(Patient).where(Patient.lookup_hash == patient.lookup_hash))
    _not_held_already(uow, patient, prescription, here)
    if here is None:
        s.add(patient)
        s.flush()
        s.add(identity)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "patient",
            patient.id,
            new={"ref": patient.ref, "identity": "encrypted"},
            reason=note,
        )
    else:
        patient = here
    prescription.patient_id = order.patient_id = patient.id
    s.add(prescription)
    s.flush()
    known = {
        (h.kind, h.hash, h.site_id, h.prescription_id)
        for h in s.scalars(
            select(PatientIdentifierHash).where(PatientIdentifierHash.patient_id == patient.id)
        )
    }
    for h in hashes:
        # the birth date's hash is keyed with the patient's id: the one held here has its own
        mapped = h.patient_id != patient.id
        if (mapped and h.kind == IdentifierKind.BIRTH_DATE.value) or (
            h.kind,
            h.hash,
            h.site_id,
            h.prescription_id,
        ) in known:
            continue
        h.patient_id = patient.id
        s.add(h)
    s.add(order)
    s.flush()
    audit(
        uow,
        actor,
        AuditAction.CREATE,
        "prescription",
        prescription.id,
        new={"patient_ref": patient.ref, "raw_sha256": prescription.raw_sha256},
        reason=note,
        site_id=site_id,
    )
    audit(
        uow,
        actor,
        AuditAction.CREATE,
        "order",
        order.id,
        new={
            "status": order.status,
            "master_file": f"{order.master_file_code} v{order.master_file_version}",
            "units": order.units,
            "patient_ref": patient.ref,
            "site_id": site_id,
            "design": order.design,
        },
        reason=note,
        site_id=site_id,
    )
    return order, True


def _effective_here(uow: UnitOfWork, order: Order, master_files: MasterFileService) -> None:
    """The order's master-file version must be the one effective here. Not held here yet, or
    held but not effective yet (its publication not arrived, or waiting for the control's
    signature): `master_file_not_effective`, which waits (`HANDOVER_WAITS`). Withdrawn or
    superseded here: final (it will never be effective here again)."""
    try:
        mf = master_files.get(uow, order.master_file_id)
    except NotFound:
        mf = None
    label = f"{order.master_file_code} v{order.master_file_version}"
    if mf is not None and (mf.code, mf.version) != (
        order.master_file_code,
        order.master_file_version,
    ):
        raise ValidationFailed(
            f"order.master_file_id: {order.master_file_id} is {mf.code} v{mf.version} here, "
            f"not the order's {label}",
            field="order.master_file_id",
        )
    if mf is not None and mf.status == MasterFileStatus.WITHDRAWN.value:
        raise Refused(
            f"order {order.id} is made to {label}, which is withdrawn here",
            field="order.master_file_id",
            code="master_file_withdrawn",
        )
    if mf is not None and mf.status == MasterFileStatus.SUPERSEDED.value:
        raise Refused(
            f"order {order.id} is made to {label}, which a newer version superseded here",
            field="order.master_file_id",
            code="master_file_superseded",
        )
    if mf is None or mf.status != MasterFileStatus.EFFECTIVE.value:
        held = "not held here" if mf is None else f"{mf.status} here"
        raise Refused(
            f"order {order.id} is made to {label}, not yet effective here ({held}): it waits "
            "for the version's publication",
            field="order.master_file_id",
            code="master_file_not_effective",
        )


def _in_force(uow: UnitOfWork, order: Order) -> Order:
    """The newest version held here of the order `order` starts (each version `supersedes`
    the one before)."""
    seen = {order.id}
    while True:
        newer = uow.session.scalar(select(Order).where(Order.supersedes == order.id).limit(1))
        if newer is None or newer.id in seen:
            return order
        seen.add(newer.id)
        order = newer


def _install_version(
    uow: UnitOfWork,
    actor: Actor,
    order: Order,
    prescription: Prescription,
    *,
    site_id: str,
    note: str,
) -> tuple[Order, bool]:
    """A new version of an order the site holds (a dose adjusted at the control), stored with
    the control's id, by the rules of a dose adjusted here (orders/doseadjust.py `accept`):
    it must replace the version in force here and be newer than it; an ended order (cancelled,
    stopped, rejected) takes no new version; a scheduled one waits (its job would make the old
    dose: `HANDOVER_WAITS`); one that has started no batch (received, designed, failed) is
    cancelled, superseded by the new version; one in production or made keeps its batch and
    is marked superseded (an audit row), never changed. Checked first, nothing written on a
    refusal. The prescription and patient are the old version's, held here already."""
    s = uow.session
    old = s.get(Order, order.supersedes)
    if old is None:
        raise Refused(
            f"order.supersedes: order {order.supersedes}, which order {order.id} replaces, is "
            "not held here yet",
            field="order.supersedes",
            code="superseded_not_held",
        )
    if old.site_id != site_id:
        raise Refused(
            f"order.supersedes: order {old.id} is another site's: this node takes its own "
            "site's only",
            field="order.supersedes",
            code="another_site",
        )
    if old.prescription_id != order.prescription_id:
        raise ValidationFailed(
            f"order.prescription_id: not the prescription of order {old.id}, which it replaces",
            field="order.prescription_id",
        )
    held_rx = s.get(Prescription, prescription.id)
    if held_rx is None or held_rx.raw_sha256 != prescription.raw_sha256:
        raise Refused(
            f"prescription.raw_sha256: not the prescription held here for order {old.id}",
            field="prescription.raw_sha256",
            code="prescription_altered",
        )
    if not isinstance(order.prescription_version, int):
        raise ValidationFailed(
            "order.prescription_version: expected a whole number",
            field="order.prescription_version",
        )
    current = _in_force(uow, old)
    if order.prescription_version <= current.prescription_version:
        raise Refused(
            f"order.prescription_version: order {order.id} is version "
            f"{order.prescription_version}, but version {current.prescription_version} "
            f"(order {current.id}) is held here already",
            field="order.prescription_version",
            code="older_version",
        )
    if current.id != old.id:
        raise Refused(
            f"order.supersedes: order {old.id} is no longer the version in force here "
            f"(order {current.id} is)",
            field="order.supersedes",
            code="order_not_in_force",
        )
    if old.status in ENDED_STATES:
        raise Refused(
            f"order.supersedes: order {old.id} is {old.status} here: no batch will follow it",
            field="order.supersedes",
            code="order_not_in_force",
        )
    if old.status == OrderStatus.SCHEDULED.value:
        raise Refused(
            f"order.supersedes: order {old.id} is scheduled here (its job would make the old "
            "dose): the new version waits until it is taken off the plan or made",
            field="order.supersedes",
            code="scheduled",
        )
    order.patient_id = old.patient_id  # the patient as held here (maybe by look-up hash)
    s.add(order)
    s.flush()
    audit(
        uow,
        actor,
        AuditAction.CREATE,
        "order",
        order.id,
        new={
            "status": order.status,
            "master_file": f"{order.master_file_code} v{order.master_file_version}",
            "dose": f"{order.dose_value!r} {order.dose_unit}",
            "units": order.units,
            "supersedes": old.id,
            "prescription_version": order.prescription_version,
            "site_id": site_id,
            "design": order.design,
        },
        reason=note,
        site_id=site_id,
    )
    if old.status in NOT_STARTED_STATES:
        audited_transition(
            uow,
            actor,
            old,
            OrderStatus.CANCELLED,
            ORDER_TRANSITIONS,
            entity_type="order",
            label=f"order {old.id}",
            reason=f"superseded by order {order.id} (dose adjusted at the control site; {note})",
            site_id=site_id,
        )
    else:  # its batch goes on: the batches to come follow the new version
        audit(
            uow,
            actor,
            "superseded",
            "order",
            old.id,
            new={"superseded_by": order.id},
            reason=f"dose adjusted at the control site: the batches to come follow the new "
            f"version ({note})",
            site_id=site_id,
        )
    old.updated_at = uow.clock.now()
    flag_modified(old, "updated_at")
    return order, True


def cancellation_body(order: Order, *, reason: str, cancelled_by: str) -> dict[str, Any]:
    """A handed-over order cancelled at the control, for its site's node
    (`check_handed_over_cancellation`): which order, whose, why, by whom and when (the order's
    `updated_at`, set by the cancelling transition)."""
    return {
        "format": CANCELLATION_FORMAT,
        "order_id": order.id,
        "site_id": order.site_id,
        "prescription_version": order.prescription_version,
        "status": order.status,
        "reason": reason,
        "cancelled_by": cancelled_by,
        "cancelled_at": order.updated_at.isoformat() if order.updated_at else None,
    }


def check_handed_over_cancellation(
    uow: UnitOfWork, body: dict[str, Any], *, site_id: str
) -> Order | None:
    """At the site node `site_id`: the order a cancellation made at the control names, if the
    site's own rules let it be cancelled (received, designed, failed; scheduled: with its job,
    by scheduling's `cancel_order`); None if it is cancelled here already. Refused, nothing
    written: a body not of this format (naming the field), another site's order
    (`another_site`), an order not held here yet (`order_not_held`: its hand-over waits; in
    `HANDOVER_WAITS`), an order a batch has started from or that ended otherwise here
    (`not_cancellable`, naming its state: the control's copy says cancelled, the site's does
    not)."""
    if not isinstance(body, dict) or body.get("format") != CANCELLATION_FORMAT:
        raise ValidationFailed(f"format: expected {CANCELLATION_FORMAT}", field="format")
    order_id = body.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise ValidationFailed("order_id: expected an order id", field="order_id")
    if body.get("site_id") != site_id:
        raise Refused(
            f"site_id: order {order_id} is another site's: this node cancels its own site's "
            "orders only",
            field="site_id",
            code="another_site",
        )
    order = uow.session.get(Order, order_id)
    if order is None:
        raise Refused(
            f"order {order_id} is not held here yet (its hand-over not taken): the "
            "cancellation waits for it",
            field="order_id",
            code="order_not_held",
        )
    if order.site_id != site_id:
        raise Refused(
            f"order_id: order {order_id} is another site's here: this node cancels its own "
            "site's orders only",
            field="order_id",
            code="another_site",
        )
    if order.status == OrderStatus.CANCELLED.value:
        return None
    if order.status not in CANCELLABLE_STATES:
        started = order.status not in ENDED_STATES
        raise Refused(
            f"order {order_id} is {order.status} here"
            + (": a batch has started from it" if started else "")
            + ", so it is not cancelled by this site's rules; the control's copy says "
            "cancelled, this site's says " + order.status,
            field="order.status",
            code="not_cancellable",
        )
    return order


# --- an order moved from the site node that holds it to another (docs/replication.md, "Orders
# moved between sites") -----------------------------------------------------------------------
TRANSFER_FORMAT = "nearfab-order-transfer/1"
RELEASE_FORMAT = "nearfab-order-release/1"
# the states a site gives an order up from for a transfer: not started (designed), or scheduled
# (its job goes with it, as in a cancellation: scheduling's `cancel_order`); from any other a
# batch has started, or it ended, or it is not designed (nothing to make elsewhere)
TRANSFERABLE_STATES = frozenset({OrderStatus.DESIGNED.value, OrderStatus.SCHEDULED.value})


def transfer_body(
    *,
    transfer_id: str,
    order_id: str,
    from_site_id: str,
    to_site_id: str,
    reason: str,
    requested_by: str,
    requested_at: datetime,
) -> dict[str, Any]:
    """The control's decision to move an order from the site node holding it to another: which
    transfer, which order, from where to where, why, by whom and when."""
    return {
        "format": TRANSFER_FORMAT,
        "transfer_id": transfer_id,
        "order_id": order_id,
        "from_site_id": from_site_id,
        "to_site_id": to_site_id,
        "reason": reason,
        "requested_by": requested_by,
        "requested_at": requested_at.isoformat(),
    }


def check_transferable(uow: UnitOfWork, body: dict[str, Any], *, site_id: str) -> Order:
    """At the site node `site_id`: the order a transfer decided at the control names, if this
    site may give it up (designed, or scheduled: its job goes with it). Refused, nothing
    written: a body not of this format (naming the field); a transfer from another site
    (`another_site`) or to this same site (`same_site`); an order not held here yet
    (`order_not_held`: its hand-over waits, in `HANDOVER_WAITS`) or held as another site's
    (`another_site`); an order in any other state (`not_transferable`, naming it: a batch has
    started from it, it ended, or it is not designed)."""
    if not isinstance(body, dict) or body.get("format") != TRANSFER_FORMAT:
        raise ValidationFailed(f"format: expected {TRANSFER_FORMAT}", field="format")
    for name in ("transfer_id", "order_id", "from_site_id", "to_site_id"):
        if not isinstance(body.get(name), str) or not body.get(name):
            raise ValidationFailed(f"{name}: expected an id", field=name)
    order_id = str(body["order_id"])
    if body["from_site_id"] != site_id:
        raise Refused(
            f"from_site_id: order {order_id} is moved from another site: this node gives up "
            "its own site's orders only",
            field="from_site_id",
            code="another_site",
        )
    if body["to_site_id"] == site_id:
        raise Refused(
            f"to_site_id: order {order_id} is moved to this same site",
            field="to_site_id",
            code="same_site",
        )
    order = uow.session.get(Order, order_id)
    if order is None:
        raise Refused(
            f"order {order_id} is not held here yet (its hand-over not taken): the transfer "
            "waits for it",
            field="order_id",
            code="order_not_held",
        )
    if order.site_id != site_id:
        raise Refused(
            f"order_id: order {order_id} is another site's here: this node gives up its own "
            "site's orders only",
            field="order_id",
            code="another_site",
        )
    if order.status not in TRANSFERABLE_STATES:
        started = order.status not in ENDED_STATES and order.status not in (
            OrderStatus.RECEIVED.value,
            OrderStatus.STOPPED.value,
        )
        raise Refused(
            f"order {order_id} is {order.status} here"
            + (": a batch has started from it" if started else "")
            + ", so this site does not give it up; it stays here and is not made at the "
            "other site",
            field="order.status",
            code="not_transferable",
        )
    return order


def release_body(
    uow: UnitOfWork, order: Order, transfer: dict[str, Any], *, transfer_record: str
) -> dict[str, Any]:
    """What the site giving an order up for a transfer sends the control: the transfer it
    answers (its id and the control's record), the order's state when given up, and the order
    as this site holds it (`handover_body`: the control hands it over to the receiving site
    from it; identifying data still ciphertext)."""
    return {
        "format": RELEASE_FORMAT,
        "transfer_id": transfer["transfer_id"],
        "transfer_record": transfer_record,
        "order_id": order.id,
        "from_site_id": order.site_id,
        "to_site_id": transfer["to_site_id"],
        "status_before": order.status,
        "handover": handover_body(uow, order),
    }


def transferred_handover(handover: dict[str, Any], *, to_site_id: str) -> dict[str, Any]:
    """The hand-over body for the receiving site, from the one the giving site sent: the same
    rows, the order now that site's and designed again (a scheduled order's plan stayed with
    the site that gave it up, its job cancelled there)."""
    order = dict(handover.get("order") or {})
    order["site_id"] = to_site_id
    order["status"] = OrderStatus.DESIGNED.value
    return {**handover, "site_id": to_site_id, "order": order}


def move_copy(
    uow: UnitOfWork, actor: Actor, order_id: str, *, to_site_id: str, reason: str
) -> Order | None:
    """At the control node: its copy of an order moved to another site's node (the site it
    now belongs to, so a cancellation made at the control goes there), audited in the
    caller's transaction. None: the control holds no copy (the site took the order itself)."""
    order = uow.session.get(Order, order_id)
    if order is None:
        return None
    before = order.site_id
    order.site_id = to_site_id
    audit(
        uow,
        actor,
        AuditAction.UPDATE,
        "order",
        order.id,
        old={"site_id": before},
        new={"site_id": to_site_id},
        reason=reason,
        site_id=to_site_id,
    )
    return order
