"""A site node acting on what the control site sent (docs/replication.md, "Applying the
control's decisions"): a recall marks the site's packs through custody's recall service; packs
the site dispensed on what it last received are re-verified once the control's records arrive
(deferred verification), with an alert naming the patient to contact; and the node is marked a
site node, so the use cases only the control site may run (QP release, master-file changes)
refuse here (each asks `common.node.NodeRole` beside its permission check).

Everything here is done by the system actor `system:replication`, each act with an audit row
naming the control's record it applies (id and hash), in the transaction that acts on it.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select

from nearfab.common.errors import DomainError, NotFound, Refused, ValidationFailed
from nearfab.common.node import NodeRole
from nearfab.custody.enums import AlertKind, UnitStatus
from nearfab.custody.reads import alerts_at, dispensed_since, unit, units_with_alert
from nearfab.identity import Actor, AuditAction, audit, system_actor
from nearfab.identity.reads import audit_entries_on, audit_head_view
from nearfab.orders import HANDOVER_WAITS
from nearfab.replication.logic import (
    Record,
    cancellation_ref,
    decision_digest,
    decision_ref,
    handover_ref,
    publication_ref,
    recall_ref,
    transfer_ref,
    withdrawal_ref,
)
from nearfab.replication.models import InboxRecord, OutboxRecord
from nearfab.replication.services import OriginStatus, ReplicationService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.custody import CustodyAlert, SerialUnit

log = logging.getLogger(__name__)

APPLIED_ENTITY = "replication_applied"  # audit rows: a control record acted on (its id)
REFUSED_ENTITY = "replication_refused"  # audit rows: a control record not acted on, and why
# audit rows: a control record not acted on yet, and why (an order handed over whose
# master-file version is not effective here yet, say); tried again at each pass
WAITING_ENTITY = "replication_waiting"
REMOTE_RELEASE_ENTITY = "remote_release"  # control audit rows: a QP decision (releases.py)
PUBLISHED_ENTITY = "master_file_published"  # control audit rows: a version sites install
HANDOVER_ENTITY = "order_handover"  # control audit rows: an order a site node makes
# control audit rows: a handed-over order cancelled at the control (its site's node cancels it
# by its own rules, or refuses naming the order's state)
CANCELLATION_ENTITY = "order_cancellation"
# control audit rows: an order moved from the site node holding it to another (transfers.py);
# the giving site gives it up by its own rules, or refuses naming the order's state
TRANSFER_ENTITY = "order_transfer"
# site audit rows: an order given up here for a transfer, carrying it for the receiving site
RELEASE_ENTITY = "order_release"
REVERIFIED_ENTITY = "replication_reverify"  # audit rows: dispensed packs settled through
DECISION_KIND = "decision"  # the control's signed ledger entry of a decision (LedgerKind)
# a pack in one of these states, or of a rejected batch, must not be with a patient
NOT_DISPENSABLE = frozenset({UnitStatus.RECALLED.value, UnitStatus.REJECTED.value})


class Recalls(Protocol):  # the part of custody's RecallService used here
    def create(self, uow: UnitOfWork, actor: Actor, *, lot: str, reason: str) -> Any: ...


class Releases(Protocol):  # the part of quality's RemoteRelease used here
    def apply(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        batch_id: str,
        review_id: str,
        decision: str,
        reason: str | None,
        signature: dict[str, Any],
        exceptional: bool = False,
    ) -> Any: ...


class MasterFiles(Protocol):  # the part of masterfiles' MasterFileService used here
    def install_published(
        self, uow: UnitOfWork, actor: Actor, published: dict[str, Any]
    ) -> tuple[Any, bool]: ...

    def withdraw_published(
        self, uow: UnitOfWork, actor: Actor, master_file_id: str, *, reason: str
    ) -> Any: ...


class Orders(Protocol):  # the part of orders' OrderService used here
    def take_handed_over(
        self, uow: UnitOfWork, actor: Actor, body: dict[str, Any], *, site_id: str, note: str
    ) -> tuple[Any, bool]: ...

    def check_handed_over_cancellation(
        self, uow: UnitOfWork, body: dict[str, Any], *, site_id: str
    ) -> Any: ...


class Plans(Protocol):  # the part of scheduling's SchedulingService used here
    def cancel_order(self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str) -> Any: ...


class Transfers(Protocol):  # transfers.SiteReleases: an order given up for a transfer
    def release(
        self,
        uow: UnitOfWork,
        actor: Actor,
        transfer: dict[str, Any],
        *,
        transfer_record: str,
        note: str,
        applied: Callable[[str], None],
    ) -> str: ...


class Alerts(Protocol):  # the part of custody's Packs used here
    def raise_alert(
        self,
        uow: UnitOfWork,
        actor: Actor,
        kind: AlertKind,
        scan: str,
        message: str,
        *,
        unit: SerialUnit | None = None,
    ) -> CustodyAlert: ...


@dataclass
class DecisionsResult:
    """What one pass did: control records acted on, refused (id -> why), waiting for
    something that may come right here by itself (id -> why: tried again at the next pass),
    failed unexpectedly (id -> the error: retried at the next pass), alerts raised."""

    applied: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)


class _Waits(Exception):
    """A control record not acted on yet: what it needs may come right here by itself (the
    version it is made to becoming effective). Nothing acted on; tried again at each pass.
    `code`: the refusal's code (orders' `HANDOVER_WAITS`), kept in the waiting row."""

    def __init__(self, why: str, code: str | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _same_order(new: dict[str, Any], order_id: str) -> None:
    """The row's body names the order its id names (a body moved onto another row is not)."""
    if new.get("order_id") != order_id:
        raise ValidationFailed(
            f"order_id: {new.get('order_id')} is not the record's order {order_id}",
            field="order_id",
        )


