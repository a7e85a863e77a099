"""Use cases of a node: its outbox (what waits, what the broker acknowledged), sending it, and
applying what other nodes sent into its inbox (once, with gaps, duplicates and forks named)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update

from nearfab.common.errors import ValidationFailed
from nearfab.custody import LedgerKind
from nearfab.custody.reads import ledger_entries_of_kind, site_public_keys
from nearfab.identity import Actor, AuditAction, audit
from nearfab.identity.reads import audit_entries_on
from nearfab.replication.capture import CaptureConfig, capture
from nearfab.replication.enums import ProblemKind, RecordKind
from nearfab.replication.logic import (
    MalformedRecord,
    Record,
    describe_range,
    missing_ranges,
    parse_message,
    topic,
    verify_chain,
)
from nearfab.replication.models import InboxProblem, InboxRecord, OutboxHead, OutboxRecord
from nearfab.replication.signatures import KeyBook, verify_signatures
from nearfab.uow import UnitOfWork

log = logging.getLogger(__name__)

ANCHOR_ENTITY = "replication_origin"  # the audit rows that anchor an origin's chains


class Sender(Protocol):
    """A broker connection that publishes (topic, payload, key) and says which keys the broker
    acknowledged (transport.OutboxPublisher)."""

    def send(self, messages: Sequence[tuple[str, bytes, str]], timeout_s: float) -> set[str]: ...


@dataclass(frozen=True)
class OutboxStatus:
    site_id: str
    records: int
    pending: int
    published: int
    head_seq: int
    head_hash: str
    oldest_pending_seq: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SendResult:
    attempted: int
    acknowledged: int
    pending: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Applied:
    """What one batch of messages did to the inbox."""

    applied: int = 0
    ignored_own: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class OriginStatus:
    """One origin node's records as this node holds them."""

    origin_site: str
    records: int
    head_seq: int
    gaps: list[str]
    duplicates: int
    forks: list[str]
    altered: list[str]
    chain_problems: list[str]
    # ledger signatures checked with the keys this node holds (replication/signatures.py);
    # a key it does not know is named here, its signatures unchecked
    signatures_verified: int = 0
    unverified_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.forks or self.altered or self.chain_problems)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def _to_record(row: OutboxRecord | InboxRecord) -> Record:
    created = row.created_at.astimezone(UTC).isoformat()
    return Record(
        id=row.id,
        origin_site=row.origin_site,
        seq=row.seq,
        kind=row.kind,
        source_ref=row.source_ref,
        chain_hash=row.chain_hash,
        prev_hash=row.prev_hash,
        record_hash=row.record_hash,
        payload=row.payload,
        created_at=created,
    )


