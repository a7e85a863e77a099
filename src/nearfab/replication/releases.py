"""Release across the network (docs/replication.md, "Release across the network").

A site node's batch is released by the control site's QP: the site sends a **release dossier**
(`SiteDossiers.send_ready`: an audit row `release_dossier` carrying quality's dossier, which the
capture turns into a `dossier` record as well); the control keeps the newest dossier of each
batch in its inbox and its QP signs one (`ControlReleases.decide`: an audit row
`remote_release` carrying the decision and the QP's signature row, which goes back to the
sites); the site node applies it (`replication/decisions.py`, through quality's
`RemoteRelease.apply`), or says on record why not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import func, select

from nearfab.common.errors import NotFound, Refused
from nearfab.custody import LedgerKind
from nearfab.custody.reads import site_public_keys
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    authorize,
    system_actor,
    visible_sites,
)
from nearfab.identity.reads import audit_entries_on
from nearfab.orders import OrderStatus, cancellation_body, handover_body
from nearfab.quality import RemoteRelease, refused_on_batch
from nearfab.replication.capture import DOSSIER_ENTITY
from nearfab.replication.decisions import (
    APPLIED_ENTITY,
    CANCELLATION_ENTITY,
    HANDOVER_ENTITY,
    REMOTE_RELEASE_ENTITY,
)
from nearfab.replication.enums import ProblemKind, RecordKind
from nearfab.replication.logic import (
    cancellation_ref,
    decision_digest,
    decision_ref,
    dossier_ref,
    handover_ref,
    publication_ref,
    recall_ref,
    record_id,
    verify_chain,
    withdrawal_ref,
)
from nearfab.replication.models import InboxProblem, InboxRecord
from nearfab.replication.services import ReplicationService, _to_record
from nearfab.replication.signatures import KeyBook, verify_signatures
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)


class PendingReviews(Protocol):
    def __call__(self, uow: UnitOfWork) -> list[Any]: ...


class Ledger(Protocol):  # the part of custody's CustodyLedger used here
    def append(
        self, uow: UnitOfWork, site_id: str, kind: LedgerKind, ref: str, body: dict[str, Any]
    ) -> Any: ...


class SiteDossiers:
    """A site node's side: send a dossier for each of its batches waiting for the QP (again
    after this node refused the decision made on the last one), each signed in the site's
    ledger chain."""

    def __init__(
        self,
        service: ReplicationService,
        remote: RemoteRelease,
        pending: PendingReviews,
        ledger: Ledger,
    ) -> None:
        """`ledger`: the site's custody ledger, whose chain (signed with this site's key)
        names each dossier's SHA-256, so the control's QP signs only what this node sent."""
        self.service = service
        self._remote = remote
        self._pending = pending
        self._ledger = ledger
        self.actor = replace(system_actor("replication"), site_id=service.site_id)

    def last_sent(self, uow: UnitOfWork, batch_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Per batch, the dossier this node last sent the control site's QP: when, its hash
        and the blockers it named (none: never sent)."""
        out: dict[str, dict[str, Any]] = {}
        for row in audit_entries_on(uow.session, {DOSSIER_ENTITY: batch_ids}):
            new = row.new or {}
            out[row.entity_id] = {
                "sent_at": row.at,
                "shown_hash": new.get("shown_hash"),
                "blockers": list(new.get("blockers") or []),
                # the record the capture made of it (capture._with_dossiers' ref)
                "record": record_id(
                    self.service.site_id, f"dossier:{row.entity_id}@audit:{row.seq}"
                ),
            }
        return out

    def _refused_here(self, uow: UnitOfWork, records: set[str]) -> set[str]:
        """Of these dossier records, those a control decision was made on and this node
        refused to apply (its `replication_applied` row, action `refuse`): the batch waits for
        a QP again, so its dossier goes again even unchanged."""
        if not records:
            return set()
        decisions = uow.session.scalars(
            select(InboxRecord.id).where(
                InboxRecord.kind == RecordKind.AUDIT.value,
                InboxRecord.payload.contains(f'"entity_type":"{REMOTE_RELEASE_ENTITY}"'),
            )
        ).all()
        return {
            str((row.new or {}).get("dossier_record"))
            for row in audit_entries_on(uow.session, {APPLIED_ENTITY: decisions})
            if row.action == AuditAction.REFUSE.value
            and (row.new or {}).get("dossier_record") in records
        }

    def send_ready(self, uow_factory: Callable[[], UnitOfWork]) -> list[str]:
        """Write a dossier for every batch of this site waiting for a QP decision whose
        dossier is not the one last sent (a new batch, a record signed or changed since, a
        blocker settled), each with its audit row in its own transaction. Returns the batch ids
        sent for. Safe to call at every replication pass: an unchanged dossier is not sent
        again."""
        site = self.service.site_id
        with uow_factory() as uow:
            waiting = [r.batch_id for r in self._pending(uow) if r.site_id == site]
            sent_before = self.last_sent(uow, waiting)
            refused = self._refused_here(uow, {s["record"] for s in sent_before.values()})
            last = {
                batch: (sent["shown_hash"], sent["blockers"])
                for batch, sent in sent_before.items()
                if sent["record"] not in refused
            }
        sent = []
        for batch_id in waiting:
            with uow_factory() as uow:
                try:
                    dossier = self._remote.dossier(uow, batch_id)
                except NotFound:  # decided meanwhile
                    continue
                if last.get(batch_id) == (dossier["shown_hash"], dossier["blockers"]):
                    continue
                audit(
                    uow,
                    self.actor,
                    AuditAction.CREATE,
                    DOSSIER_ENTITY,
                    batch_id,
                    new=dossier,
                    reason=(
                        f"batch {dossier['batch_number']} sent to the control site's QP"
                        + (f" (not ready: {dossier['blockers'][0]})" if dossier["blockers"] else "")
                    ),
                    site_id=site,
                )
                # the dossier signed with this site's key: a dossier rewritten on the way
                # (every plain hash after it redone) is then refused at the control
                self._ledger.append(
                    uow,
                    site,
                    LedgerKind.DOSSIER,
                    dossier_ref(batch_id),
                    {"sha256": decision_digest(dossier), "batch_id": batch_id},
                )
                uow.commit()
            sent.append(batch_id)
        return sent