def _not_held_yet(
    failed: DomainError, order_id: str, handover_settled: bool, what: str
) -> DomainError:
    """An order not held here: the record waits while its hand-over waits or has not arrived
    (`_Waits`), and is refused `not_taken_here` once that hand-over was settled without
    taking it; any other refusal is kept as it is."""
    if failed.code != "order_not_held":
        return failed
    if not handover_settled:
        raise _Waits(failed.message, failed.code) from failed
    return Refused(
        f"order {order_id} was never taken here (its hand-over was not): {what}",
        field="order_id",
        code="not_taken_here",
    )


def _problems(status: OriginStatus | None) -> list[str]:
    if status is None:
        return []
    return [*status.forks, *status.altered, *status.chain_problems]


def _contiguous(records: list[Record]) -> list[Record]:
    """The records from seq 1 with no hole: what may be acted on (a decision after a gap
    waits for the missing records, which may change it)."""
    out = []
    for expected, record in enumerate(records, start=1):
        if record.seq != expected:
            break
        out.append(record)
    return out


def _complete_before(records: list[Record], horizon: datetime) -> datetime | None:
    """The newest creation time before `horizon` among contiguous records (seq order, so
    creation times never decrease): every record created up to it is held."""
    for record in reversed(records):
        created = _time(record.created_at)
        if created < horizon:
            return created
    return None


def _signed_ref(row: dict[str, Any]) -> str:
    """The ref of the control's signed entry a decision needs."""
    if row.get("entity_type") == REMOTE_RELEASE_ENTITY:
        return decision_ref(str((row.get("new") or {}).get("batch_id")))
    if row.get("entity_type") == PUBLISHED_ENTITY:
        return publication_ref(str(row.get("entity_id")))
    if row.get("entity_type") == HANDOVER_ENTITY:
        return handover_ref(str(row.get("entity_id")))
    if row.get("entity_type") == CANCELLATION_ENTITY:
        return cancellation_ref(str(row.get("entity_id")))
    if row.get("entity_type") == TRANSFER_ENTITY:
        return transfer_ref(str(row.get("entity_id")))
    if row.get("entity_type") == "recall":
        return recall_ref(str(row.get("entity_id")))
    return withdrawal_ref(str(row.get("entity_id")))


def _signed_decisions(records: list[Record]) -> dict[str, set[str]]:
    """The control's signed decision entries held (ledger kind `decision`): ref -> the
    SHA-256 of each decision body they name. Their signatures are checked with the rest of
    the control's chain (`inbox_status`: a bad one is a chain problem, refused above)."""
    out: dict[str, set[str]] = {}
    for record in records:
        if record.kind != "ledger":
            continue
        row = json.loads(record.payload)
        if row.get("kind") != DECISION_KIND:
            continue
        body = (json.loads(str(row.get("payload") or "{}")).get("body")) or {}
        out.setdefault(str(row.get("ref")), set()).add(str(body.get("sha256")))
    return out


def _order_records(
    records: list[Record], signed: dict[str, set[str]], site_id: str
) -> tuple[dict[str, str], dict[str, str]]:
    """Of the control's records held (seq order): per order, the first cancellation the
    control signed (the one acted on: an order is cancelled once, so a later record carrying
    it is a replay) and its hand-over record **to this site** (`site_id`): an order moved
    between sites was handed over to another site first, a record this site ignores, so
    counting it would leave a cancellation or transfer of an order whose hand-over here was
    refused waiting for ever instead of refused `not_taken_here`. The payload is looked into
    only for the records about orders."""
    first_cancel: dict[str, str] = {}
    handover_of: dict[str, str] = {}
    marks = (f'"entity_type":"{CANCELLATION_ENTITY}"', f'"entity_type":"{HANDOVER_ENTITY}"')
    for record in records:
        if record.kind != "audit" or not any(m in record.payload for m in marks):
            continue
        row = json.loads(record.payload)
        order_id = str(row.get("entity_id"))
        if decision_digest(row.get("new") or {}) not in signed.get(_signed_ref(row), set()):
            continue  # not the control's decision
        if row.get("entity_type") == CANCELLATION_ENTITY:
            first_cancel.setdefault(order_id, record.id)
        elif (
            row.get("entity_type") == HANDOVER_ENTITY
            and (row.get("new") or {}).get("site_id") == site_id
        ):
            handover_of.setdefault(order_id, record.id)
    return first_cancel, handover_of


def _first_transfers(records: list[Record], signed: dict[str, set[str]]) -> dict[str, str]:
    """Of the control's records held (seq order): per transfer it signed (`transfer_id`), the
    first record carrying it, the one acted on: a later record carrying the same signed
    transfer is a replay."""
    first: dict[str, str] = {}
    mark = f'"entity_type":"{TRANSFER_ENTITY}"'
    for record in records:
        if record.kind != "audit" or mark not in record.payload:
            continue
        row = json.loads(record.payload)
        if row.get("entity_type") != TRANSFER_ENTITY or row.get("action") != "create":
            continue
        if decision_digest(row.get("new") or {}) not in signed.get(_signed_ref(row), set()):
            continue  # not the control's decision
        first.setdefault(str((row.get("new") or {}).get("transfer_id")), record.id)
    return first