class ReplicationService:
    """A node's replication: `site_id` is the site it owns (its records' origin)."""

    def __init__(self, config: CaptureConfig) -> None:
        self.config = config
        self.site_id = config.site_id
        # a site node: acts on the control's decisions after each batch received
        # (decisions.ControlDecisions, set by bootstrap through decisions.wire_site_node)
        self.decisions: Any = None
        # this node's custody ledger (custody's CustodyLedger, set by bootstrap): each anchor
        # is also an entry of this node's site's chain, signed with its key
        self.ledger: Any = None

    # --- outbox ------------------------------------------------------------------------------
    def capture_now(self, uow: UnitOfWork) -> int:
        """Catch up rows written outside an ORM session's commit (bulk Core inserts)."""
        added = capture(uow.session.connection(), self.config)
        uow.commit()
        return added

    def outbox(self, uow: UnitOfWork) -> OutboxStatus:
        """How much of the outbox waits for the broker and where the outbox chain ends."""
        s = uow.session
        total, published, oldest = s.execute(
            select(
                func.count(),
                func.count(OutboxRecord.published_at),
                func.min(OutboxRecord.seq).filter(OutboxRecord.published_at.is_(None)),
            ).where(OutboxRecord.origin_site == self.site_id)
        ).one()
        head = s.get(OutboxHead, self.site_id)
        return OutboxStatus(
            site_id=self.site_id,
            records=int(total),
            pending=int(total) - int(published),
            published=int(published),
            head_seq=head.seq if head else 0,
            head_hash=head.hash if head else "",
            oldest_pending_seq=None if oldest is None else int(oldest),
        )

    def pending(self, uow: UnitOfWork, limit: int = 1000) -> list[Record]:
        """The records the broker has not acknowledged yet, oldest first."""
        rows = uow.session.scalars(
            select(OutboxRecord)
            .where(OutboxRecord.origin_site == self.site_id, OutboxRecord.published_at.is_(None))
            .order_by(OutboxRecord.seq)
            .limit(limit)
        )
        return [_to_record(r) for r in rows]

    def mark_published(
        self, uow: UnitOfWork, acknowledged: Iterable[str], tried: Iterable[str]
    ) -> None:
        """The broker acknowledged these records (QoS 1 PUBACK): they are not sent again. Every
        record tried counts an attempt."""
        now = uow.clock.now()
        acked = list(acknowledged)
        tried_ids = list(tried)
        for start in range(0, len(tried_ids), 500):
            part = tried_ids[start : start + 500]
            uow.session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.id.in_(part))
                .values(attempts=OutboxRecord.attempts + 1)
            )
        for start in range(0, len(acked), 500):
            part = acked[start : start + 500]
            uow.session.execute(
                update(OutboxRecord)
                .where(OutboxRecord.id.in_(part), OutboxRecord.published_at.is_(None))
                .values(published_at=now)
            )
        uow.commit()

    def resend_from(self, uow: UnitOfWork, seq: int) -> int:
        """Send again every record from `seq` on (a receiver named a gap the broker lost: a
        broker that crashed before saving what it had acknowledged). The receiver drops the
        records it already holds. Returns how many will be sent again."""
        if seq < 1:
            raise ValidationFailed("give a sequence number from 1", field="seq")
        result = uow.session.execute(
            update(OutboxRecord)
            .where(OutboxRecord.origin_site == self.site_id, OutboxRecord.seq >= seq)
            .values(published_at=None)
        )
        uow.commit()
        return int(getattr(result, "rowcount", 0) or 0)

    def replicate_once(
        self,
        uow_factory: Callable[[], UnitOfWork],
        sender: Sender,
        *,
        batch: int = 500,
        timeout_s: float = 10.0,
        max_batches: int | None = None,
    ) -> SendResult:
        """Send everything pending, `batch` records at a time, each batch's acknowledged records
        marked in one transaction. A batch the broker did not fully acknowledge stops the run:
        its unacknowledged records stay pending and are sent again next time (the receiver
        drops the ones it already has)."""
        with uow_factory() as uow:
            self.capture_now(uow)
        attempted = acknowledged = 0
        error: str | None = None
        batches = 0
        while max_batches is None or batches < max_batches:
            batches += 1
            with uow_factory() as uow:
                records = self.pending(uow, batch)
            if not records:
                break
            messages = [(topic(r.origin_site, r.kind), r.to_message(), r.id) for r in records]
            try:
                acked = sender.send(messages, timeout_s)
            except ConnectionError as exc:
                error = str(exc)
                break
            attempted += len(records)
            acknowledged += len(acked)
            with uow_factory() as uow:
                self.mark_published(uow, acked, [r.id for r in records])
            if len(acked) < len(records):
                error = f"the broker acknowledged {len(acked)} of {len(records)} records"
                break
        with uow_factory() as uow:
            left = self.outbox(uow).pending
        return SendResult(attempted, acknowledged, left, error)

    # --- inbox -------------------------------------------------------------------------------
    def apply(self, uow: UnitOfWork, messages: Sequence[bytes]) -> Applied:
        """Apply messages from other nodes in one transaction: a new record is stored once (its
        id is the key); the same record again is a duplicate (counted, dropped); another record
        at a sequence already held, or another content under an id already held, is a fork;
        a record whose hash does not match its content is altered; a sequence jump opens a
        gap. Each problem is kept, named, in the inbox's problem list. What is held already is
        read in one statement per 500 ids and per origin, whatever the batch's size."""
        now = uow.clock.now()
        result = Applied()
        s = uow.session
        parsed: list[Record] = []
        for data in messages:
            try:
                parsed.append(parse_message(data))
            except MalformedRecord as exc:
                self._problem(uow, result, "?", None, ProblemKind.MALFORMED, None, None, str(exc))
        parsed = [r for r in parsed if not self._own(r, result)]
        # (id -> hash) and ((origin, seq) -> (id, hash, source_ref)) of what is held
        by_id: dict[str, str] = {}
        by_seq: dict[tuple[str, int], tuple[str, str, str]] = {}
        columns = (
            InboxRecord.id,
            InboxRecord.origin_site,
            InboxRecord.seq,
            InboxRecord.record_hash,
            InboxRecord.source_ref,
        )
        ids = list({r.id for r in parsed})
        for start in range(0, len(ids), 500):
            for ident, origin, seq, digest, ref in s.execute(
                select(*columns).where(InboxRecord.id.in_(ids[start : start + 500]))
            ):
                by_id[ident] = digest
                by_seq[(origin, seq)] = (ident, digest, ref)
        tops: dict[str, int] = {}
        for origin in {r.origin_site for r in parsed}:
            seqs = sorted({r.seq for r in parsed if r.origin_site == origin})
            for start in range(0, len(seqs), 500):
                for ident, _o, seq, digest, ref in s.execute(
                    select(*columns).where(
                        InboxRecord.origin_site == origin,
                        InboxRecord.seq.in_(seqs[start : start + 500]),
                    )
                ):
                    by_seq[(origin, seq)] = (ident, digest, ref)
            top = s.scalar(
                select(func.max(InboxRecord.seq)).where(InboxRecord.origin_site == origin)
            )
            tops[origin] = int(top or 0)
        rows: list[dict[str, Any]] = []
        for record in parsed:
            origin, seq = record.origin_site, record.seq
            where = f"{origin} seq {seq} ({record.source_ref})"

            if record.record_hash != record.expected_hash():
                self._about(
                    uow,
                    result,
                    record,
                    ProblemKind.BAD_HASH,
                    f"{where}: the record's hash does not match its content: altered, not applied",
                )
                continue
            held = by_id.get(record.id)
            if held is not None:
                if held == record.record_hash:
                    self._about(
                        uow,
                        result,
                        record,
                        ProblemKind.DUPLICATE,
                        f"{where}: received again (same hash): dropped",
                    )
                else:
                    self._about(
                        uow,
                        result,
                        record,
                        ProblemKind.FORK,
                        f"{where}: fork: record {record.id} held with hash {held[:12]}…, "
                        f"received with {record.record_hash[:12]}…",
                    )
                continue
            other = by_seq.get((origin, seq))
            if other is not None:
                self._about(
                    uow,
                    result,
                    record,
                    ProblemKind.FORK,
                    f"{where}: fork: seq {seq} held as {other[2]} (hash {other[1][:12]}…), "
                    f"received as {record.source_ref} (hash {record.record_hash[:12]}…)",
                )
                continue
            top = tops.get(origin, 0)
            if seq > top + 1:
                self._about(
                    uow,
                    result,
                    record,
                    ProblemKind.GAP,
                    f"{origin}: gap: {describe_range(top + 1, seq - 1)} missing before seq {seq}",
                    seq=top + 1,
                )
            tops[origin] = max(top, seq)
            by_id[record.id] = record.record_hash
            by_seq[(origin, seq)] = (record.id, record.record_hash, record.source_ref)
            rows.append(
                {
                    "id": record.id,
                    "origin_site": origin,
                    "seq": seq,
                    "kind": record.kind,
                    "source_ref": record.source_ref,
                    "chain_hash": record.chain_hash,
                    "prev_hash": record.prev_hash,
                    "record_hash": record.record_hash,
                    "payload": record.payload,
                    "created_at": _parse_time(record.created_at, now),
                    "received_at": now,
                    "about": record_about(record.kind, record.payload),
                }
            )
        if rows:
            s.execute(insert(InboxRecord), rows)
        result.applied = len(rows)
        uow.commit()
        return result

    def _about(
        self,
        uow: UnitOfWork,
        result: Applied,
        record: Record,
        kind: ProblemKind,
        detail: str,
        *,
        seq: int | None = None,
    ) -> None:
        self._problem(
            uow,
            result,
            record.origin_site,
            record.seq if seq is None else seq,
            kind,
            record.id,
            record.record_hash,
            detail,
        )

    def _own(self, record: Record, result: Applied) -> bool:
        # a node hears its own records on a shared topic tree: they are its outbox's, not news
        if record.origin_site == self.site_id:
            result.ignored_own += 1
            return True
        return False

    @staticmethod
    def _problem(
        uow: UnitOfWork,
        result: Applied,
        origin: str,
        seq: int | None,
        kind: ProblemKind,
        record_id: str | None,
        digest: str | None,
        detail: str,
    ) -> None:
        if kind != ProblemKind.DUPLICATE:
            log.warning("replication: %s", detail)
        result.problems.append(detail)
        uow.session.add(
            InboxProblem(
                origin_site=origin[:32],
                seq=seq,
                kind=kind.value,
                record_id=None if record_id is None else record_id[:160],
                record_hash=None if digest is None else digest[:64],
                detail=detail,
                detected_at=uow.clock.now(),
            )
        )

    def received(self, uow: UnitOfWork, origin_site: str) -> list[Record]:
        """One origin's records as held here, in seq order."""
        rows = uow.session.scalars(
            select(InboxRecord)
            .where(InboxRecord.origin_site == origin_site)
            .order_by(InboxRecord.seq)
        )
        return [_to_record(r) for r in rows]

    def inbox_status(self, uow: UnitOfWork) -> list[OriginStatus]:
        """Per origin node: records held, gaps still open, duplicates dropped, forks and altered
        records named, and the chains verified over what is held."""
        s = uow.session
        book = KeyBook(site_public_keys(s))
        origins = set(s.scalars(select(InboxRecord.origin_site).distinct()))
        origins |= set(s.scalars(select(InboxProblem.origin_site).distinct()))
        anchors = _anchors(s, origins, self.site_id)
        out = []
        for origin in sorted(origins):
            records = self.received(uow, origin)
            problems = list(
                s.scalars(
                    select(InboxProblem)
                    .where(InboxProblem.origin_site == origin)
                    .order_by(InboxProblem.id)
                )
            )
            gaps = [
                f"{origin}: gap: {describe_range(a, b)} missing"
                for a, b in missing_ranges(r.seq for r in records)
            ]
            signed = verify_signatures(records, book)
            unlike = _unlike_anchors(origin, records, anchors.get(origin, []))
            out.append(
                OriginStatus(
                    origin_site=origin,
                    records=len(records),
                    head_seq=records[-1].seq if records else 0,
                    gaps=gaps,
                    duplicates=sum(p.kind == ProblemKind.DUPLICATE.value for p in problems),
                    forks=[p.detail for p in problems if p.kind == ProblemKind.FORK.value],
                    altered=[
                        p.detail
                        for p in problems
                        if p.kind in (ProblemKind.BAD_HASH.value, ProblemKind.MALFORMED.value)
                    ],
                    chain_problems=[*verify_chain(records), *signed.problems, *unlike],
                    signatures_verified=signed.verified,
                    unverified_keys=signed.unknown_keys,
                )
            )
        return out

    def anchor(
        self, uow: UnitOfWork, actor: Actor, *, allow_unverified: bool = False
    ) -> dict[str, Any]:
        """Record, in this node's own audit trail (hash-chained, keyed, checkpointed and signed:
        docs/audit-trail.md), where each origin's replicated chains end once they verify: the
        last record's seq and hash, and the heads of the origin's audit and ledger chains it
        carries. An origin with a gap, a fork, an altered record or a broken chain is not
        anchored; it is named. Nor is one with ledger signatures by keys this node does not
        hold (`unverified_keys`: unchecked, so not evidence) unless `allow_unverified`, which
        the anchor then says. An origin whose head has not moved since its last anchor is
        left alone. Returns {"anchored": {...}, "refused": {origin: reason}}."""
        statuses = {st.origin_site: st for st in self.inbox_status(uow)}
        origins = [o for o in statuses if o != "?"]
        last = anchored_seqs(uow.session, origins)
        anchored: dict[str, Any] = {}
        refused: dict[str, str] = {}
        for origin in sorted(origins):
            st = statuses[origin]
            if not st.ok:
                first = [*st.gaps, *st.forks, *st.altered, *st.chain_problems][0]
                refused[origin] = first
                continue
            if st.head_seq <= last.get(origin, 0):
                continue
            if st.unverified_keys and not allow_unverified:
                refused[origin] = (
                    f"{origin}: signed by keys this node does not hold: "
                    f"{', '.join(st.unverified_keys)} (their signatures are unchecked; register "
                    "the site's keys: nearfab node keys import, or anchor with --allow-unverified)"
                )
                continue
            records = self.received(uow, origin)
            heads: dict[str, Any] = {}
            for record in records:
                if record.kind not in (RecordKind.AUDIT.value, RecordKind.LEDGER.value):
                    continue  # a batch summary carries its audit row's hash, not a chain's
                row = json.loads(record.payload)
                chain = "audit" if record.kind == "audit" else f"ledger:{row.get('site_id')}"
                heads[chain] = {"seq": row.get("seq"), "hash": record.chain_hash}
            body = {
                "seq": records[-1].seq,
                "record_hash": records[-1].record_hash,
                "chains": heads,
                # said in the anchor: signatures by these keys were not checked here
                "unverified_keys": st.unverified_keys,
                "allowed_unverified": bool(st.unverified_keys),
            }
            why = "replicated chains verified"
            if st.unverified_keys:
                why += (
                    "; anchored with signatures by keys this node does not hold, unchecked "
                    "(--allow-unverified)"
                )
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                ANCHOR_ENTITY,
                origin,
                new=body,
                reason=why,
                site_id=self.site_id,
            )
            if self.ledger is not None:  # the same anchor, signed in this node's chain
                self.ledger.append(
                    uow,
                    self.site_id,
                    LedgerKind.REPLICA_ANCHOR,
                    f"replica:{origin}:{body['seq']}",
                    {"origin_site": origin, **body},
                )
            anchored[origin] = body
        uow.commit()
        return {"anchored": anchored, "refused": refused}