@dataclass(frozen=True)
class ReceivedDossier:
    """A dossier as the control holds it: the record that carried it and the dossier."""

    record_id: str
    record_hash: str
    origin_site: str
    seq: int
    received_at: str
    dossier: dict[str, Any]
    decision: dict[str, Any] | None = None  # the control's decision on it, once signed

    def to_dict(self) -> dict[str, Any]:
        d = self.dossier
        return {
            "record_id": self.record_id,
            "origin_site": self.origin_site,
            "seq": self.seq,
            "received_at": self.received_at,
            "batch_id": d["batch_id"],
            "batch_number": d["batch_number"],
            "site_id": d["site_id"],
            "master_file_code": d["master_file_code"],
            "proposed_decision": d["proposed_decision"],
            "reasons": d["reasons"],
            "pending_results": d["pending_results"],
            "blockers": d["blockers"],
            "out_of_specification": list(d.get("out_of_specification") or []),
            "exceptional_request": d.get("exceptional_request"),
            "shown_hash": d["shown_hash"],
            "decision": self.decision,
        }

    def detail(self) -> dict[str, Any]:
        """`to_dict` with the content the QP signs."""
        return {**self.to_dict(), "content": self.dossier["content"]}


# what the control signs for the sites, by the hook a domain calls in the deciding transaction:
# (the ref of its signed ledger entry, the body field naming the decided record)
SIGNED_DECISIONS: dict[str, tuple[Callable[[str], str], str]] = {
    "published": (publication_ref, "master_file_id"),  # masterfiles' on_published
    "withdrawn": (withdrawal_ref, "master_file_id"),  # masterfiles' on_withdrawn
    "recall": (recall_ref, "recall_id"),  # custody's RecallService.on_created
}