def _tracked(
    method: Callable[[ControlDecisions, Callable[[], UnitOfWork]], DecisionsResult],
) -> Callable[[ControlDecisions, Callable[[], UnitOfWork]], DecisionsResult]:
    """A decisions pass, one at a time in a process (the inbox's batches and the link's
    retries run in two threads), noting what it left open (records waiting or failed) and
    the audit trail's head before it began: `retry_waiting` runs the next pass only when
    something is open and something has been written here since (docs/replication.md)."""

    @functools.wraps(method)
    def run(self: ControlDecisions, uow_factory: Callable[[], UnitOfWork]) -> DecisionsResult:
        with self._pass_lock:
            head = self._audit_head(uow_factory)
            result = method(self, uow_factory)
            self._open = {*result.waiting, *result.failed}
            self._open_at_head = head
            return result

    return run


def _time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class ControlDecisions:
    """A site node's side of the control's decisions (`apply_pending`)."""

    def __init__(
        self,
        service: ReplicationService,
        control_site_id: str,
        recalls: Recalls,
        alerts: Alerts,
        releases: Releases | None = None,
        master_files: MasterFiles | None = None,
        orders: Orders | None = None,
        plans: Plans | None = None,
        transfers: Transfers | None = None,
    ) -> None:
        self.service = service
        self._transfers = transfers  # an order the control moves to another site: given up
        self._orders = orders
        self._plans = plans  # a cancellation made at the control: a scheduled order's job too
        self._master_files = master_files
        self.control_site_id = control_site_id
        self._recalls = recalls
        self._alerts = alerts
        self._releases = releases
        # the system actor acting at this site on the control's signed decisions
        self.actor = replace(system_actor("replication"), site_id=service.site_id)
        # the last pass (`_tracked`): the records it left waiting or failed (None: no pass yet
        # in this process) and the audit trail's head when it began
        self._pass_lock = threading.RLock()
        self._open: set[str] | None = None
        self._open_at_head: int | None = None

    @_tracked
    def apply_pending(self, uow_factory: Callable[[], UnitOfWork]) -> DecisionsResult:
        """Act once on every control record held and not yet acted on, in seq order, each in
        its own transaction with its audit row; then re-verify the packs dispensed here since
        the last pass. Records of an origin whose chain does not verify (fork, altered record,
        broken link) are refused and named, once; a record after a gap waits for the gap to
        fill. Safe to run again: what was acted on is known by its audit row."""
        result = DecisionsResult()
        origin = self.control_site_id
        with uow_factory() as uow:
            statuses = {s.origin_site: s for s in self.service.inbox_status(uow)}
            records = self.service.received(uow, origin)
            ids = [r.id for r in records]
            done: set[tuple[str, str]] = set()
            waited: dict[str, str] = {}  # record id -> why it last waited (its newest row)
            for row in audit_entries_on(
                uow.session, {APPLIED_ENTITY: ids, REFUSED_ENTITY: ids, WAITING_ENTITY: ids}
            ):
                if row.entity_type == WAITING_ENTITY:
                    waited[row.entity_id] = str(row.reason)
                else:
                    done.add((row.entity_type, row.entity_id))
        problems = _problems(statuses.get(origin))
        usable = _contiguous(records)
        signed = _signed_decisions(usable)
        first_cancel, handover_of = _order_records(usable, signed, self.service.site_id)
        first_transfer = _first_transfers(usable, signed)
        unchecked = list(getattr(statuses.get(origin), "unverified_keys", []) or [])
        for record in usable:
            if (APPLIED_ENTITY, record.id) in done:
                continue
            row = json.loads(record.payload) if record.kind == "audit" else {}
            recall = row.get("entity_type") == "recall" and row.get("action") == "create"
            release = (
                row.get("entity_type") == REMOTE_RELEASE_ENTITY
                and (row.get("new") or {}).get("site_id") == self.service.site_id
                and self._releases is not None
            )
            published = row.get("entity_type") == PUBLISHED_ENTITY and row.get("action") == "create"
            withdrawn = (
                row.get("entity_type") == "master_file"
                and row.get("action") == "transition"
                and (row.get("new") or {}).get("status") == "withdrawn"
            )
            master_file = (published or withdrawn) and self._master_files is not None
            handover = (
                row.get("entity_type") == HANDOVER_ENTITY
                and (row.get("new") or {}).get("site_id") == self.service.site_id
                and self._orders is not None
            )
            cancellation = (
                row.get("entity_type") == CANCELLATION_ENTITY
                and row.get("action") == "create"
                and (row.get("new") or {}).get("site_id") == self.service.site_id
                and self._orders is not None
                and self._plans is not None
            )
            transfer = (
                row.get("entity_type") == TRANSFER_ENTITY
                and row.get("action") == "create"
                and (row.get("new") or {}).get("from_site_id") == self.service.site_id
                and self._transfers is not None
                and self._orders is not None
            )
            if not (recall or release or master_file or handover or cancellation or transfer):
                continue  # not a decision this site acts on (docs: "Not yet")
            if problems:
                if (REFUSED_ENTITY, record.id) not in done:
                    self._refuse(uow_factory, record, row, problems[0])
                result.refused[record.id] = problems[0]
                continue
            # a recall, a QP decision, a master-file version published or withdrawn, an order
            # handed over: acted on only with the control's signed ledger entry naming it (a
            # key only the control holds)
            digest = decision_digest(row.get("new") or {})
            if digest not in signed.get(_signed_ref(row), set()):
                # waits for it (the seed's own decisions, made before any node signed, wait
                # for ever: every copy holds them already)
                continue
            order_id = str(row.get("entity_id"))
            if cancellation and first_cancel.get(order_id) != record.id:
                continue  # a replay: the order's one cancellation was acted on (or waits)
            transfer_id = str((row.get("new") or {}).get("transfer_id"))
            if transfer and first_transfer.get(transfer_id) != record.id:
                continue  # a replay: the transfer was acted on (or waits)
            if unchecked:
                why = (
                    "the control's signing key is not known here, so the signature "
                    f"of its decision cannot be checked ({', '.join(unchecked)})"
                )
                if (REFUSED_ENTITY, record.id) not in done:
                    self._refuse(uow_factory, record, row, why)
                result.refused[record.id] = why
                continue
            try:
                if cancellation or transfer:
                    hid = handover_of.get(order_id)
                    settled = hid is not None and (
                        (APPLIED_ENTITY, hid) in done or hid in result.applied
                    )
                    if transfer:
                        self._apply_transfer(uow_factory, record, row, settled)
                    else:
                        self._apply_cancellation(uow_factory, record, row, settled)
                elif not self._act(uow_factory, record, row, recall, release, handover):
                    continue  # held here already: nothing to do
            except _Waits as waits:  # may come right by itself: on record once, tried again
                if waited.get(record.id) != waits.why:
                    self._wait(uow_factory, record, row, waits)
                result.waiting[record.id] = waits.why
                continue
            except Exception as exc:  # one record must not hold up the rest
                # an unexpected failure (a bug, the database) is not a refusal: nothing is on
                # record, so the next pass tries again; the records after it (a recall, say)
                # are acted on meanwhile, each on its own
                log.exception("replication: %s failed; retried at the next pass", record.id)
                result.failed[record.id] = f"{type(exc).__name__}: {exc}"
                continue
            result.applied.append(record.id)
        # not while a record failed: settling the dispensed packs up to now could pass over a
        # pack that record (a recall) would have found; the next pass re-verifies them
        if usable and not problems and not result.failed:
            horizon = _time(usable[-1].created_at)
            result.alerts = self.reverify(uow_factory, horizon, _complete_before(usable, horizon))
        return result

    def _act(
        self,
        uow_factory: Callable[[], UnitOfWork],
        record: Record,
        row: dict[str, Any],
        recall: bool,
        release: bool,
        handover: bool,
    ) -> bool:
        """Act on one signed control record; False: nothing to do (held here already)."""
        if recall:
            self._apply_recall(uow_factory, record, row)
            return True
        if release:
            self._apply_release(uow_factory, record, row)
            return True
        if handover:
            return self._apply_handover(uow_factory, record, row)
        return self._apply_master_file(uow_factory, record, row)

    def _note(
        self,
        uow: UnitOfWork,
        record: Record,
        about: dict[str, Any],
        outcome: str,
        reason: str,
        action: AuditAction = AuditAction.CREATE,
    ) -> None:
        """The applied row of a control record (its outcome), in `uow`'s transaction."""
        audit(
            uow,
            self.actor,
            action,
            APPLIED_ENTITY,
            record.id,
            new={**about, "outcome": outcome},
            reason=reason,
            site_id=self.service.site_id,
        )

    def _not_applied(
        self,
        uow_factory: Callable[[], UnitOfWork],
        record: Record,
        about: dict[str, Any],
        failed: DomainError,
        reason: str,
    ) -> None:
        """A control record this site refused to act on, on record (not retried for ever), in
        a transaction of its own after the refused one rolled back."""
        with uow_factory() as uow:
            outcome = f"not applied here: {failed.message}"
            self._note(uow, record, about, outcome, reason, AuditAction.REFUSE)
            uow.commit()

    def _wait(
        self,
        uow_factory: Callable[[], UnitOfWork],
        record: Record,
        row: dict[str, Any],
        waits: _Waits,
    ) -> None:
        """A control record not acted on yet, and why, on record (once per reason: a pass that
        finds it waiting for the same thing writes nothing), in a transaction of its own after
        the attempt rolled back. Not an applied row: the next pass tries it again. Its `new`
        names the record, the order, the order a new version replaces, and the refusal's code
        (what the node page and `inbox status` show: `waiting_at`)."""
        log.info("replication: %s waits: %s", record.id, waits.why)
        supersedes = ((row.get("new") or {}).get("order") or {}).get("supersedes")
        with uow_factory() as uow:
            audit(
                uow,
                self.actor,
                AuditAction.CREATE,
                WAITING_ENTITY,
                record.id,
                new={
                    **self._about(record, row),
                    "order_id": row.get("entity_id"),
                    "supersedes": supersedes,
                    "code": waits.code,
                },
                reason=waits.why,
                site_id=self.service.site_id,
            )
            uow.commit()

    # --- recalls -----------------------------------------------------------------------------
    def _about(self, record: Record, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "origin_site": record.origin_site,
            "record_id": record.id,
            "record_hash": record.record_hash,
            "audit_row_hash": record.chain_hash,
            "entity_type": row.get("entity_type"),
            "entity_id": row.get("entity_id"),
            "decided_by": row.get("actor_name"),
            "decided_at": row.get("at"),
        }

    def _refuse(
        self, uow_factory: Callable[[], UnitOfWork], record: Record, row: dict[str, Any], why: str
    ) -> None:
        log.warning("replication: %s not applied: %s", record.id, why)
        with uow_factory() as uow:
            audit(
                uow,
                self.actor,
                AuditAction.REFUSE,
                REFUSED_ENTITY,
                record.id,
                new=self._about(record, row),
                reason=f"the control site's records do not verify: {why}",
                site_id=self.service.site_id,
            )
            uow.commit()

    def _apply_recall(
        self, uow_factory: Callable[[], UnitOfWork], record: Record, row: dict[str, Any]
    ) -> None:
        new = row.get("new") or {}
        lot = str(new.get("lot") or "")
        about = {**self._about(record, row), "lot": lot}
        reason = (  # the signed body's reason (`new`), not the row's unsigned one
            f"control recall {row.get('entity_id')} (record {record.id}): "
            f"{new.get('reason') or 'no reason given'}"
        )
        with uow_factory() as uow:
            # the applied row goes first: the recall service commits, and so commits both
            self._note(uow, record, about, "recalled here", reason)
            try:
                self._recalls.create(uow, self.actor, lot=lot, reason=reason)
                return
            except NotFound:
                outcome = "no lot or pack of it here"
            except DomainError as exc:  # on record, not retried for ever
                outcome = f"not applied here: {exc.message}"
            uow.session.rollback()
        # this site holds neither the lot nor a pack of it: nothing to mark, and on record
        with uow_factory() as uow:
            self._note(uow, record, about, outcome, reason)
            uow.commit()

    # --- a QP decision on one of this site's batches -------------------------------------------
    def _apply_release(
        self, uow_factory: Callable[[], UnitOfWork], record: Record, row: dict[str, Any]
    ) -> None:
        """The control site's QP released or rejected one of this site's batches on its
        dossier: recorded here through quality (`RemoteRelease.apply`) with the QP's signature
        row, the applied row in the same transaction; a decision quality refuses (the record
        changed since the dossier, a lot recalled meanwhile) is on record with the reason, and
        the next dossier goes to the QP again."""
        assert self._releases is not None
        new = row.get("new") or {}
        decision = str(new.get("decision"))
        about = {
            **self._about(record, row),
            "batch_id": new.get("batch_id"),
            "batch_number": new.get("batch_number"),
            "decision": decision,
            "dossier_record": new.get("dossier_record"),
            "signature_id": (new.get("signature") or {}).get("id"),
        }
        reason = (
            f"QP {decision} of batch {new.get('batch_number')} signed at the control site by "
            f"{(new.get('signature') or {}).get('signer_name')} (record {record.id})"
        )
        with uow_factory() as uow:
            try:
                self._releases.apply(
                    uow,
                    self.actor,
                    batch_id=str(new.get("batch_id")),
                    review_id=str(new.get("review_id")),
                    decision=decision,
                    reason=new.get("reason"),
                    signature=dict(new.get("signature") or {}),
                    exceptional=new.get("exceptional") is True,
                )
                outcome = "released here" if decision == "release" else "rejected here"
                if new.get("exceptional") is True:
                    outcome = "released here exceptionally, at the physician's request"
                self._note(uow, record, about, outcome, reason)
                uow.commit()
                return
            except DomainError as exc:  # on record, not retried for ever
                uow.session.rollback()
                failed = exc
        self._not_applied(uow_factory, record, about, failed, reason)

    # --- an order the control took for this site ------------------------------------------------
    def _apply_handover(
        self, uow_factory: Callable[[], UnitOfWork], record: Record, row: dict[str, Any]
    ) -> bool:
        """Store the order the control took for this site, or a new version of one (a dose
        adjusted there), with its ids, through orders' `take_handed_over`, the applied row in
        the same transaction; this node's runner then plans and makes it as its own. A refusal
        that may come right here by itself (orders' `HANDOVER_WAITS`: its master-file version
        not effective here yet, the order it replaces not held yet or scheduled here) raises
        `_Waits`: nothing on record as applied, tried again at the next pass. Any other
        refusal (a version withdrawn or superseded here, not designed, a prescription that
        does not open or match its hash, a collision, an older version) is final, on record.
        An order held here already writes nothing: False."""
        assert self._orders is not None
        order_id = str(row.get("entity_id"))
        about = {**self._about(record, row), "order_id": order_id}
        supersedes = ((row.get("new") or {}).get("order") or {}).get("supersedes")
        taken = "taken at the control site"
        if supersedes:
            about["supersedes"] = supersedes
            taken = f"a new version of order {supersedes} made at the control site"
        note = f"order {order_id} {taken}, handed over (record {record.id})"
        with uow_factory() as uow:
            try:
                _order, now = self._orders.take_handed_over(
                    uow,
                    self.actor,
                    dict(row.get("new") or {}),
                    site_id=self.service.site_id,
                    note=note,
                )
                if not now:
                    return False
                self._note(uow, record, about, "taken here", note)
                uow.commit()
                return True
            except DomainError as exc:
                uow.session.rollback()
                if exc.code in HANDOVER_WAITS:  # may come right here: tried again
                    raise _Waits(exc.message, exc.code) from exc
                failed = exc  # on record, not retried for ever
        self._not_applied(uow_factory, record, about, failed, note)
        return True

    # --- a handed-over order cancelled at the control -------------------------------------------
    def _apply_cancellation(
        self,
        uow_factory: Callable[[], UnitOfWork],
        record: Record,
        row: dict[str, Any],
        handover_settled: bool,
    ) -> None:
        """Cancel here an order the control handed over and then cancelled, by this site's own
        rules (orders' `check_handed_over_cancellation`): one received, designed or failed is
        cancelled; one scheduled is cancelled with its job (scheduling's `cancel_order`), so it
        leaves the plan; one cancelled here already is noted as such. The applied row goes
        first, in the cancelling transaction. Refused, final and on record naming the state:
        an order a batch has started from (in production, awaiting release, released,
        dispensed) or that ended otherwise here; the control's copy says cancelled and the
        site's does not. An order not held here yet waits for its hand-over (`_Waits`); one
        whose hand-over was settled without taking it is refused (nothing to cancel)."""
        assert self._orders is not None and self._plans is not None
        new = row.get("new") or {}
        order_id = str(row.get("entity_id"))
        about = {
            **self._about(record, row),
            "order_id": order_id,
            "cancelled_at_control": new.get("cancelled_at"),
        }
        note = (
            f"order {order_id} cancelled at the control site by {new.get('cancelled_by')}: "
            f"{new.get('reason') or 'no reason given'} (record {record.id})"
        )
        with uow_factory() as uow:
            try:
                _same_order(new, order_id)
                order = self._orders.check_handed_over_cancellation(
                    uow, dict(new), site_id=self.service.site_id
                )
                if order is None:
                    self._note(uow, record, about, "already cancelled here", note)
                    uow.commit()
                    return
                outcome = "cancelled here"
                if order.status == "scheduled":
                    outcome = "cancelled here, taken off the plan with its job"
                # the applied row first: scheduling's `cancel_order` commits, and so both
                self._note(uow, record, about, outcome, note)
                self._plans.cancel_order(uow, self.actor, order_id, reason=note)
                return
            except DomainError as exc:
                uow.session.rollback()
                failed = exc
        failed = _not_held_yet(failed, order_id, handover_settled, "nothing to cancel")
        self._not_applied(uow_factory, record, about, failed, note)

    # --- an order the control moves from this site to another ----------------------------------
    def _apply_transfer(
        self,
        uow_factory: Callable[[], UnitOfWork],
        record: Record,
        row: dict[str, Any],
        handover_settled: bool,
    ) -> None:
        """Give up an order the control moves from this site to another (transfers.py,
        `SiteReleases.release`), by this site's rules: one designed or scheduled (its job
        with it) is cancelled here, and the release, carrying the order, goes back signed with
        this site's key; the applied row goes first, in the same transaction. Refused, final
        and on record naming the state (`not_transferable`): an order a batch has started
        from, or ended, or not designed here; the control then hands it to no one. An order
        not held here yet waits for its hand-over (`_Waits`); one whose hand-over was settled
        without taking it is refused (nothing to give up)."""
        assert self._transfers is not None
        new = row.get("new") or {}
        order_id = str(row.get("entity_id"))
        about = {
            **self._about(record, row),
            "order_id": order_id,
            "transfer_id": new.get("transfer_id"),
            "to_site_id": new.get("to_site_id"),
        }
        note = (
            f"order {order_id} moved at the control site to site {new.get('to_site_id')} by "
            f"{new.get('requested_by')}: {new.get('reason') or 'no reason given'} "
            f"(record {record.id})"
        )
        with uow_factory() as uow:
            try:
                _same_order(new, order_id)
                self._transfers.release(
                    uow,
                    self.actor,
                    dict(new),
                    transfer_record=record.id,
                    note=note,
                    applied=lambda outcome: self._note(uow, record, about, outcome, note),
                )
                return
            except DomainError as exc:
                uow.session.rollback()
                failed = exc
        failed = _not_held_yet(failed, order_id, handover_settled, "nothing to give up")
        self._not_applied(uow_factory, record, about, failed, note)

    # --- a master-file version made effective, or withdrawn, at the control ---------------------
    def _apply_master_file(
        self, uow_factory: Callable[[], UnitOfWork], record: Record, row: dict[str, Any]
    ) -> bool:
        """Install a version the control made effective, with its approval signature (masterfiles'
        `install_published`), or withdraw one it withdrew; the applied row in the same
        transaction; a refusal (content not what the QP approved) is on record. A version this
        node already holds effective, superseded or withdrawn (the seed's own publications,
        which every copy holds) changes nothing and writes nothing: False."""
        assert self._master_files is not None
        new = row.get("new") or {}
        mf_id = str(row.get("entity_id"))
        about = {**self._about(record, row), "master_file_id": mf_id}
        with uow_factory() as uow:
            try:
                if row.get("entity_type") == PUBLISHED_ENTITY:
                    mf, now = self._master_files.install_published(uow, self.actor, new)
                    if not now:
                        return False
                    outcome = "installed here"
                    reason = f"master file {mf.code} v{mf.version} effective at the control site"
                else:
                    why = new.get("reason") or ""  # signed with the withdrawal (`new`)
                    reason = f"withdrawn at the control site: {why}".strip()
                    found = self._master_files.withdraw_published(
                        uow, self.actor, mf_id, reason=reason
                    )
                    outcome = "withdrawn here" if found is not None else "not held here"
                self._note(uow, record, about, outcome, f"{reason} (record {record.id})")
                uow.commit()
                return True
            except DomainError as exc:  # on record, not retried for ever
                uow.session.rollback()
                failed = exc
        self._not_applied(
            uow_factory,
            record,
            about,
            failed,
            f"master file {mf_id} from the control site (record {record.id})",
        )
        return True

    def retry_waiting(self, uow_factory: Callable[[], UnitOfWork]) -> DecisionsResult | None:
        """Try again what waits here with nothing new received (each pass of the node's link,
        and `start_inbox`): a record waits for something that may come right here by itself
        (the version it is made to becoming effective, the order it replaces leaving the plan),
        so it is not left for the control's next record, nor for ever at a site cut off from
        the control. A whole pass (`apply_pending`: the same checks, records applied or refused
        skipped by their rows, a waiting row written again only when its reason changed) when
        the last pass left a record waiting or failed and this node's audit trail has moved
        since that pass began: every change that can unblock one (a master-file version
        installed, an order's transition, an order taken) writes its audit row in its
        transaction. Otherwise nothing, and when nothing is open no statement at all. The
        first call in a process always passes (what waits is not known yet). Returns the
        pass's result, or None when it was not needed (the link spaces its retries on a busy
        node: `link.RETRY_SHARE`)."""
        with self._pass_lock:
            if self._open is not None:
                if not self._open:
                    return None  # nothing waits here
                if self._audit_head(uow_factory) == self._open_at_head:
                    return None  # nothing written here since: nothing came right
            return self.apply_pending(uow_factory)

    @staticmethod
    def _audit_head(uow_factory: Callable[[], UnitOfWork]) -> int:
        """This node's audit trail's last seq (one row read)."""
        with uow_factory() as uow:
            return int(uow.session.scalar(select(audit_head_view())) or 0)

    def waiting(self, uow: UnitOfWork) -> dict[str, str]:
        """The control records not acted on yet because what they need may come right here by
        itself (record id -> why it last waited): each has a waiting row and no applied or
        refused row yet. `waiting_at` says more (what each is, since when, the code)."""
        found = waiting_at(uow, self.service.site_id, self.control_site_id)
        return {w.record_id: w.reason for w in found}

    # --- deferred verification ---------------------------------------------------------------
    def reverify(
        self,
        uow_factory: Callable[[], UnitOfWork],
        horizon: datetime,
        complete: datetime | None = None,
    ) -> list[str]:
        """Re-verify the packs dispensed here after the settled point (the last pass's
        `through`) and up to `horizon` (the creation time of the newest control record held
        without a gap): each was verified at dispense against what the site had then. A pack
        now recalled or rejected, or of a rejected batch, raises an alert to the site's
        pharmacists naming the patient to contact (once per pack). Packs dispensed after
        `horizon` wait for the control's later records.

        The control stamps every record of one transaction with the same time, and the broker
        may hand them over in several batches: a record created at `horizon` may still be on
        its way. Only `complete` (the newest creation time held strictly before `horizon`:
        every record up to it is held, since a later one is and they are contiguous) settles
        packs; those dispensed after it are checked again at the next pass. A pass is on
        record when it settles packs or raises an alert. Returns the alerts' ids."""
        site = self.service.site_id
        raised: list[str] = []
        with uow_factory() as uow:
            s = uow.session
            since = self._reverified_through(uow)
            if horizon <= since:
                return raised
            packs = [p for p in dispensed_since(s, site, since) if p["dispensed_at"] <= horizon]
            if not packs:
                return raised
            alerted = units_with_alert(
                s, AlertKind.DISPENSED_THEN_RECALLED.value, [p["unit_id"] for p in packs]
            )
            for pack in packs:
                bad = pack["status"] in NOT_DISPENSABLE or pack["batch_status"] == "rejected"
                if not bad or pack["unit_id"] in alerted:
                    continue
                now = pack["status"] if pack["status"] in NOT_DISPENSABLE else "of a rejected batch"
                message = (
                    f"pack {pack['serial']} (batch {pack['batch_number']}), dispensed "
                    f"{pack['dispensed_at']:%Y-%m-%d %H:%M} UTC on this site's last received "
                    f"records, is {now} by the control site: contact patient "
                    f"{pack['patient_ref']}"
                )
                alert = self._alerts.raise_alert(
                    uow,
                    self.actor,
                    AlertKind.DISPENSED_THEN_RECALLED,
                    pack["serial"],
                    message,
                    unit=unit(s, pack["unit_id"]),
                )
                alert.detail = {**alert.detail, "patient_ref": pack["patient_ref"]}
                raised.append(alert.id)
            settled = max(since, complete) if complete is not None else since
            if not raised and settled == since:
                return raised  # nothing settled, nothing found: the next pass checks again
            audit(
                uow,
                self.actor,
                AuditAction.CREATE,
                REVERIFIED_ENTITY,
                site,
                new={
                    "since": since.isoformat(),
                    "through": settled.isoformat(),
                    "checked_through": horizon.isoformat(),
                    "packs": len(packs),
                    "alerts": raised,
                },
                reason="packs dispensed on the site's last received records, re-verified",
                site_id=site,
            )
            uow.commit()
        return raised

    def _reverified_through(self, uow: UnitOfWork) -> datetime:
        """Where the last pass ended; before any pass, when this node began (its outbox's
        first record): packs dispensed before it was a node are not its to re-verify."""
        rows = audit_entries_on(uow.session, {REVERIFIED_ENTITY: [self.service.site_id]})
        through = [_time(r.new["through"]) for r in rows if r.new and r.new.get("through")]
        if through:
            return max(through)
        first = uow.session.scalar(
            select(func.min(OutboxRecord.created_at)).where(
                OutboxRecord.origin_site == self.service.site_id
            )
        )
        if first is None:
            return uow.clock.now()
        return first if first.tzinfo is not None else first.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Waiting:
    """A control record waiting at this site node: what it is (in words, and the order it is
    about), since when (its first waiting row), the reason it last waited (in words, and the
    refusal's code), from the site's own `replication_waiting` rows."""

    record_id: str
    what: str
    order_id: str | None
    supersedes: str | None  # a new version of an order: the order it replaces
    since: datetime  # the first waiting row
    reason_since: datetime  # the newest waiting row (written again when the reason changed)
    reason: str
    code: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record_id,
            "what": self.what,
            "order_id": self.order_id,
            "supersedes": self.supersedes,
            "since": self.since.isoformat(),
            "reason_since": self.reason_since.isoformat(),
            "reason": self.reason,
            "code": self.code,
        }