def _anchors(
    session: Any, origins: Iterable[str], node_site: str
) -> dict[str, list[tuple[int, str, str]]]:
    """Per origin, what this node anchored of it: the last record's seq and hash, and when,
    from its audit rows `replication_origin` and from the `replica_anchor` entries of its own
    ledger chain (signed with its key). Both, not one: an audit row edited in the database (its
    seq lowered, or made no number) would otherwise hide a tail cut after it."""
    wanted = set(origins)
    found: dict[str, dict[tuple[int, str], str]] = {}
    for row in audit_entries_on(session, {ANCHOR_ENTITY: wanted}):
        new = row.new or {}
        if isinstance(new.get("seq"), int):
            at = row.at.isoformat() if row.at is not None else "?"
            found.setdefault(row.entity_id, {})[(new["seq"], str(new.get("record_hash")))] = at
    for entry in ledger_entries_of_kind(session, node_site, LedgerKind.REPLICA_ANCHOR.value):
        try:
            body = json.loads(str(entry["payload"]))["body"]
        except (ValueError, KeyError, TypeError):
            continue  # custody's ledger verification names an entry that does not parse
        origin = body.get("origin_site") if isinstance(body, dict) else None
        if origin in wanted and isinstance(body.get("seq"), int):
            at = entry["recorded_at"].isoformat() if entry["recorded_at"] is not None else "?"
            found.setdefault(str(origin), {}).setdefault(
                (body["seq"], str(body.get("record_hash"))), at
            )
    return {
        origin: [(seq, digest, at) for (seq, digest), at in sorted(anchors.items())]
        for origin, anchors in found.items()
    }


