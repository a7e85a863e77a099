"""Filling a node's outbox in the same transaction that writes its records.

The domains write audit rows and ledger entries as they always have; nothing in them knows
about replication. A `before_commit` hook on every ORM session whose engine has a capture
installed (bootstrap, for a node: `install_capture`) flushes, reads the source chains past the
outbox's watermarks (the audit chain's `seq`; the owning site's ledger `seq`) and appends one
outbox record per new row, numbered and hash-chained, before the transaction commits. Both
source chains are numbered under a lock held to commit, so they commit in `seq` order and a
watermark misses nothing; rows written on a bare connection (bulk Core inserts committed
outside an ORM session) are caught by the next commit, or by `capture_now`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, event, insert, literal, select, text
from sqlalchemy.orm import Session

from nearfab.common.canonical import canonical_json
from nearfab.common.clock import Clock
from nearfab.custody.reads import alert_states, ledger_head_view, ledger_rows_after
from nearfab.identity.reads import audit_head_view, audit_rows_after
from nearfab.production.reads import batch_view
from nearfab.replication.enums import RecordKind
from nearfab.replication.logic import GENESIS, record_hash, record_id
from nearfab.replication.models import OutboxHead, OutboxRecord
from nearfab.telemetry import reads as telemetry_reads

HEAD = cast(Table, OutboxHead.__table__)
OUTBOX = cast(Table, OutboxRecord.__table__)

ALERT_ENTITY = "custody_alert"  # custody's audit rows of an alert and its follow-up steps
DOSSIER_ENTITY = "release_dossier"  # an audit row sending a release dossier (releases.py)

AuditFilter = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class CaptureConfig:
    """What one node owns and publishes: the audit rows `audit` accepts (None: none) and, when
    `ledger`, every entry of the owning site's ledger chain."""

    site_id: str
    clock: Clock
    audit: AuditFilter | None = None
    ledger: bool = True


_CAPTURE: WeakKeyDictionary[Engine, CaptureConfig] = WeakKeyDictionary()


def install_capture(engine: Engine, config: CaptureConfig) -> None:
    """Every transaction on `engine` appends what it wrote to the node's outbox (bootstrap)."""
    _CAPTURE[engine] = config


def capture_config(engine: Engine) -> CaptureConfig | None:
    return _CAPTURE.get(engine)


def _read_head(conn: Connection, site_id: str, *, lock: bool) -> tuple[int, str, int, int] | None:
    if lock and conn.dialect.name != "postgresql":
        # SQLite: a no-op UPDATE takes the database's write lock before the head is read
        row = conn.execute(
            text(
                "UPDATE replication_outbox_head SET seq = seq WHERE site_id = :site "
                "RETURNING seq, hash, audit_seq, ledger_seq"
            ),
            {"site": site_id},
        ).first()
    else:
        query = select(HEAD.c.seq, HEAD.c.hash, HEAD.c.audit_seq, HEAD.c.ledger_seq).where(
            HEAD.c.site_id == site_id
        )
        row = conn.execute(query.with_for_update() if lock else query).first()
    return None if row is None else (int(row[0]), str(row[1]), int(row[2]), int(row[3]))


def _watermarks(conn: Connection, config: CaptureConfig) -> tuple[int, int, int, int]:
    """In one statement: the outbox's audit and ledger watermarks, and where the audit chain
    and the owning site's ledger chain end now (each 0 when there is none)."""
    site = config.site_id
    head = select(HEAD.c.audit_seq, HEAD.c.ledger_seq).where(HEAD.c.site_id == site)
    row = conn.execute(
        select(
            head.with_only_columns(HEAD.c.audit_seq).scalar_subquery(),
            head.with_only_columns(HEAD.c.ledger_seq).scalar_subquery(),
            audit_head_view() if config.audit is not None else literal(0),
            ledger_head_view(site) if config.ledger else literal(0),
        )
    ).one()
    return tuple(int(v or 0) for v in row)  # type: ignore[return-value]


def capture(conn: Connection, config: CaptureConfig) -> int:
    """Append the node's new audit rows and ledger entries to its outbox, in the connection's
    transaction. Returns how many records were added."""
    site = config.site_id
    seen_audit, seen_ledger, audit_top, ledger_top = _watermarks(conn, config)
    if audit_top <= seen_audit and ledger_top <= seen_ledger:
        return 0  # the common case: one statement of three index look-ups
    head = _read_head(conn, site, lock=True)
    if head is None:
        conn.execute(
            insert(HEAD).values(site_id=site, seq=0, hash=GENESIS, audit_seq=0, ledger_seq=0)
        )
        head = (0, GENESIS, 0, 0)
    seq, prev, audit_seq, ledger_seq = head
    sources: list[tuple[str, str, str, dict[str, Any]]] = []
    if config.audit is not None and audit_top > audit_seq:
        for row in audit_rows_after(conn, audit_seq):
            audit_seq = int(row["seq"])
            if config.audit(row):
                sources.append(
                    (RecordKind.AUDIT.value, f"audit:{row['seq']}", str(row["row_hash"]), row)
                )
    sources = _with_alerts(conn, site, _with_dossiers(_with_batch_summaries(conn, site, sources)))
    if config.ledger and ledger_top > ledger_seq:
        for row in ledger_rows_after(conn, site, ledger_seq):
            ledger_seq = int(row["seq"])
            ref = f"ledger:{row['site_id']}:{row['seq']}"
            sources.append((RecordKind.LEDGER.value, ref, str(row["entry_hash"]), row))
    now = config.clock.now()
    rows = []
    for kind, ref, chain_hash, row in sources:
        seq += 1
        ident = record_id(site, ref)
        payload = canonical_json(row).decode("utf-8")
        digest = record_hash(
            id=ident,
            origin_site=site,
            seq=seq,
            kind=kind,
            source_ref=ref,
            chain_hash=chain_hash,
            prev_hash=prev,
            payload=payload,
        )
        rows.append(
            {
                "id": ident,
                "origin_site": site,
                "seq": seq,
                "kind": kind,
                "source_ref": ref,
                "chain_hash": chain_hash,
                "prev_hash": prev,
                "record_hash": digest,
                "payload": payload,
                "created_at": now,
                "published_at": None,
                "attempts": 0,
            }
        )
        prev = digest
    if rows:
        conn.execute(insert(OUTBOX), rows)
    conn.execute(
        HEAD.update()
        .where(HEAD.c.site_id == site)
        .values(seq=seq, hash=prev, audit_seq=audit_seq, ledger_seq=ledger_seq)
    )
    return len(rows)