def _what(row: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """A control record in words (what the node page says it is), its order, and the order a
    new version replaces."""
    order_id = str(row.get("entity_id") or "") or None
    if row.get("entity_type") == CANCELLATION_ENTITY:
        return f"cancellation of order {order_id} at the control site", order_id, None
    if row.get("entity_type") == TRANSFER_ENTITY:
        to_site = (row.get("new") or {}).get("to_site_id")
        return f"order {order_id} moved to site {to_site} at the control site", order_id, None
    order = (row.get("new") or {}).get("order") or {}
    made_to = f"{order.get('master_file_code')} v{order.get('master_file_version')}"
    supersedes = order.get("supersedes")
    if supersedes:
        what = (
            f"new version of order {supersedes}: order {order_id} (prescription version "
            f"{order.get('prescription_version')}, made to {made_to}), a dose adjusted at the "
            "control site"
        )
        return what, order_id, str(supersedes)
    return f"order {order_id} handed over (made to {made_to})", order_id, None


def waiting_at(uow: UnitOfWork, site_id: str, control_site_id: str | None) -> list[Waiting]:
    """The control's records waiting at this site node (oldest wait first): each with a
    `replication_waiting` row of this site and no applied or refused row yet. Only orders
    handed over, their cancellations and their transfers wait (orders' `HANDOVER_WAITS`), so
    the candidates are the control's audit records about them, found by what they are about
    (the inbox's indexed column `about`, 0033, not a scan of the payloads' text), then their
    rows (three statements, the last two by id)."""
    if control_site_id is None or control_site_id == site_id:
        return []  # the control node acts on no one's decisions
    s = uow.session
    # the kind checked here, not in SQL: a condition on it would lead SQLite to the kind's
    # index, every audit record of the control
    ids = [
        record_id
        for record_id, kind in s.execute(
            select(InboxRecord.id, InboxRecord.kind).where(
                InboxRecord.about.in_((HANDOVER_ENTITY, CANCELLATION_ENTITY, TRANSFER_ENTITY)),
                InboxRecord.origin_site == control_site_id,
            )
        )
        if kind == "audit"
    ]
    rows = audit_entries_on(s, {WAITING_ENTITY: ids, APPLIED_ENTITY: ids, REFUSED_ENTITY: ids})
    settled = {r.entity_id for r in rows if r.entity_type != WAITING_ENTITY}
    waits: dict[str, list[Any]] = {}
    for r in sorted(rows, key=lambda r: r.seq):
        if r.entity_type == WAITING_ENTITY and r.site_id == site_id and r.entity_id not in settled:
            waits.setdefault(r.entity_id, []).append(r)
    if not waits:
        return []
    payloads = {
        record_id: payload
        for record_id, payload in s.execute(
            select(InboxRecord.id, InboxRecord.payload).where(InboxRecord.id.in_(list(waits)))
        )
    }
    out = []
    for record_id, held in waits.items():
        what, order_id, supersedes = _what(json.loads(payloads[record_id]))
        first, newest = held[0], held[-1]
        out.append(
            Waiting(
                record_id=record_id,
                what=what,
                order_id=order_id,
                supersedes=supersedes,
                since=_aware(first.at),
                reason_since=_aware(newest.at),
                reason=str(newest.reason),
                code=(newest.new or {}).get("code"),
            )
        )
    return sorted(out, key=lambda w: (w.since, w.record_id))


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def alerts_for_site(uow: UnitOfWork, site_id: str) -> list[CustodyAlert]:
    """The deferred-verification alerts raised at a site, newest first."""
    return alerts_at(uow.session, site_id, AlertKind.DISPENSED_THEN_RECALLED.value)


def wire_site_node(
    service: ReplicationService,
    control_site_id: str | None,
    *,
    recalls: Recalls,
    alerts: Alerts,
    node: NodeRole,
    releases: Releases | None = None,
    master_files: MasterFiles | None = None,
    orders: Orders | None = None,
    plans: Plans | None = None,
    transfers: Transfers | None = None,
) -> ControlDecisions | None:
    """Bootstrap, for a site node: act on the control's decisions as they arrive
    (`service.decisions`), and make the services' shared `NodeRole` a site node's, so the
    control site's use cases (QP release, master-file changes) refuse here (common/node.py)."""
    if control_site_id is None or control_site_id == service.site_id:
        return None
    decisions = ControlDecisions(
        service, control_site_id, recalls, alerts, releases, master_files, orders, plans, transfers
    )
    service.decisions = decisions
    node.control_site_id = control_site_id
    node.site_id = service.site_id
    return decisions