def sign_decisions(ledger: Ledger, control_site_id: str, what: str) -> Any:
    """The hook the control node gives a domain for one kind of decision (`SIGNED_DECISIONS`):
    each decision signed in the control's chain (kind `decision`), naming the SHA-256 of the
    decision's audit body, in the same transaction; a site node acts on it only with that
    entry held and verified (decisions.py)."""
    ref_of, field_name = SIGNED_DECISIONS[what]

    def sign(uow: UnitOfWork, record_id: str, body: dict[str, Any]) -> None:
        ledger.append(
            uow,
            control_site_id,
            LedgerKind.DECISION,
            ref_of(record_id),
            {"sha256": decision_digest(body), field_name: record_id},
        )

    return sign


def hand_over_orders(ledger: Ledger, control_site_id: str) -> Any:
    """The hook the control node gives orders (`on_taken`): an order taken there for a site is
    handed over to that site's node, which makes it (docs/replication.md, "Orders handed over
    to the sites"): an audit row carrying the order as stored (orders' `handover_body`) and
    the control's signed ledger entry naming its SHA-256, in the intake's transaction. A new
    version of an order (a dose adjusted at the control: `supersedes` names the order it
    replaces) is handed over the same way, in the transaction that makes it. An order of the
    control's own site, or stopped at design, stays."""

    def hand_over(uow: UnitOfWork, actor: Actor, order: Any) -> None:  # orders' Order
        if order.site_id == control_site_id or order.status != OrderStatus.DESIGNED.value:
            return
        body = handover_body(uow, order)
        reason = "taken at the control site for a site: handed over to that site's node"
        if order.supersedes is not None:
            reason = (
                f"a new version of order {order.supersedes} made at the control site (dose "
                "adjusted): handed over to that site's node"
            )
        signed_handover(uow, actor, ledger, control_site_id, body, reason=reason)

    return hand_over


def signed_handover(
    uow: UnitOfWork,
    actor: Actor,
    ledger: Ledger,
    control_site_id: str,
    body: dict[str, Any],
    *,
    reason: str,
) -> None:
    """An order handed over to the site node its body names (`body`: orders' `handover_body`,
    or `transferred_handover` for an order moved between sites): the audit row
    `order_handover` carrying the body and the control's ledger entry of kind `decision`
    naming its SHA-256, signed with the control site's key, in the caller's transaction."""
    order_id = str(body["order_id"])
    audit(
        uow,
        actor,
        AuditAction.CREATE,
        HANDOVER_ENTITY,
        order_id,
        new=body,
        reason=reason,
        site_id=str(body["site_id"]),
    )
    ledger.append(
        uow,
        control_site_id,
        LedgerKind.DECISION,
        handover_ref(order_id),
        {"sha256": decision_digest(body), "order_id": order_id},
    )


def hand_over_cancellations(ledger: Ledger, control_site_id: str) -> Any:
    """The hook the control node gives orders (`on_cancelled`): a handed-over order cancelled
    at the control (its copy: not started there) is cancelled at its site's node too, by the
    site's own rules (docs/replication.md, "Orders handed over to the sites"): an audit row
    `order_cancellation` carrying which order, whose, why, by whom and when (orders'
    `cancellation_body`) and the control's signed ledger entry naming its SHA-256, in the
    cancelling transaction. An order of the control's own site, or one never handed over (the
    seed's, which every copy holds as it was), stays."""

    def hand_over(uow: UnitOfWork, actor: Actor, order: Any, reason: str) -> None:
        if order.site_id == control_site_id:
            return
        if not audit_entries_on(uow.session, {HANDOVER_ENTITY: [order.id]}):
            return  # never handed over: the site holds it only as its copy began
        body = cancellation_body(order, reason=reason, cancelled_by=actor.full_name)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            CANCELLATION_ENTITY,
            order.id,
            new=body,
            reason="a handed-over order cancelled at the control site: handed over to that "
            "site's node, which cancels it by its own rules",
            site_id=order.site_id,
        )
        ledger.append(
            uow,
            control_site_id,
            LedgerKind.DECISION,
            cancellation_ref(order.id),
            {"sha256": decision_digest(body), "order_id": order.id},
        )

    return hand_over


