"""The audit trail: one row per change, written in the changing transaction, append-only and
hash-chained (docs/audit-trail.md).

Every row gets a gapless `seq`, `prev_hash` (the row before's `row_hash`, or GENESIS) and
`row_hash` = SHA-256 of the canonical JSON of its content and `prev_hash`. Numbers and hashes
are given at flush time by a `before_flush` hook on every ORM session (so `audit`, `refuse` and
any `session.add(AuditEntry(...))` are chained), and by `append_audit_rows` for bulk Core
inserts. Each writing transaction first locks the one-row `audit_chain_head` (row lock on
PostgreSQL, the write lock on SQLite), so rows are numbered by one writer at a time, and moves it
onto its last row after the insert. Database triggers refuse UPDATE and DELETE on
`audit_entries` and `signatures`; `verify_chain` walks the chain and names the first bad row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

from sqlalchemy import Connection, Table, event, func, insert, or_, select, text, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.orm import attributes as orm_attributes

from nearfab.common.canonical import canonical_json, sha256_hex, to_jsonable
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.common.states import S, check_transition
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import AuditChainHead, AuditEntry, Signature
from nearfab.identity.permissions import Permission, authorize, visible_sites
from nearfab.uow import UnitOfWork

GENESIS = "0" * 64  # the `prev_hash` of the first row

# GMP data: changing one of these needs a reason in words (EU GMP Annex 11 §9, 21 CFR 11.10(e))
GMP_ENTITY_TYPES = frozenset(
    {
        "alarm",
        "batch",
        "container",
        "deviation",
        "job",
        "machine",
        "master_file",
        "material_lot",
        "monitoring_model",
        "order",
        "pack",
        "qualification",
        "recall",
        "release_review",
        "role",
        "site",
        "training",
        "unit",
        "user",
    }
)
REASON_ACTIONS = frozenset({AuditAction.UPDATE.value, AuditAction.TRANSITION.value})

_TABLE = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditChainHead.__table__)


# --- writing ------------------------------------------------------------------------------------
def require_audit_reason(action: AuditAction | str, entity_type: str, reason: str | None) -> None:
    """A change to GMP data (update or status change) is refused without a reason."""
    if (
        str(action) in REASON_ACTIONS
        and entity_type in GMP_ENTITY_TYPES
        and not (reason or "").strip()
    ):
        what = "a status change" if str(action) == "transition" else "a change"
        raise ValidationFailed(
            f"{what} to a {entity_type.replace('_', ' ')} needs a reason (GMP data)",
            field="reason",
        )


def audit(
    uow: UnitOfWork,
    actor: Actor,
    action: AuditAction | str,
    entity_type: str,
    entity_id: str,
    *,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    reason: str | None = None,
    site_id: str | None = None,
) -> AuditEntry:
    """Add an audit row to the current transaction: it commits or rolls back with the change.
    Its `seq` and hashes are given when the session flushes."""
    require_audit_reason(action, entity_type, reason)
    entry = AuditEntry(
        at=uow.clock.now(),
        actor_id=actor.user_id,
        actor_name=actor.full_name,
        action=str(action),
        entity_type=entity_type,
        entity_id=entity_id,
        old=to_jsonable(old) if old is not None else None,
        new=to_jsonable(new) if new is not None else None,
        reason=reason,
        site_id=site_id,
    )
    uow.session.add(entry)
    return entry


def audited_transition(
    uow: UnitOfWork,
    actor: Actor,
    record: Any,
    target: S,
    allowed: Mapping[S, frozenset[S]],
    *,
    entity_type: str,
    label: str,
    reason: str | None,
    site_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> S:
    """Move `record.status` to `target` if `allowed` says so, with its audit row in the same
    transaction; an illegal move (or one without a reason) raises and writes nothing. Returns
    the old state."""
    current = type(target)(record.status)
    check_transition(label, current, target, allowed)
    require_audit_reason(AuditAction.TRANSITION, entity_type, reason)
    record.status = target.value
    audit(
        uow,
        actor,
        AuditAction.TRANSITION,
        entity_type,
        record.id,
        old={"status": current.value},
        new={"status": target.value, **(extra or {})},
        reason=reason,
        site_id=site_id,
    )
    return current


def refuse(
    uow: UnitOfWork,
    actor: Actor,
    exc: DomainError,
    entity_type: str,
    entity_id: str,
    *,
    site_id: str | None = None,
) -> NoReturn:
    """Undo the attempted change but keep a committed record of the refusal, then raise it."""
    uow.session.rollback()
    audit(
        uow,
        actor,
        AuditAction.REFUSE,
        entity_type,
        entity_id[:64],
        new={"code": exc.code, "field": exc.field},
        reason=exc.message,
        site_id=site_id,
    )
    uow.commit()
    raise exc


def audit_trail(uow: UnitOfWork, entity_type: str, entity_id: str) -> list[AuditEntry]:
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.entity_type == entity_type, AuditEntry.entity_id == entity_id)
        .order_by(AuditEntry.seq)
    )
    return list(uow.session.scalars(stmt))


# --- the chain ----------------------------------------------------------------------------------
def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def entry_content(row: Mapping[str, Any] | AuditEntry) -> dict[str, Any]:
    """What a row's hash covers (everything but its database id and its own hashes)."""
    get = row.get if isinstance(row, Mapping) else lambda k: getattr(row, k, None)
    old, new = get("old"), get("new")
    return {
        "seq": get("seq"),
        "at": _iso(cast(datetime, get("at"))),
        "actor_id": get("actor_id"),
        "actor_name": get("actor_name"),
        "action": str(get("action")),
        "entity_type": get("entity_type"),
        "entity_id": get("entity_id"),
        "old": to_jsonable(old) if old is not None else None,
        "new": to_jsonable(new) if new is not None else None,
        "reason": get("reason"),
        "site_id": get("site_id"),
    }