def _with_batch_summaries(
    conn: Connection, site: str, sources: list[tuple[str, str, str, dict[str, Any]]]
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """After each audit row about one of the site's batch records, that record's summary as the
    transaction leaves it (production's read view), carrying the audit row's hash."""
    batch_ids = {
        str(row["entity_id"])
        for kind, _ref, _hash, row in sources
        if kind == RecordKind.AUDIT.value and row.get("entity_type") == "batch"
    }
    if not batch_ids:
        return sources
    view = batch_view()
    found = {
        str(r["id"]): dict(r)
        for r in conn.execute(
            select(view).where(view.c.id.in_(sorted(batch_ids)), view.c.site_id == site)
        ).mappings()
    }
    runs = _finished_runs(conn, site, [str(b["job_id"]) for b in found.values()])
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    for kind, ref, chain_hash, row in sources:
        out.append((kind, ref, chain_hash, row))
        summary = found.get(str(row.get("entity_id")))
        if kind == RecordKind.AUDIT.value and row.get("entity_type") == "batch" and summary:
            out.append(
                (
                    RecordKind.BATCH.value,
                    f"batch:{summary['id']}@{ref}",
                    chain_hash,
                    {**summary, "audit_seq": row["seq"]},
                )
            )
            run = runs.pop(str(summary["job_id"]), None)  # once: the first change after it ended
            if run is not None:
                out.append(
                    (
                        RecordKind.TELEMETRY.value,
                        f"telemetry:{summary['job_id']}",
                        chain_hash,
                        {**run, "batch_id": summary["id"], "audit_seq": row["seq"]},
                    )
                )
    return out


def _with_dossiers(
    sources: list[tuple[str, str, str, dict[str, Any]]],
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """After each audit row that sends a release dossier (replication/releases.py), the dossier
    as a record of its own, carrying the audit row's hash: the control site finds its QP's
    queue by kind instead of reading every audit record it holds."""
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    for kind, ref, chain_hash, row in sources:
        out.append((kind, ref, chain_hash, row))
        if kind == RecordKind.AUDIT.value and row.get("entity_type") == DOSSIER_ENTITY:
            dossier = {**(row.get("new") or {}), "audit_seq": row["seq"], "sent_at": row["at"]}
            ref_of = f"dossier:{row['entity_id']}@{ref}"
            out.append((RecordKind.DOSSIER.value, ref_of, chain_hash, dossier))
    return out


def _with_alerts(
    conn: Connection, site: str, sources: list[tuple[str, str, str, dict[str, Any]]]
) -> list[tuple[str, str, str, dict[str, Any]]]:
    """After each audit row about one of the site's custody alerts (raised, or a step of its
    follow-up), the alert's state as the transaction leaves it (custody's read view
    `alert_states`), carrying the audit row's hash: the control site sees where each alert
    stands, and that the patient was contacted, without reading every audit record."""
    ids = [
        str(row["entity_id"])
        for kind, _ref, _hash, row in sources
        if kind == RecordKind.AUDIT.value and row.get("entity_type") == ALERT_ENTITY
    ]
    if not ids:
        return sources
    states = alert_states(conn, site, ids)
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    for kind, ref, chain_hash, row in sources:
        out.append((kind, ref, chain_hash, row))
        state = states.get(str(row.get("entity_id")))
        if kind == RecordKind.AUDIT.value and row.get("entity_type") == ALERT_ENTITY and state:
            ref_of = f"alert:{state['alert_id']}@{ref}"
            out.append(
                (RecordKind.ALERT.value, ref_of, chain_hash, {**state, "audit_seq": row["seq"]})
            )
    return out


def _finished_runs(conn: Connection, site: str, runs: list[str]) -> dict[str, dict[str, Any]]:
    """The telemetry summaries of these runs that ended and are not in the outbox yet. The
    outbox is asked first: a run already sent is not summarised again (its readings are read
    only once, whatever the batch record's later changes)."""
    if not runs:
        return {}
    sent = set(
        conn.execute(
            select(OUTBOX.c.source_ref).where(
                OUTBOX.c.origin_site == site,
                OUTBOX.c.source_ref.in_([f"telemetry:{run}" for run in runs]),
            )
        ).scalars()
    )
    unsent = [run for run in runs if f"telemetry:{run}" not in sent]
    return telemetry_reads.finished_run_summaries(conn, unsent)


def _engine_of(session: Session) -> Engine | None:
    bind = session.get_bind()
    if isinstance(bind, Engine):
        return bind
    return getattr(bind, "engine", None)


@event.listens_for(Session, "before_commit")
def _capture_before_commit(session: Session) -> None:
    engine = _engine_of(session)
    config = _CAPTURE.get(engine) if engine is not None else None
    if config is None:
        return
    session.flush()  # the audit rows get their seq and hash at flush (auditchain.py)
    capture(session.connection(), config)