def _ledger_chain(
    origin: str, ledger: Sequence[Any], rows: Sequence[dict[str, Any]]
) -> tuple[str | None, list[str]]:
    """Whether one origin's ledger records (id, seq, payload; their rows parsed) hold together
    as its site's chain: each entry of that site, its hash over its payload (docs/custody.md:
    SHA-256 over the previous entry's hash, a newline and the payload), linked to the entry
    before, no ledger seq skipped. (The first problem or None, the ids of the key rotations by
    the kind their hash covers, not by their column, which it does not.)"""
    rotations: list[str] = []
    before: tuple[Any, Any] | None = None
    for rec, row in zip(ledger, rows, strict=True):
        where = f"{origin} seq {rec.seq}"
        prev, own, text = row.get("prev_hash"), row.get("entry_hash"), row.get("payload")
        if row.get("site_id") != origin:
            return f"{where}: an entry of another site's chain", rotations
        if not (isinstance(prev, str) and isinstance(text, str) and isinstance(own, str)):
            return f"{where}: a ledger entry without its hashes", rotations
        digest = hashlib.sha256(prev.encode("ascii", "replace") + b"\n" + text.encode()).hexdigest()
        if digest != own:
            return f"{where}: the ledger entry's hash does not match its content", rotations
        seq = row.get("seq")
        if before is not None and (seq != before[0] + 1 or prev != before[1]):
            return f"{where}: ledger seq {seq} does not follow seq {before[0]}", rotations
        if not isinstance(seq, int):
            return f"{where}: a ledger entry without its seq", rotations
        before = (seq, own)
        if '"key"' not in text:  # no rotation (a payload is parsed only when it may be one)
            continue
        try:
            kind = json.loads(text).get("kind")
        except (ValueError, AttributeError):
            return f"{where}: a ledger entry's payload is not JSON", rotations
        if kind == LedgerKind.KEY.value:
            rotations.append(rec.id)
    return None, rotations


def _visible(actor: Actor, dossiers: list[ReceivedDossier]) -> list[ReceivedDossier]:
    """The dossiers of the sites `actor` sees in the release queue (`release.queue.read`)."""
    authorize(actor, Permission.RELEASE_QUEUE_READ)
    sites = visible_sites(actor, Permission.RELEASE_QUEUE_READ)
    return [d for d in dossiers if sites is None or d.dossier["site_id"] in sites]


def site_signed(
    uow: UnitOfWork,
    origin: str,
    *,
    kind: LedgerKind,
    ref: str,
    body: dict[str, Any],
    record_seq: int,
    what: str,
) -> str | None:
    """Why a site node's signature on one of its records does not hold (None: it does): the
    entry of the site's ledger chain of `kind` and `ref` whose body names the record
    (`body`: its SHA-256 and what it is about, every field equal) must be held, follow the
    record (`record_seq`: the site signs in the transaction that sends it, so an entry before
    it signed an earlier sending), carry a signature that verifies with a key of that site
    known here and not retired before it, be held with every record of the origin before it,
    and the site's ledger chain up to it must hold together (`ControlReleases._site_signed`
    for a dossier; `transfers.py` for an order given up for a transfer). `what` names the
    record in the answer."""
    ref = ref[:100]
    ledger = uow.session.execute(  # plain columns: no entity built per record
        select(InboxRecord.id, InboxRecord.seq, InboxRecord.payload)
        .where(InboxRecord.origin_site == origin, InboxRecord.kind == RecordKind.LEDGER.value)
        .order_by(InboxRecord.seq)
    ).all()
    rows = [json.loads(r.payload) for r in ledger]
    at, earlier = None, None  # this sending's entry; an entry naming it before its record
    for n, row in enumerate(rows):
        if row.get("kind") == kind.value and row.get("ref") == ref:
            named = json.loads(str(row.get("payload") or "{}")).get("body") or {}
            if any(named.get(k) != v for k, v in body.items()):
                continue
            # the site signs a record in the transaction that sends it, so its entry
            # follows the record: one before it signed an earlier sending, and that
            # record replayed as the newest (its audit row and record rewritten on the
            # broker, the plain hashes redone) is not what the site sent last
            if ledger[n].seq < record_seq:
                earlier = ledger[n].seq
            elif at is None:
                at = n
    if at is None and earlier is not None:
        return (
            f"{origin}'s entry naming this {what} (record seq {earlier}) comes before its "
            f"record (seq {record_seq}): it signed an earlier sending; this one is "
            f"replayed, not the newest {what} the site sent"
        )
    if at is None:
        return f"the entry of {origin}'s ledger chain signing this {what} is not held here"
    entry_seq = ledger[at].seq
    if not rows[at].get("signature"):
        return f"{origin}'s entry naming this {what} ({ledger[at].id}) carries no signature"
    # every record before the entry held (a rotation held back is a hole), and the site's
    # ledger chain up to it intact (each entry's hash over its payload, each linked to the
    # one before, no ledger seq skipped): the signed entry's hash then covers every entry
    # before it, so a signed entry rewritten into a rotation, or a rotation into another
    # kind, is seen; only the rotations' and the entry's signatures are checked
    held = uow.session.scalar(
        select(func.count())
        .select_from(InboxRecord)
        .where(InboxRecord.origin_site == origin, InboxRecord.seq <= entry_seq)
    )
    if held != entry_seq:
        return (
            f"the entry of {origin}'s ledger chain signing this {what} is not held here "
            "with every record before it (yet)"
        )
    problem, rotations = _ledger_chain(origin, ledger[: at + 1], rows[: at + 1])
    if problem is not None:
        return problem
    checked = [
        _to_record(rec)
        for rec in uow.session.scalars(
            select(InboxRecord)
            .where(InboxRecord.id.in_([*rotations, ledger[at].id]))
            .order_by(InboxRecord.seq)
        )
    ]
    report = verify_signatures(checked, KeyBook(site_public_keys(uow.session)))
    problems = [*verify_chain(checked[-1:]), *report.problems]
    if problems:
        return problems[0]
    if report.unknown_keys:
        return (
            f"{origin}'s signing key is not known here ({', '.join(report.unknown_keys)}): "
            "register it with `nearfab node keys import`"
        )
    return None


