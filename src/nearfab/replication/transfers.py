"""Orders moved between sites (docs/replication.md, "Orders moved between sites").

An order is made at the site node that holds it. To have it made at another site's node, the
control decides a **transfer** (`ControlTransfers.request`: an audit row `order_transfer` and
the control's signed ledger entry naming its SHA-256, in one transaction). The site holding the
order gives it up by its own rules (`SiteReleases.release`, called by `decisions.py` once the
control's signed entry verifies there): one designed or scheduled is cancelled there (with its
job), and in the same transaction the site writes an audit row `order_release` carrying the
order as it held it (orders' `handover_body`) and an entry of its own ledger chain, signed with
its key, naming that row's SHA-256; one started or ended is refused, on record
(`not_transferable`). Only when that release reaches the control, signed by the giving site,
does the control hand the order over to the receiving site (`ControlTransfers.hand_over_released`:
the same `order_handover` row and signed entry as an order taken at the control), whose node
takes and makes it through its usual path (`decisions._apply_handover`). Two phases, in this
order, so the order is never held for making at two sites, and never given up without being
handed on (a release that does not verify is never acted on, and the order is then held by no
site's plan: it is listed, for the control's people to act on).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select

from nearfab.common.errors import NotFound, Refused, ValidationFailed, require_reason
from nearfab.common.ids import new_id
from nearfab.custody import LedgerKind
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    audit,
    authorize,
    can,
    search_audit,
    system_actor,
)
from nearfab.identity.reads import audit_entries_on
from nearfab.masterfiles.reads import master_files
from nearfab.network.reads import control_site, sites, sites_by_id
from nearfab.orders import (
    RELEASE_FORMAT,
    OrderStatus,
    check_transferable,
    move_copy,
    release_body,
    transfer_body,
    transferred_handover,
)
from nearfab.replication.decisions import (
    APPLIED_ENTITY,
    HANDOVER_ENTITY,
    REFUSED_ENTITY,
    RELEASE_ENTITY,
    TRANSFER_ENTITY,
    WAITING_ENTITY,
)
from nearfab.replication.enums import ProblemKind, RecordKind
from nearfab.replication.logic import (
    decision_digest,
    order_release_ref,
    record_id,
    transfer_ref,
    verify_chain,
)
from nearfab.replication.models import InboxProblem, InboxRecord
from nearfab.replication.releases import Ledger, signed_handover, site_signed
from nearfab.replication.services import ReplicationService, _to_record
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

# a transfer's state at the control: asked of the giving site; handed over to the receiving
# site once the giving site's signed release arrived; ended without a hand-over (the giving
# site refused, or the control's copy was cancelled meanwhile)
REQUESTED, HANDED_OVER, ENDED = "requested", "handed_over", "ended"
# why a transfer ended, kept in its end row (`ended_by`): the giving site refused to give the
# order up; or the control's copy was no longer designed when the release arrived
GIVER_REFUSED, COPY_CHANGED = "giving_site_refused", "control_copy_changed"

# a transfer the giving site has not answered for this long is shown as stuck (the node page,
# `GET /api/v1/order-transfers`): its node may be cut off, or its answer held back on the way
ANSWER_DUE = timedelta(hours=1)
_PAGE = 500  # the audit search's largest page


class Orders(Protocol):  # the part of orders' OrderService used here
    def get(self, uow: UnitOfWork, order_id: str) -> Any: ...


class Plans(Protocol):  # the part of scheduling's SchedulingService used here
    def cancel_order(self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str) -> Any: ...


@dataclass(frozen=True)
class Transfer:
    """A transfer as the control holds it (from its own records and the giving site's)."""

    transfer_id: str
    order_id: str
    from_site_id: str
    to_site_id: str
    reason: str
    requested_by: str
    requested_at: str
    record_id: str  # the control's record carrying the transfer (the sites act on it)
    status: str = REQUESTED
    outcome: str | None = None  # how it ended, or which record handed it over
    body: dict[str, Any] | None = None
    handover_record: str | None = None  # the control's record handing it to the receiving site
    changed_at: str | None = None  # when the control handed it over or ended it (ISO 8601)
    ended_by: str | None = None  # why it ended: GIVER_REFUSED or COPY_CHANGED

    def to_dict(self) -> dict[str, Any]:
        return {
            "transfer_id": self.transfer_id,
            "order_id": self.order_id,
            "from_site_id": self.from_site_id,
            "to_site_id": self.to_site_id,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at,
            "record_id": self.record_id,
            "status": self.status,
            "outcome": self.outcome,
        }


@dataclass(frozen=True)
class TransferState:
    """A transfer as the control's people see it (the node page's section "Orders moving
    between sites", `GET /api/v1/order-transfers`): where it is, in words, since when, and
    what is wrong when it is stuck."""

    transfer: Transfer
    from_code: str
    to_code: str
    # requested, given_up (at the giving site: its release not handed over yet), refused (by
    # the giving site), ended (the control's copy cancelled meanwhile), handed_over, taken
    # (at the receiving site, from its records), waiting_there, refused_there
    state: str
    words: str
    since: datetime
    stuck: str | None = None  # why it does not move, and what to do

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.transfer.to_dict(),
            "from_site_code": self.from_code,
            "to_site_code": self.to_code,
            "state": self.state,
            "state_words": self.words,
            "since": self.since,
            "stuck": self.stuck,
            "handover_record": self.transfer.handover_record,
        }