def entry_hash(content: Mapping[str, Any], prev_hash: str) -> str:
    """SHA-256 (hex) of the canonical JSON of the row's content and the previous row's hash."""
    return sha256_hex(canonical_json({**content, "prev_hash": prev_hash}))


def _lock_head(conn: Connection) -> tuple[int, str]:
    """Take the chain's write lock and read where it ends. PostgreSQL: a row lock held to the
    end of the transaction. SQLite: a no-op UPDATE takes the database's one write lock now,
    before the head is read (a plain SELECT would read outside the transaction)."""
    if conn.dialect.name == "postgresql":
        row = conn.execute(
            select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
        ).first()
    else:
        row = conn.execute(
            text("UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
        ).first()
    if row is None:
        raise RuntimeError("the audit chain head row is missing: run `nearfab init` (migrations)")
    return int(row[0]), str(row[1])


def _move_head(conn: Connection, seq: int, row_hash: str) -> None:
    conn.execute(_HEAD.update().where(_HEAD.c.id == 1).values(seq=seq, hash=row_hash))


def _chain(rows: Iterable[Any], seq: int, prev: str, setter: Any) -> tuple[int, str]:
    for row in rows:
        seq += 1
        setter(row, "seq", seq)
        setter(row, "prev_hash", prev)
        content = entry_content(row)
        content["seq"] = seq
        prev = entry_hash(content, prev)
        setter(row, "row_hash", prev)
    return seq, prev


_PENDING_HEAD = "nearfab.audit_head"


@event.listens_for(Session, "before_flush")
def _number_new_entries(session: Session, _ctx: Any, _instances: Any) -> None:
    session.info.pop(_PENDING_HEAD, None)
    new = [obj for obj in session.new if isinstance(obj, AuditEntry)]
    if not new:
        return
    new.sort(key=lambda obj: orm_attributes.instance_state(obj).insert_order or 0)
    seq, prev = _lock_head(session.connection())
    session.info[_PENDING_HEAD] = _chain(new, seq, prev, setattr)


@event.listens_for(Session, "after_flush")
def _move_head_after_flush(session: Session, _ctx: Any) -> None:
    head = session.info.pop(_PENDING_HEAD, None)
    if head is not None:
        _move_head(session.connection(), *head)


def append_audit_rows(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Bulk-insert audit rows (the columns of AuditEntry, `at` set) on a Core connection inside
    its transaction, chained like every other row. Returns how many were written."""
    if not rows:
        return 0
    batch = [dict(r) for r in rows]
    seq, prev = _lock_head(conn)
    seq, prev = _chain(batch, seq, prev, lambda r, k, v: r.__setitem__(k, v))
    conn.execute(insert(AuditEntry), batch)
    _move_head(conn, seq, prev)
    return len(batch)


# --- verification -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BadRow:
    """The first row where the chain is broken, and why."""

    seq: int | None
    id: int | None
    entity_type: str | None
    entity_id: str | None
    problem: str  # edited | deleted | inserted | reordered
    detail: str

    def describe(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "(no seq)"
        ident = f" (id {self.id}, {self.entity_type} {self.entity_id})" if self.id else ""
        return f"{where}{ident}: {self.problem}: {self.detail}"


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    first_bad: BadRow | None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_bad"] = asdict(self.first_bad) if self.first_bad else None
        return out


_COLUMNS = [c for c in _TABLE.c]


def _read_head(conn: Connection) -> tuple[int, str] | None:
    row = conn.execute(select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1)).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def _bad(row: Mapping[str, Any], problem: str, detail: str) -> BadRow:
    return BadRow(
        seq=row["seq"],
        id=row["id"],
        entity_type=row["entity_type"],
        entity_id=row["entity_id"],
        problem=problem,
        detail=detail,
    )


def _hash_with_seq(row: Mapping[str, Any], seq: int) -> str:
    content = entry_content(row)
    content["seq"] = seq
    return entry_hash(content, row["prev_hash"] or "")


def _check_row(
    row: Mapping[str, Any],
    prev: Mapping[str, Any] | None,
    nxt: Mapping[str, Any] | None,
    head_seq: int,
) -> BadRow | None:
    seq = row["seq"]
    expected = prev["seq"] + 1 if prev is not None else 1
    if seq > head_seq:
        return _bad(
            row,
            "inserted",
            f"numbered after the chain head (seq {head_seq}): not written by the application",
        )
    if prev is not None and seq == prev["seq"]:
        return _bad(row, "inserted", f"a second row numbered {seq}")
    if seq > expected:
        missing = f"{expected}" if seq == expected + 1 else f"{expected} to {seq - 1}"
        return _bad(row, "deleted before it", f"row(s) {missing} are missing")
    if seq < expected:
        return _bad(row, "inserted", f"numbered {seq} where {expected} was expected")
    if (prev is not None and row["id"] < prev["id"]) or (nxt is not None and nxt["id"] < row["id"]):
        other = prev if prev is not None and row["id"] < prev["id"] else nxt
        assert other is not None
        return _bad(
            row,
            "reordered",
            f"written {'before' if other is prev else 'after'} row {other['seq']} "
            f"(id {other['id']}) but numbered {'after' if other is prev else 'before'} it",
        )
    if _hash_with_seq(row, seq) != row["row_hash"]:
        if _hash_with_seq(row, seq - 1) == row["row_hash"] and prev is not None:
            return _bad(
                prev,
                "inserted",
                f"the rows after it were renumbered to make room (row {seq} was written as "
                f"{seq - 1})",
            )
        if _hash_with_seq(row, seq + 1) == row["row_hash"]:
            return _bad(
                row,
                "deleted before it",
                f"it was written as row {seq + 1}: a row before it was deleted and the rest "
                "renumbered",
            )
        return _bad(row, "edited", "its content no longer matches its hash")
    want = prev["row_hash"] if prev is not None else GENESIS
    if row["prev_hash"] != want:
        if prev is None:
            return _bad(row, "edited", "the first row does not link to the chain's start")
        return _bad(
            prev,
            "edited",
            f"its hash was recomputed after a change: row {seq} still links to the original",
        )
    return None


def verify_chain(conn: Connection, *, chunk: int = 5000) -> ChainReport:
    """Walk the whole chain in seq order: each row's hash, the links, gaps, duplicates, order,
    and the head row. Safe while others append (the head is read after each chunk)."""
    checked = 0
    prev: dict[str, Any] | None = None
    nulls = conn.execute(
        select(_TABLE.c.id, _TABLE.c.entity_type, _TABLE.c.entity_id)
        .where(_TABLE.c.seq.is_(None))
        .order_by(_TABLE.c.id)
        .limit(1)
    ).first()
    head = _read_head(conn)
    if head is None:
        bad = BadRow(None, None, None, None, "deleted", "the chain head row is missing")
        return ChainReport(False, 0, 0, "", bad)
    if nulls is not None:
        bad = BadRow(None, nulls[0], nulls[1], nulls[2], "inserted", "it has no sequence number")
        return ChainReport(False, 0, head[0], head[1], bad)
    while True:
        stmt = select(*_COLUMNS).order_by(_TABLE.c.seq, _TABLE.c.id).limit(chunk)
        if prev is not None:
            stmt = stmt.where(tuple_(_TABLE.c.seq, _TABLE.c.id) > (prev["seq"], prev["id"]))
        # the head read before the rows bounds what must be there (a row it counts was committed
        # before the query); the head read after them says which rows the application wrote
        head = _read_head(conn) or (0, GENESIS)
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        if not rows:
            break
        head_after = _read_head(conn) or (0, GENESIS)
        for i, row in enumerate(rows):
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            found = _check_row(row, prev, nxt, head_after[0])
            if found is not None:
                return ChainReport(False, checked, head_after[0], head_after[1], found)
            prev = row
            checked += 1
    last_seq = prev["seq"] if prev is not None else 0
    last_hash = prev["row_hash"] if prev is not None else GENESIS
    if head[0] > last_seq:
        missing = f"{last_seq + 1}" if head[0] == last_seq + 1 else f"{last_seq + 1} to {head[0]}"
        bad = BadRow(head[0], None, None, None, "deleted", f"the last row(s) {missing} are missing")
        return ChainReport(False, checked, head[0], head[1], bad)
    if head[1] != last_hash:
        assert prev is not None
        bad = _bad(prev, "edited", "the chain head records another hash for the last row")
        return ChainReport(False, checked, head[0], head[1], bad)
    return ChainReport(True, checked, head[0], head[1], None)


def verify_audit_chain(uow: UnitOfWork, actor: Actor) -> ChainReport:
    """`nearfab audit verify`, GET /api/v1/audit/verify: Permission.AUDIT_VERIFY."""
    authorize(actor, Permission.AUDIT_VERIFY)
    return verify_chain(uow.session.connection())


# --- review -------------------------------------------------------------------------------------
MAX_PAGE = 500


def _aware(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(
            f"{field}: give a time zone (e.g. 2026-01-05T08:00:00Z)", field=field
        )
    return value


def search_audit(
    uow: UnitOfWork,
    actor: Actor,
    *,
    site_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    who: str | None = None,
    action: str | None = None,
    entity_type: str | None = None,
    entity_id: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AuditEntry], int]:
    """Audit rows, newest first, filtered; site staff see their own site's rows only.
    Returns one page and the number of rows matching."""
    authorize(actor, Permission.AUDIT_READ, site_id=site_id)
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit: 1 to {MAX_PAGE}", field="limit")
    if offset < 0:
        raise ValidationFailed("offset: 0 or more", field="offset")
    _aware(since, "since")
    _aware(until, "until")
    conds: list[Any] = []
    sites = visible_sites(actor)
    if sites is not None:
        conds.append(_TABLE.c.site_id.in_(sorted(sites)))
    if site_id:
        conds.append(AuditEntry.site_id == site_id)
    if since is not None:
        conds.append(AuditEntry.at >= since)
    if until is not None:
        conds.append(AuditEntry.at < until)
    if who:
        conds.append(
            or_(
                AuditEntry.actor_id == who,
                func.lower(AuditEntry.actor_name).contains(who.lower(), autoescape=True),
            )
        )
    if action:
        conds.append(AuditEntry.action == action)
    if entity_type:
        conds.append(AuditEntry.entity_type == entity_type)
    if entity_id:
        conds.append(AuditEntry.entity_id == entity_id)
    total = int(uow.session.scalar(select(func.count()).select_from(AuditEntry).where(*conds)) or 0)
    rows = uow.session.scalars(
        select(AuditEntry).where(*conds).order_by(AuditEntry.seq.desc()).limit(limit).offset(offset)
    )
    return list(rows), total


def signatures_on(uow: UnitOfWork, record_type: str, record_id: str) -> list[Signature]:
    stmt = (
        select(Signature)
        .where(Signature.record_type == record_type, Signature.record_id == record_id)
        .order_by(Signature.signed_at, Signature.id)
    )
    return list(uow.session.scalars(stmt))


# --- database protection: triggers (created by migration 0008, and with create_all) -------------
APPEND_ONLY_TABLES = ("audit_entries", "signatures")


def append_only_ddl(dialect: str, table: str) -> list[str]:
    """Triggers refusing UPDATE and DELETE (and TRUNCATE on PostgreSQL) on `table`."""
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION nearfab_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION nearfab_append_only()",
        ]
    return [
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} BEGIN "
        f"SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} BEGIN "
        f"SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END",
    ]


def drop_append_only_ddl(dialect: str, table: str) -> list[str]:
    if dialect == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update",
        f"DROP TRIGGER IF EXISTS {table}_no_delete",
    ]


PG_FUNCTIONS = [
    """CREATE OR REPLACE FUNCTION nearfab_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$""",
    """CREATE OR REPLACE FUNCTION nearfab_audit_head_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'UPDATE' THEN
    RAISE EXCEPTION 'audit_chain_head: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.id = OLD.id AND NEW.seq = OLD.seq AND NEW.hash = OLD.hash THEN
    RETURN NEW;
  END IF;
  IF NEW.id <> OLD.id OR NEW.seq <= OLD.seq
     OR NOT EXISTS (SELECT 1 FROM audit_entries WHERE seq = NEW.seq AND row_hash = NEW.hash)
     OR EXISTS (SELECT 1 FROM audit_entries WHERE seq > NEW.seq) THEN
    RAISE EXCEPTION 'audit_chain_head only moves forward, onto the last audit row (% -> %)',
      OLD.seq, NEW.seq USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$""",
]


def head_ddl(dialect: str) -> list[str]:
    """The head may only move forward, onto the last audit row; it cannot be deleted."""
    if dialect == "postgresql":
        return [
            "CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE OR DELETE ON audit_chain_head "
            "FOR EACH ROW EXECUTE FUNCTION nearfab_audit_head_forward()",
            "CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head "
            "FOR EACH STATEMENT EXECUTE FUNCTION nearfab_audit_head_forward()",
        ]
    return [
        "CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE ON audit_chain_head "
        "WHEN NOT (NEW.id = OLD.id AND ((NEW.seq = OLD.seq AND NEW.hash = OLD.hash) OR "
        "(NEW.seq > OLD.seq "
        "AND NEW.hash = COALESCE((SELECT row_hash FROM audit_entries WHERE seq = NEW.seq), '') "
        "AND NOT EXISTS (SELECT 1 FROM audit_entries WHERE seq > NEW.seq)))) "
        "BEGIN SELECT RAISE(ABORT, 'audit_chain_head only moves forward, onto the last audit "
        "row'); END",
        "CREATE TRIGGER audit_chain_head_no_delete BEFORE DELETE ON audit_chain_head "
        "BEGIN SELECT RAISE(ABORT, 'audit_chain_head: DELETE refused'); END",
    ]


def drop_head_ddl(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            "DROP TRIGGER IF EXISTS audit_chain_head_forward ON audit_chain_head",
            "DROP TRIGGER IF EXISTS audit_chain_head_no_truncate ON audit_chain_head",
        ]
    return [
        "DROP TRIGGER IF EXISTS audit_chain_head_forward",
        "DROP TRIGGER IF EXISTS audit_chain_head_no_delete",
    ]


def _on_create(statements: Any) -> Any:
    def listener(target: Any, connection: Connection, **_kw: Any) -> None:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            for fn in PG_FUNCTIONS:
                connection.execute(text(fn))
        for statement in statements(dialect):
            connection.execute(text(statement))

    return listener


def _head_created(target: Any, connection: Connection, **kw: Any) -> None:
    connection.execute(_HEAD.insert().values(id=1, seq=0, hash=GENESIS))
    _on_create(head_ddl)(target, connection, **kw)


# a schema made from the metadata (Base.metadata.create_all) gets the same protection as one
# made by the migrations
event.listen(_TABLE, "after_create", _on_create(lambda d: append_only_ddl(d, "audit_entries")))
event.listen(
    Signature.__table__, "after_create", _on_create(lambda d: append_only_ddl(d, "signatures"))
)
event.listen(_HEAD, "after_create", _head_created)