class ControlReleases:
    """The control site's side: the site nodes' dossiers waiting for a QP, and the decision."""

    def __init__(
        self, service: ReplicationService, remote: RemoteRelease, ledger: Ledger | None = None
    ) -> None:
        """`ledger`: the control's custody ledger, where each decision is also an entry
        signed with the control site's key, which only the control node holds."""
        self.service = service
        self._remote = remote
        self._ledger = ledger

    def dossiers(
        self, uow: UnitOfWork, *, waiting_only: bool = True, batch_id: str | None = None
    ) -> list[ReceivedDossier]:
        """The newest dossier of each site batch received, oldest first, with the decision
        signed on it (if any); `waiting_only`: those not decided yet; `batch_id`: that batch's
        only (its records found by their ref, `dossier:<batch id>@…`, not by reading every
        dossier). A dossier sent again after a decision (the site refused it as changed, say)
        waits again."""
        newest: dict[tuple[str, str], ReceivedDossier] = {}
        query = select(InboxRecord).where(InboxRecord.kind == RecordKind.DOSSIER.value)
        if batch_id is not None:
            query = query.where(
                InboxRecord.source_ref.startswith(f"dossier:{batch_id}@", autoescape=True)
            )
        rows = uow.session.execute(
            query.order_by(InboxRecord.origin_site, InboxRecord.seq)
        ).scalars()
        for rec in rows:
            dossier = json.loads(rec.payload)
            if dossier.get("site_id") != rec.origin_site:
                # a node sends its own site's batches only: a dossier about another site's
                # batch is never decided on, nor may it hide that site's own dossier
                log.warning("release dossier %s is about another site's batch", rec.id)
                continue
            newest[(rec.origin_site, str(dossier["batch_id"]))] = ReceivedDossier(
                rec.id,
                rec.record_hash,
                rec.origin_site,
                rec.seq,
                rec.received_at.isoformat(),
                dossier,
            )
        decided: dict[str, dict[str, Any]] = {}
        batches = [batch for _, batch in newest]
        for row in audit_entries_on(uow.session, {REMOTE_RELEASE_ENTITY: batches}):
            new = row.new or {}
            decided[str(new.get("dossier_record"))] = {
                "decision": new.get("decision"),
                "reason": new.get("reason"),
                "signed_by": (new.get("signature") or {}).get("signer_name"),
                "signed_at": (new.get("signature") or {}).get("signed_at"),
            }
        out = [replace(d, decision=decided.get(d.record_id)) for d in newest.values()]
        if waiting_only:
            out = [d for d in out if d.decision is None]
        return sorted(out, key=lambda d: (d.received_at, d.record_id))

    def read(
        self, uow: UnitOfWork, actor: Actor, *, waiting_only: bool = True
    ) -> list[ReceivedDossier]:
        """`dossiers` of the sites `actor` sees for the release queue (`release.queue.read`)."""
        return _visible(actor, self.dossiers(uow, waiting_only=waiting_only))

    def newest(self, uow: UnitOfWork, batch_id: str, actor: Actor | None = None) -> ReceivedDossier:
        """The newest dossier received for a batch (decided or not); NotFound for none, or
        for one of a site `actor` does not see (a record elsewhere is never confirmed)."""
        found = [
            d
            for d in self.dossiers(uow, waiting_only=False, batch_id=batch_id)
            if d.dossier["batch_id"] == batch_id
        ]
        if actor is not None:
            found = _visible(actor, found)
        if not found:
            raise NotFound(f"no release dossier received for batch {batch_id!r}", field="batch_id")
        return max(found, key=lambda d: (d.received_at, d.seq))

    def _site_of(self, uow: UnitOfWork, batch_id: str) -> str | None:
        """The site of a batch's newest dossier, for the refusal's audit row (None: none)."""
        try:
            return str(self.newest(uow, batch_id).dossier["site_id"])
        except NotFound:
            return None

    def _check_as_sent(self, uow: UnitOfWork, received: ReceivedDossier) -> None:
        """Refused (`dossier_not_verified`) unless the dossier is the one its origin sent: no
        fork or altered record named for the origin; the dossier record checks against the
        audit row that sent it (`verify_chain` over the two: their hashes, their link, the
        dossier equal to the row's `new`), which must be held; and the site signed it
        (`_site_signed`)."""
        origin = received.origin_site
        number = received.dossier.get("batch_number")
        named = uow.session.scalar(
            select(InboxProblem.detail)
            .where(
                InboxProblem.origin_site == origin,
                InboxProblem.kind.in_([ProblemKind.FORK.value, ProblemKind.BAD_HASH.value]),
            )
            .limit(1)
        )
        sent_by = record_id(origin, f"audit:{received.dossier.get('audit_seq')}")
        audit_row = uow.session.get(InboxRecord, sent_by)
        own = uow.session.get(InboxRecord, received.record_id)
        if named is None and (audit_row is None or own is None):
            named = f"the audit row that sent it ({sent_by}) is not held here"
        elif named is None and audit_row is not None and own is not None:
            sent = json.loads(audit_row.payload)
            if not isinstance(sent, dict) or sent.get("entity_type") != DOSSIER_ENTITY:
                named = f"{sent_by} is not an audit row sending a dossier"
            else:
                problems = verify_chain([_to_record(audit_row), _to_record(own)])
                named = problems[0] if problems else self._site_signed(uow, received, sent)
        if named is not None:
            raise Refused(
                f"the dossier of batch {number} is not verified as the one {origin} sent: "
                f"{named}; nothing was signed",
                field="dossier",
                code="dossier_not_verified",
            )

    def _site_signed(
        self, uow: UnitOfWork, received: ReceivedDossier, sent: dict[str, Any]
    ) -> str | None:
        """Why the site's signature on the dossier does not hold (None: it does). The site
        names the SHA-256 of the dossier it sent (the audit row's `new`) in an entry of its
        ledger chain signed with its key (`SiteDossiers.send_ready`). That entry must be held,
        its own hashes must check, and its Ed25519 signature must verify with a key of that
        site known here (registered, or introduced by a rotation its key before signed) and
        not retired by a rotation before it: so a dossier rewritten on the broker with every
        plain hash redone is not signed. It must follow the dossier's record (an older dossier
        replayed as the newest has its entry before), be held with every record before it, and
        the site's ledger chain up to it must hold together (hashes, links, no entry missing),
        so the signed entry's hash covers every rotation before it. Only the ledger records
        are read, and only the rotations' and the entry's signatures checked
        (`verify_signatures`): the rest of the chain is `inbox status`'s and the anchor's
        business."""
        batch_id = str(received.dossier.get("batch_id"))
        return site_signed(
            uow,
            received.origin_site,
            kind=LedgerKind.DOSSIER,
            ref=dossier_ref(batch_id),
            body={"sha256": decision_digest(sent.get("new") or {}), "batch_id": batch_id},
            record_seq=received.seq,
            what="dossier",
        )

    def decide(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        *,
        decision: str,
        password: str,
        meaning: str,
        shown_hash: str,
        reason: str | None = None,
        username: str | None = None,
        totp: str | None = None,
        exceptional: bool = False,
    ) -> dict[str, Any]:
        """The control site's QP releases or rejects a site node's batch on its newest dossier
        (`shown_hash`: the hash of the dossier the QP was shown, always named; a newer one is
        refused, look again). Writes the signature and the `remote_release` audit row
        (decision, reason, the dossier's record and hash, the signature row) in one
        transaction; that row goes to the site node, which applies it. Every refusal is on
        record against the batch (quality's rule for QP decisions). Two QPs at once: on
        PostgreSQL the dossier's inbox record is locked first and read again, so the second
        sees the first's decision; SQLite has one writer, and the second's stale read fails at
        its write. `exceptional`: the release of an out-of-specification batch at the treating
        physician's request the dossier carries (quality's `RemoteRelease.sign`)."""
        with refused_on_batch(uow, actor, batch_id, self._site_of(uow, batch_id)):
            self._remote.require_control()  # before anything: a site node decides nothing
            first = self.newest(uow, batch_id, actor)
            uow.session.execute(
                select(InboxRecord.id).where(InboxRecord.id == first.record_id).with_for_update()
            )
            received = self.newest(uow, batch_id, actor)  # read again under the lock
            dossier = received.dossier
            self._check_as_sent(uow, received)
            if received.decision is not None:
                done = "released" if received.decision["decision"] == "release" else "rejected"
                raise Refused(
                    f"batch {dossier['batch_number']} was already {done} on this dossier by "
                    f"{received.decision['signed_by']}",
                    field="batch_id",
                    code="already_decided",
                )
            # an empty hash is a hash that does not match (the CLI's `--shown-hash ""`)
            if shown_hash != dossier["shown_hash"]:
                raise Refused(
                    f"the dossier of batch {dossier['batch_number']} is not the one you were "
                    "shown (the site sent a newer one); nothing was signed, look again",
                    field="shown_hash",
                    code="record_changed",
                )
            sig, decided, why = self._remote.sign(
                uow,
                actor,
                dossier,
                decision=decision,
                password=password,
                meaning=meaning,
                reason=reason,
                username=username,
                totp=totp,
                exceptional=exceptional,
            )
            body = {
                "dossier_record": received.record_id,
                "dossier_record_hash": received.record_hash,
                "origin_site": received.origin_site,
                "site_id": dossier["site_id"],
                "batch_id": dossier["batch_id"],
                "batch_number": dossier["batch_number"],
                "review_id": dossier["review_id"],
                "shown_hash": dossier["shown_hash"],
                "decision": decided.value,
                "exceptional": exceptional,
                "reason": why,
                "signature": SignatureService.carried(sig),
            }
            audit(
                uow,
                actor,
                AuditAction.SIGN,
                REMOTE_RELEASE_ENTITY,
                str(dossier["batch_id"]),
                new=body,
                reason=why or f"QP {decided.value} of site node batch {dossier['batch_number']}",
                site_id=str(dossier["site_id"]),
            )
            if self._ledger is not None:  # signed with the key only the control holds
                self._ledger.append(
                    uow,
                    self.service.site_id,
                    LedgerKind.DECISION,
                    decision_ref(str(dossier["batch_id"])),
                    {
                        "sha256": decision_digest(body),
                        "batch_id": dossier["batch_id"],
                        "site_id": dossier["site_id"],
                        "decision": decided.value,
                        "signature_id": sig.id,
                    },
                )
            uow.flush()
        uow.commit()
        return body