def _unlike_anchors(
    origin: str, records: Sequence[Record], anchors: Sequence[tuple[int, str, str]]
) -> list[str]:
    """The anchors the records held now disagree with: an anchored record missing, or held
    with another hash (changed after it was anchored here; its hash covers every record
    before it through the chain's links)."""
    held = {r.seq: r.record_hash for r in records}
    problems = []
    for seq, digest, at in anchors:
        if seq not in held:
            problems.append(f"{origin} seq {seq}: anchored here on {at}, no longer held")
        elif held[seq] != digest:
            problems.append(
                f"{origin} seq {seq}: differs from the record anchored here on {at} (changed "
                "after it was anchored)"
            )
    return problems


def anchored_seqs(session: Any, origins: Iterable[str]) -> dict[str, int]:
    """Where this node last anchored each origin's records (the highest anchored seq), read
    from its audit trail in one statement; an origin never anchored is absent."""
    last: dict[str, int] = {}
    for row in audit_entries_on(session, {ANCHOR_ENTITY: origins}):
        seq = (row.new or {}).get("seq")
        if isinstance(seq, int):
            last[row.entity_id] = max(last.get(row.entity_id, 0), seq)
    return last


# the field of a record's payload that says what it is about, per record kind
ABOUT_FIELDS = {RecordKind.AUDIT.value: "entity_type", RecordKind.LEDGER.value: "kind"}


def record_about(kind: str, payload: str) -> str | None:
    """What an inbox record is about, kept in its indexed column `about` as it is stored, so
    the reads that look for one kind of row (`outcomes.site_outcomes`, `decisions.waiting_at`)
    select by it instead of scanning the payloads' text: an audit row's `entity_type`, a
    ledger entry's `kind`. None for the other record kinds, and for a payload that is not a
    JSON object naming it as a string (the record is stored all the same: its hash is
    checked, not its payload's shape). Migration 0033 fills the rows stored before it by
    the same rule."""
    name = ABOUT_FIELDS.get(kind)
    if name is None:
        return None
    try:
        row = json.loads(payload)
    except ValueError:
        return None
    value = row.get(name) if isinstance(row, dict) else None
    return value[:64] if isinstance(value, str) and value else None


def _parse_time(text: str, default: datetime) -> datetime:
    """The record's creation time as sent (ISO 8601); `default` if it is not one."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return default
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