def _utc(value: str | datetime | None) -> datetime | None:
    if value is None:
        return None
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _order_in_rows(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """An order's master file (code, version) as a site's `order` audit row names it."""
    label = str((row.get("new") or {}).get("master_file") or "")
    code, _, version = label.rpartition(" v")
    return (code or None), (version or None)


class ControlTransfers:
    """The control node's side of moving an order between site nodes."""

    def __init__(self, service: ReplicationService, orders: Orders, ledger: Ledger) -> None:
        """`ledger`: the control's custody ledger (each transfer and each hand-over signed
        with the control site's key, which only the control node holds)."""
        self.service = service
        self._orders = orders
        self._ledger = ledger
        self.actor = replace(system_actor("replication"), site_id=service.site_id)
        # one pass at a time in a process (the inbox's batches and the link's passes run in
        # two threads): a transfer is handed over once
        self._pass_lock = threading.Lock()

    # --- reading the transfers ---------------------------------------------------------------
    def _own_rows(self, uow: UnitOfWork, order_id: str | None) -> list[tuple[str, dict[str, Any]]]:
        """The control's own audit rows of transfers and hand-overs (of one order, if named),
        oldest first, each with the record id it is sent to the sites under (`record_id`:
        origin and `audit:<seq>`, as the outbox captures it). Read from the audit table by its
        index on (entity_type, entity_id) through identity's reads, not by a scan of the
        outbox's text: the transfers' order ids first (`search_audit`, by entity type), then
        those orders' transfer and hand-over rows by id (`audit_entries_on`)."""
        if order_id is not None:
            orders = [order_id]
        else:
            orders, offset = [], 0
            while True:
                page, total = search_audit(
                    uow,
                    self.actor,
                    entity_type=TRANSFER_ENTITY,
                    limit=_PAGE,
                    offset=offset,
                )
                orders.extend(e.entity_id for e in page)
                offset += len(page)
                if not page or offset >= total:
                    break
        if not orders:
            return []
        found = audit_entries_on(uow.session, {TRANSFER_ENTITY: orders, HANDOVER_ENTITY: orders})
        site = self.service.site_id
        return [
            (
                record_id(site, f"audit:{e.seq}"),
                {
                    "entity_type": e.entity_type,
                    "action": e.action,
                    "new": e.new,
                    "at": e.at.isoformat(),
                },
            )
            for e in sorted(found, key=lambda e: e.seq)
        ]

    def transfers(self, uow: UnitOfWork, order_id: str | None = None) -> list[Transfer]:
        """Every transfer decided here (of one order, if named), oldest first, with its state:
        requested (the giving site has not answered yet, or its release does not verify),
        handed over (the record that handed the order to the receiving site), or ended (the
        giving site refused, naming why; or the control's copy was cancelled meanwhile)."""
        own = self._own_rows(uow, order_id)
        out: dict[str, Transfer] = {}
        for rid, row in own:
            if row["entity_type"] != TRANSFER_ENTITY:
                continue
            new = row.get("new") or {}
            tid = str(new.get("transfer_id"))
            if row.get("action") == AuditAction.CREATE.value:
                out[tid] = Transfer(
                    transfer_id=tid,
                    order_id=str(new.get("order_id")),
                    from_site_id=str(new.get("from_site_id")),
                    to_site_id=str(new.get("to_site_id")),
                    reason=str(new.get("reason")),
                    requested_by=str(new.get("requested_by")),
                    requested_at=str(new.get("requested_at")),
                    record_id=rid,
                    body=dict(new),
                )
            elif tid in out:  # its end, on record here
                out[tid] = replace(
                    out[tid],
                    status=ENDED,
                    outcome=str(new.get("outcome")),
                    changed_at=str(row.get("at")),
                    ended_by=new.get("ended_by"),
                )
        for rid, row in own:
            if row["entity_type"] != HANDOVER_ENTITY:
                continue
            tid = str((row.get("new") or {}).get("transfer_id"))
            if tid in out and out[tid].status == REQUESTED:
                out[tid] = replace(
                    out[tid],
                    status=HANDED_OVER,
                    outcome=f"handed over: {rid}",
                    handover_record=rid,
                    changed_at=str(row.get("at")),
                )
        return list(out.values())

    def read(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order_id: str | None = None,
        *,
        permission: Permission = Permission.PLAN_RUN,
    ) -> list[Transfer]:
        """`transfers` whose giving **and** receiving sites `actor`'s grant of `permission`
        reaches (`plan.run` for `nearfab node transfers`; a planner of one of the two sites
        does not see a transfer between it and another: it names the other site's order
        book). Each site checked by the permission matrix itself (`can`), so no grant is taken
        for network-wide by default."""
        authorize(actor, permission)
        return [
            t
            for t in self.transfers(uow, order_id)
            if can(actor, permission, site_id=t.from_site_id)
            and can(actor, permission, site_id=t.to_site_id)
        ]

    def states(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        permission: Permission,
        now: datetime,
        order_id: str | None = None,
    ) -> list[TransferState]:
        """The transfers `actor` may see (`read`, under `permission`), newest first, each with
        where it is as the control knows it: from its own records (requested, handed over,
        ended) and the sites' records held here: the giving site's applied row (given up) or
        refusal, its release held but not verifying (stuck: the reason, e.g. its key not
        registered here: `nearfab node keys import`), no answer for longer than `ANSWER_DUE`
        (stuck: the site's link), and the receiving site's rows about the hand-over record
        (taken, waiting, refused there). Read only: nothing is acted on here."""
        out = []
        seen = self.read(uow, actor, order_id, permission=permission)
        codes = {
            s.id: s.code
            for s in sites_by_id(
                uow.session, sorted({x for t in seen for x in (t.from_site_id, t.to_site_id)})
            ).values()
        }
        for t in seen:
            out.append(self._state(uow, t, codes, now))
        return sorted(out, key=lambda v: (v.transfer.requested_at, v.transfer.transfer_id))[::-1]

    def _site_rows(
        self, uow: UnitOfWork, origin: str, record_id: str
    ) -> list[tuple[dict[str, Any], datetime]]:
        """A site's applied, refused and waiting rows about one control record, as held here
        (found by the inbox's indexed column `about`, 0033), oldest first."""
        found = uow.session.execute(
            select(InboxRecord.payload)
            .where(
                InboxRecord.about.in_((APPLIED_ENTITY, REFUSED_ENTITY, WAITING_ENTITY)),
                InboxRecord.origin_site == origin,
                InboxRecord.payload.contains(f'"entity_id":"{record_id}"'),
            )
            .order_by(InboxRecord.seq)
        ).all()
        out = []
        for (payload,) in found:
            row = json.loads(payload)
            if (
                isinstance(row, dict)
                and row.get("entity_id") == record_id
                and row.get("site_id") == origin
                and row.get("entity_type") in (APPLIED_ENTITY, REFUSED_ENTITY, WAITING_ENTITY)
            ):
                at = _utc(str(row.get("at")))
                assert at is not None
                out.append((row, at))
        return out

    def _state(
        self, uow: UnitOfWork, t: Transfer, codes: dict[str, str], now: datetime
    ) -> TransferState:
        frm, to = codes.get(t.from_site_id, t.from_site_id), codes.get(t.to_site_id, t.to_site_id)
        asked = _utc(t.requested_at)
        assert asked is not None
        view = TransferState(t, frm, to, REQUESTED, f"requested of {frm}", asked)
        if t.status == ENDED:
            ended = _utc(t.changed_at) or asked
            if t.ended_by == GIVER_REFUSED:
                return replace(view, state="refused", words=f"{t.outcome}", since=ended)
            return replace(view, state=ENDED, words=f"ended: {t.outcome}", since=ended)
        if t.status == HANDED_OVER and t.handover_record is not None:
            handed = _utc(t.changed_at) or asked
            view = replace(
                view,
                state=HANDED_OVER,
                words=f"handed over to {to} ({t.handover_record}); not taken there yet",
                since=handed,
            )
            rows = self._site_rows(uow, t.to_site_id, t.handover_record)
            if not rows:
                return view
            row, at = rows[-1]
            new = row.get("new") if isinstance(row.get("new"), dict) else {}
            assert isinstance(new, dict)
            there = str(new.get("outcome") or row.get("reason") or "")
            if row.get("entity_type") == WAITING_ENTITY:
                return replace(
                    view, state="waiting_there", words=f"waiting at {to}: {there}", since=at
                )
            if row.get("entity_type") == REFUSED_ENTITY or row.get("action") == "refuse":
                return replace(
                    view,
                    state="refused_there",
                    words=f"refused at {to}: {there}",
                    since=at,
                    stuck=f"the order is held for making by no site: {to} refused it; "
                    "cancel it at the control or take it up with that site",
                )
            return replace(view, state="taken", words=f"taken at {to}: {there}", since=at)
        # requested: what the giving site said, as held here
        answers = self._site_rows(uow, t.from_site_id, t.record_id)
        problems: list[str] = []
        self._answer(uow, t, problems)
        given = [
            (row, at)
            for row, at in answers
            if row.get("entity_type") == APPLIED_ENTITY and row.get("action") != "refuse"
        ]
        if given:
            row, at = given[-1]
            view = replace(
                view,
                state="given_up",
                words=f"given up at {frm}; its release not handed over yet",
                since=at,
            )
            if problems:
                return replace(
                    view,
                    stuck=f"{frm}'s release is held here but not acted on: {problems[-1]}"
                    + ("" if "keys import" in problems[-1] else " (`nearfab node inbox status`)"),
                )
            return view
        refused = [
            (row, at)
            for row, at in answers
            if row.get("entity_type") == REFUSED_ENTITY
            or (row.get("entity_type") == APPLIED_ENTITY and row.get("action") == "refuse")
        ]
        if refused:
            row, at = refused[-1]
            new = row.get("new") if isinstance(row.get("new"), dict) else {}
            assert isinstance(new, dict)
            why = str(new.get("outcome") or row.get("reason") or "")
            if row.get("entity_type") == APPLIED_ENTITY:  # final: ends at the next pass here
                return replace(view, state="refused", words=f"refused at {frm}: {why}", since=at)
            return replace(view, stuck=f"not acted on at {frm}: {why}")
        if problems:  # a release held whose applied row is not (yet)
            return replace(
                view,
                stuck=f"{frm}'s release is held here but not acted on: {problems[-1]}",
            )
        waiting = [(row, at) for row, at in answers if row.get("entity_type") == WAITING_ENTITY]
        if waiting:
            row, at = waiting[-1]
            new = row.get("new") if isinstance(row.get("new"), dict) else {}
            assert isinstance(new, dict)
            view = replace(
                view,
                words=f"requested; waiting at {frm}: {new.get('outcome') or row.get('reason')}",
            )
        if now - asked > ANSWER_DUE:
            return replace(
                view,
                stuck=f"no answer from {frm} since {asked:%Y-%m-%d %H:%M} UTC: check its node's "
                "link (`nearfab node inbox status` there, the page's Received table here)",
            )
        return view

    # --- where an order is, as the control knows it --------------------------------------------
    def _held_by(self, uow: UnitOfWork, order_id: str) -> tuple[str, str | None, str | None]:
        """The site node holding the order, as the control knows it (site id, master-file code,
        version): the receiving site of its last transfer handed over; else the site of the
        control's copy (an order it took and handed over); else the site whose own records
        say it took it (its `order` audit row, which a node writes for its own site only).
        NotFound for an order none of these name; refused for an order every copy of the
        network held as it began (`in_every_copy`: each site node holds it as that site's, so
        another could not take it)."""
        try:
            copy = self._orders.get(uow, order_id)
        except NotFound:
            copy = None
        done = [t for t in self.transfers(uow, order_id) if t.status == HANDED_OVER]
        if copy is not None:
            if copy.site_id == self.service.site_id:
                raise Refused(
                    f"order {order_id} is the control site's own: not moved between site nodes",
                    field="order_id",
                    code="control_site",
                )
            if not audit_entries_on(uow.session, {HANDOVER_ENTITY: [order_id]}):
                raise Refused(
                    f"order {order_id} was held by every copy of the network as it began: "
                    "each site node holds it as its site's, so it is not moved between them",
                    field="order_id",
                    code="in_every_copy",
                )
            if copy.status != OrderStatus.DESIGNED.value:
                raise Refused(
                    f"order {order_id} is {copy.status} in the control's copy: not moved",
                    field="order_id",
                    code="not_transferable",
                )
            site = done[-1].to_site_id if done else copy.site_id
            return site, copy.master_file_code, str(copy.master_file_version)
        taken = uow.session.execute(
            select(InboxRecord.origin_site, InboxRecord.payload)
            .where(
                InboxRecord.about == "order",  # the sites' `order` rows (indexed, 0033)
                InboxRecord.kind == RecordKind.AUDIT.value,
                InboxRecord.payload.contains(f'"entity_id":"{order_id}"'),
            )
            .order_by(InboxRecord.received_at, InboxRecord.seq)
        ).all()
        for origin, payload in taken:
            row = json.loads(payload)
            if not (
                isinstance(row, dict)
                and row.get("entity_type") == "order"
                and row.get("entity_id") == order_id
                and row.get("action") == AuditAction.CREATE.value
            ):
                continue
            if row.get("site_id") != origin or (row.get("new") or {}).get("site_id") != origin:
                log.warning("an order row of %s names another site: %s", origin, order_id)
                continue
            code, version = _order_in_rows(row)
            return (done[-1].to_site_id if done else origin), code, version
        raise NotFound(f"order {order_id} is not known here", field="order_id")

    # --- the decision ---------------------------------------------------------------------------
    def request(
        self, uow: UnitOfWork, actor: Actor, order_id: str, *, to_site: str, reason: str
    ) -> Transfer:
        """Move an order from the site node holding it to site `to_site` (code or id), at
        the control node: the audit row `order_transfer` (its `new`: orders' `transfer_body`)
        and the control's ledger entry naming its SHA-256, signed, in one transaction; the
        giving site acts on it (decisions.py). The caller must plan (`plan.run`) for both
        sites. Refused, nothing written: no reason; an order not known here, or held by
        every copy (`in_every_copy`), or cancelled in the control's copy; a transfer of it
        not ended yet (`transfer_open`); to the site holding it (`same_site`), to a site that
        gave it up before (`given_up_there`: it holds it cancelled), to the control site, to a
        site that is not active, or that its master file does not list (`site_not_allowed`)."""
        authorize(actor, Permission.PLAN_RUN)
        reason = require_reason(reason, "moving an order to another site")
        network = sites(uow.session)
        target = next((s for s in network if to_site in (s.id, s.code)), None)
        if target is None:
            raise NotFound(f"to_site: no site {to_site!r}", field="to_site")
        from_site, code, version = self._held_by(uow, order_id)
        authorize(actor, Permission.PLAN_RUN, site_id=from_site)
        authorize(actor, Permission.PLAN_RUN, site_id=target.id)
        hub = control_site(uow.session)
        if hub is not None and target.id == hub.id:
            raise Refused(
                "to_site: the control site's node makes no site's orders",
                field="to_site",
                code="control_site",
            )
        if target.id == from_site:
            raise Refused(
                f"to_site: order {order_id} is held by {target.code} already",
                field="to_site",
                code="same_site",
            )
        if target.status != "active":
            raise Refused(
                f"to_site: {target.code} is {target.status}: it takes no orders",
                field="to_site",
                code="site_not_active",
            )
        made_to = next(
            (m for m in master_files(uow.session) if (m.code, str(m.version)) == (code, version)),
            None,
        )
        if made_to is not None and target.id not in (made_to.allowed_site_ids or []):
            raise Refused(
                f"to_site: {made_to.code} v{made_to.version} is not made at {target.code} "
                "(its master file does not list it)",
                field="to_site",
                code="site_not_allowed",
            )
        history = self.transfers(uow, order_id)
        if any(t.status == HANDED_OVER and t.from_site_id == target.id for t in history):
            # that node holds the order cancelled (given up): a hand-over back would find it
            # held there already and take nothing, and the order would be made nowhere
            raise Refused(
                f"to_site: {target.code} gave order {order_id} up before and holds it "
                "cancelled: it is not moved back there",
                field="to_site",
                code="given_up_there",
            )
        open_ = [t for t in history if t.status == REQUESTED]
        if open_:
            raise Refused(
                f"order {order_id} is being moved already (transfer {open_[0].transfer_id} "
                "to site " + open_[0].to_site_id + ", not answered yet)",
                field="order_id",
                code="transfer_open",
            )
        body = transfer_body(
            transfer_id=new_id("TRF"),
            order_id=order_id,
            from_site_id=from_site,
            to_site_id=target.id,
            reason=reason,
            requested_by=actor.full_name,
            requested_at=uow.clock.now(),
        )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            TRANSFER_ENTITY,
            order_id,
            new=body,
            reason=reason,
            site_id=from_site,
        )
        self._ledger.append(
            uow,
            self.service.site_id,
            LedgerKind.DECISION,
            transfer_ref(order_id),
            {
                "sha256": decision_digest(body),
                "order_id": order_id,
                "transfer_id": body["transfer_id"],
            },
        )
        uow.commit()
        (made,) = [t for t in self.transfers(uow, order_id) if t.transfer_id == body["transfer_id"]]
        return made

    # --- the giving site's answer ------------------------------------------------------------
    def _release_problem(
        self, uow: UnitOfWork, t: Transfer, rec: Any, row: dict[str, Any]
    ) -> str | None:
        """Why a release record is not the giving site's answer to transfer `t` (None: it is):
        the origin with a fork or an altered record named; the audit row's own hash; the body
        not naming this transfer, order and sites, or not carrying the order as that site's;
        and the site's signed entry naming its SHA-256 (`releases.site_signed`)."""
        origin = rec.origin_site
        named = uow.session.scalar(
            select(InboxProblem.detail)
            .where(
                InboxProblem.origin_site == origin,
                InboxProblem.kind.in_([ProblemKind.FORK.value, ProblemKind.BAD_HASH.value]),
            )
            .limit(1)
        )
        if named is not None:
            return str(named)
        problems = verify_chain([_to_record(rec)])
        if problems:
            return problems[0]
        new: dict[str, Any] = row["new"] if isinstance(row.get("new"), dict) else {}
        if new.get("format") != RELEASE_FORMAT:
            return "not an order release"
        handover: dict[str, Any] = new["handover"] if isinstance(new.get("handover"), dict) else {}
        order: dict[str, Any] = handover["order"] if isinstance(handover.get("order"), dict) else {}
        expected = {
            "entity_id": (row.get("entity_id"), t.order_id),
            "site_id": (row.get("site_id"), origin),
            "order_id": (new.get("order_id"), t.order_id),
            "transfer_id": (new.get("transfer_id"), t.transfer_id),
            "transfer_record": (new.get("transfer_record"), t.record_id),
            "from_site_id": (new.get("from_site_id"), t.from_site_id),
            "to_site_id": (new.get("to_site_id"), t.to_site_id),
            "handover.order_id": (handover.get("order_id"), t.order_id),
            "handover.site_id": (handover.get("site_id"), origin),
            "handover.order.id": (order.get("id"), t.order_id),
            "handover.order.site_id": (order.get("site_id"), origin),
        }
        if origin != t.from_site_id:
            return f"sent by {origin}, not by the giving site {t.from_site_id}"
        for name, (held, wanted) in expected.items():
            if held != wanted:
                return f"{name}: {held!r} is not this transfer's {wanted!r}"
        return site_signed(
            uow,
            origin,
            kind=LedgerKind.DECISION,
            ref=order_release_ref(t.order_id),
            body={
                "sha256": decision_digest(new),
                "order_id": t.order_id,
                "transfer_id": t.transfer_id,
            },
            record_seq=rec.seq,
            what="order release",
        )

    def _answer(
        self, uow: UnitOfWork, t: Transfer, problems: list[str] | None = None
    ) -> tuple[str, Any, dict[str, Any]] | None:
        """The giving site's answer to `t` as held here: ("released", record, row) for its
        release that verifies, ("refused", why, {}) for its refusal on record, None for none
        yet (a release that does not verify is logged, and its reason added to `problems`,
        and never acted on)."""
        found = uow.session.scalars(
            select(InboxRecord)
            .where(
                # the giving site's releases and applied rows (indexed, 0033)
                InboxRecord.about.in_((RELEASE_ENTITY, APPLIED_ENTITY)),
                InboxRecord.origin_site == t.from_site_id,
                InboxRecord.kind == RecordKind.AUDIT.value,
                InboxRecord.payload.contains(f'"transfer_id":"{t.transfer_id}"')
                | InboxRecord.payload.contains(f'"record_id":"{t.record_id}"'),
            )
            .order_by(InboxRecord.seq)
        ).all()
        for rec in found:
            row = json.loads(rec.payload)
            if not isinstance(row, dict):
                continue
            new: dict[str, Any] = row["new"] if isinstance(row.get("new"), dict) else {}
            if (
                row.get("entity_type") == APPLIED_ENTITY
                and row.get("action") == AuditAction.REFUSE.value
                and new.get("record_id") == t.record_id
                and row.get("site_id") == rec.origin_site
            ):
                return "refused", str(new.get("outcome") or row.get("reason")), {}
            if row.get("entity_type") != RELEASE_ENTITY:
                continue
            problem = self._release_problem(uow, t, rec, row)
            if problem is None:
                return "released", rec, row
            if problems is not None:
                problems.append(problem)
                continue
            log.warning(
                "order release %s for transfer %s not acted on: %s", rec.id, t.transfer_id, problem
            )
        return None

    def _end(self, uow: UnitOfWork, t: Transfer, outcome: str, *, ended_by: str) -> None:
        audit(
            uow,
            self.actor,
            AuditAction.TRANSITION,
            TRANSFER_ENTITY,
            t.order_id,
            new={
                "transfer_id": t.transfer_id,
                "order_id": t.order_id,
                "status": ENDED,
                "outcome": outcome,
                "ended_by": ended_by,
            },
            reason=f"transfer {t.transfer_id} of order {t.order_id} ended: {outcome}",
            site_id=t.from_site_id,
        )

    def hand_over_released(self, uow_factory: Callable[[], UnitOfWork]) -> list[str]:
        """Act on the giving sites' answers held here: for each transfer asked and not ended,
        the giving site's release, once it verifies (`_release_problem`), hands the order
        over to the receiving site in one transaction (the control's copy, if it holds one,
        moved to that site first; a copy cancelled meanwhile ends the transfer instead:
        nothing handed over); its refusal ends the transfer, naming why. Each transfer in its
        own transaction; safe to run at every pass (run after each batch the inbox stores and
        before each replicator pass). Returns the transfer ids handed over. One pass at a time
        in a process, and each transfer read again in its transaction: handed over once (two
        processes at once, a serving control and `node transfers`, could both hand it over;
        the receiving site takes the order once, by its id)."""
        with self._pass_lock:
            return self._hand_over_released(uow_factory)

    def _hand_over_released(self, uow_factory: Callable[[], UnitOfWork]) -> list[str]:
        with uow_factory() as uow:
            asked = [t for t in self.transfers(uow) if t.status == REQUESTED]
        handed = []
        for t in asked:
            with uow_factory() as uow:
                now = [n for n in self.transfers(uow, t.order_id) if n.transfer_id == t.transfer_id]
                if not now or now[0].status != REQUESTED:
                    continue  # handed over or ended meanwhile
                answer = self._answer(uow, t)
                if answer is None:
                    continue
                what, rec, row = answer
                if what == "refused":
                    self._end(uow, t, f"refused at the giving site: {rec}", ended_by=GIVER_REFUSED)
                    uow.commit()
                    continue
                try:
                    copy = self._orders.get(uow, t.order_id)
                except NotFound:
                    copy = None
                if copy is not None and copy.status != OrderStatus.DESIGNED.value:
                    self._end(
                        uow,
                        t,
                        f"given up by the site, but {copy.status} in the control's copy "
                        "meanwhile: not handed over",
                        ended_by=COPY_CHANGED,
                    )
                    uow.commit()
                    continue
                note = (
                    f"order {t.order_id} given up by site {t.from_site_id} for transfer "
                    f"{t.transfer_id} (its record {rec.id}): handed over to site {t.to_site_id}"
                )
                if copy is not None:
                    move_copy(uow, self.actor, t.order_id, to_site_id=t.to_site_id, reason=note)
                body = transferred_handover(row["new"]["handover"], to_site_id=t.to_site_id)
                body = {
                    **body,
                    "transfer_id": t.transfer_id,
                    "transferred_from": t.from_site_id,
                    "release_record": rec.id,
                }
                signed_handover(
                    uow, self.actor, self._ledger, self.service.site_id, body, reason=note
                )
                uow.commit()
                handed.append(t.transfer_id)
        return handed


class SiteReleases:
    """A site node's side: give up an order the control moves to another site, by this
    site's rules, with the release sent back signed (`release`)."""

    def __init__(self, service: ReplicationService, plans: Plans, ledger: Ledger) -> None:
        self.service = service
        self._plans = plans
        self._ledger = ledger

    def release(
        self,
        uow: UnitOfWork,
        actor: Actor,
        transfer: dict[str, Any],
        *,
        transfer_record: str,
        note: str,
        applied: Callable[[str], None],
    ) -> str:
        """Give up the order `transfer` (orders' `transfer_body`) names, in one transaction:
        checked by this site's rules (orders' `check_transferable`: designed, or scheduled),
        then `applied(outcome)` (the caller's applied row), the audit row `order_release`
        carrying the order as held here (orders' `release_body`), this site's signed ledger
        entry naming its SHA-256, and the order cancelled here with its job, if scheduled
        (scheduling's `cancel_order`, which commits). Refused, nothing written (orders'
        refusals: `not_transferable` naming the state, `order_not_held`, ...). The outcome."""
        site = self.service.site_id
        if not isinstance(transfer.get("transfer_id"), str):
            raise ValidationFailed("transfer_id: expected an id", field="transfer_id")
        order = check_transferable(uow, transfer, site_id=site)
        scheduled = order.status == OrderStatus.SCHEDULED.value
        body = release_body(uow, order, transfer, transfer_record=transfer_record)
        outcome = f"given up here for site {transfer['to_site_id']}" + (
            ", taken off the plan with its job" if scheduled else ""
        )
        applied(outcome)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            RELEASE_ENTITY,
            order.id,
            new=body,
            reason=note,
            site_id=site,
        )
        # signed with this site's key: a release forged on the way (every plain hash redone)
        # is never acted on at the control
        self._ledger.append(
            uow,
            site,
            LedgerKind.DECISION,
            order_release_ref(order.id),
            {
                "sha256": decision_digest(body),
                "order_id": order.id,
                "transfer_id": body["transfer_id"],
            },
        )
        self._plans.cancel_order(uow, actor, order.id, reason=note)  # commits
        return outcome
