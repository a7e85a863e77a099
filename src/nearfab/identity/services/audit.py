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

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, cast
from weakref import WeakKeyDictionary

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Table, event, func, insert, or_, select, text, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.orm import attributes as orm_attributes

from nearfab.common.canonical import canonical_json, sha256_hex, to_jsonable
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.common.states import S, check_transition
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import AuditChainHead, AuditCheckpoint, AuditEntry, Signature
from nearfab.identity.permissions import (
    Permission,
    authorize_network,
    site_filter,
    visible_sites,
)
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
_CHECKPOINTS = cast(Table, AuditCheckpoint.__table__)


# --- keys: installed per database engine by the composition root (bootstrap) --------------------
@dataclass
class AuditKeys:
    """What the audit chain needs from the data folder's key store, never from the database:
    the HMAC key of the rows (keys/audit_chain.key) and the control site's Ed25519 key that
    signs checkpoints (keys/control_site_ed25519.pem). `ledger_heads` and `on_checkpoint` are
    the custody ledger's part of a checkpoint (its heads in the body; an entry in the control
    site's chain), wired in bootstrap because custody sits above identity."""

    mac_key: bytes
    key_id: str = ""
    public_key_pem: str = ""
    sign: Callable[[dict[str, Any]], str] | None = None  # base64 Ed25519 over canonical JSON
    # site -> [seq, entry_hash, kind] of each ledger chain's last entry
    ledger_heads: Callable[[Connection], dict[str, list[Any]]] | None = None
    # the checkpoints as recorded in the control site's ledger chain: (body, signature) pairs
    ledger_checkpoints: Callable[[Connection], list[tuple[dict[str, Any], str]]] | None = None
    on_checkpoint: Callable[[UnitOfWork, dict[str, Any], str], None] | None = None


_KEYS: WeakKeyDictionary[Engine, AuditKeys] = WeakKeyDictionary()


def install_audit_keys(engine: Engine, keys: AuditKeys) -> None:
    """Every session and connection of `engine` writes MACs with these keys and verifies with
    them (bootstrap, once per engine)."""
    _KEYS[engine] = keys


def audit_keys(conn: Connection) -> AuditKeys | None:
    return _KEYS.get(conn.engine)


MAC_CONTEXT = b"nearfab-audit-row-mac-v1\n"


def entry_mac(key: bytes, content: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of the row's content (with its `seq`, without
    `prev_hash`), keyed with the audit key: only a holder of the key file can compute it."""
    return hmac.new(key, MAC_CONTEXT + canonical_json(dict(content)), hashlib.sha256).hexdigest()


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


def _chain(
    rows: Iterable[Any], seq: int, prev: str, setter: Any, key: bytes | None
) -> tuple[int, str]:
    for row in rows:
        seq += 1
        setter(row, "seq", seq)
        setter(row, "prev_hash", prev)
        content = entry_content(row)
        content["seq"] = seq
        if key is not None:
            setter(row, "row_mac", entry_mac(key, content))
        prev = entry_hash(content, prev)
        setter(row, "row_hash", prev)
    return seq, prev


def _mac_key(conn: Connection) -> bytes | None:
    keys = audit_keys(conn)
    return keys.mac_key if keys is not None else None


_PENDING_HEAD = "nearfab.audit_head"


@event.listens_for(Session, "before_flush")
def _number_new_entries(session: Session, _ctx: Any, _instances: Any) -> None:
    session.info.pop(_PENDING_HEAD, None)
    new = [obj for obj in session.new if isinstance(obj, AuditEntry)]
    if not new:
        return
    new.sort(key=lambda obj: orm_attributes.instance_state(obj).insert_order or 0)
    conn = session.connection()
    seq, prev = _lock_head(conn)
    session.info[_PENDING_HEAD] = _chain(new, seq, prev, setattr, _mac_key(conn))


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
    seq, prev = _chain(batch, seq, prev, lambda r, k, v: r.__setitem__(k, v), _mac_key(conn))
    conn.execute(insert(AuditEntry), batch)
    _move_head(conn, seq, prev)
    return len(batch)


# --- verification -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BadRow:
    """A row (or a checkpoint) where the chain is broken, and why."""

    seq: int | None
    id: int | None
    entity_type: str | None
    entity_id: str | None
    problem: str  # edited | deleted | deleted before it | inserted | reordered
    detail: str

    def describe(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "(no seq)"
        ident = f" (id {self.id}, {self.entity_type} {self.entity_id})" if self.id else ""
        return f"{where}{ident}: {self.problem}: {self.detail}"


@dataclass(frozen=True)
class Checkpoint:
    """A signed checkpoint: the audit head (`seq`, `head_hash`) and every custody ledger head
    (`ledger`: site -> [seq, entry_hash]) at `at`, signed with the control site's key."""

    seq: int
    head_hash: str
    at: str
    keyed_from: int | None
    ledger: dict[str, list[Any]]
    key_id: str
    signature: str
    id: int | None = None
    source: str = "database"  # database | file | file mark

    def body(self) -> dict[str, Any]:
        return checkpoint_body(
            seq=self.seq,
            head_hash=self.head_hash,
            at=self.at,
            keyed_from=self.keyed_from,
            ledger=self.ledger,
            key_id=self.key_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "seq": self.seq,
            "head_hash": self.head_hash,
            "at": self.at,
            "keyed_from": self.keyed_from,
            "key_id": self.key_id,
        }


CHECKPOINT_TYPE = "nearfab.audit.checkpoint"
FILE_TYPE = "nearfab.audit.checkpoint-file"


def checkpoint_body(
    *,
    seq: int,
    head_hash: str,
    at: str,
    keyed_from: int | None,
    ledger: Mapping[str, Sequence[Any]],
    key_id: str,
) -> dict[str, Any]:
    """What a checkpoint's signature covers (canonical JSON of this)."""
    return {
        "type": CHECKPOINT_TYPE,
        "version": 1,
        "seq": seq,
        "head_hash": head_hash,
        "at": at,
        "keyed_from": keyed_from,
        "ledger": {site: [int(v[0]), str(v[1])] for site, v in sorted(ledger.items())},
        "key_id": key_id,
    }


def _public_key(pem: str) -> Ed25519PublicKey | None:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeError):
        return None
    return key if isinstance(key, Ed25519PublicKey) else None


def signature_ok(public_key_pem: str, body: Mapping[str, Any], signature: str) -> bool:
    """True if `signature` (base64) is the Ed25519 signature of canonical_json(body)."""
    key = _public_key(public_key_pem)
    if key is None:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), canonical_json(dict(body)))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _checkpoint_of(body: Mapping[str, Any], signature: str, **extra: Any) -> Checkpoint:
    ledger = body.get("ledger") or {}
    return Checkpoint(
        seq=int(body["seq"]),
        head_hash=str(body["head_hash"]),
        at=str(body["at"]),
        keyed_from=None if body.get("keyed_from") is None else int(body["keyed_from"]),
        ledger={str(k): [int(v[0]), str(v[1])] for k, v in dict(ledger).items()},
        key_id=str(body.get("key_id", "")),
        signature=signature,
        **extra,
    )


def stored_checkpoints(
    conn: Connection, keys: AuditKeys | None
) -> tuple[list[Checkpoint], list[BadRow]]:
    """The checkpoints in the database whose signature is the control site's, oldest first,
    and a problem for each one that is not (forged or altered)."""
    good: list[Checkpoint] = []
    bad: list[BadRow] = []
    rows = conn.execute(select(_CHECKPOINTS).order_by(_CHECKPOINTS.c.id)).mappings().all()
    if keys is not None and keys.ledger_checkpoints is not None:
        # a checkpoint deleted from its table still counts where the ledger keeps it (only a
        # valid signature makes it count: a forged ledger entry is named by verify-ledger)
        known = {(r["seq"], r["head_hash"], r["at"]) for r in rows}
        for body, signature in keys.ledger_checkpoints(conn):
            try:
                copy = _checkpoint_of(body, signature, source="ledger")
            except (KeyError, TypeError, ValueError, IndexError):
                continue
            if (
                body == copy.body()
                and signature_ok(keys.public_key_pem, body, signature)
                and not any(k[0] == copy.seq and k[1] == copy.head_hash for k in known)
            ):
                good.append(copy)
    for row in rows:
        try:
            body = json_loads(row["body"])
            checkpoint = _checkpoint_of(body, row["signature"], id=row["id"])
            signed = keys is not None and signature_ok(
                keys.public_key_pem, checkpoint.body(), row["signature"]
            )
            consistent = (
                body == checkpoint.body()
                and checkpoint.seq == row["seq"]
                and checkpoint.head_hash == row["head_hash"]
            )
        except (ValueError, KeyError, TypeError, IndexError):
            signed = consistent = False
        if keys is None:
            continue  # nothing to check signatures with: not used
        if signed and consistent:
            good.append(checkpoint)
        else:
            bad.append(
                BadRow(
                    row["seq"],
                    None,
                    "audit_checkpoint",
                    str(row["id"]),
                    "inserted" if not signed else "edited",
                    f"checkpoint #{row['id']} is not signed by the control site's key "
                    "(forged or altered in the database)",
                )
            )
    good.sort(key=lambda c: (c.seq, c.id or 0))
    return good, bad


def json_loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


@dataclass(frozen=True)
class CheckpointFile:
    """An exported checkpoint file, its signatures checked: the checkpoint and the marks (every
    earlier checkpoint's seq and head hash) it carries."""

    checkpoint: Checkpoint
    marks: list[tuple[int, str]]
    public_key_pem: str
    key_id: str
    same_key: bool  # signed by this installation's control key


def read_checkpoint_file(data: Any, keys: AuditKeys | None) -> CheckpointFile:
    """Parse and check an exported checkpoint file (`nearfab audit checkpoint export`). Its
    signature must verify with the public key it names; whether that key is this
    installation's is reported (`same_key`). ValidationFailed(field="against") if not."""

    def refuse_file(why: str) -> NoReturn:
        raise ValidationFailed(f"the checkpoint file {why}", field="against")

    if not isinstance(data, dict) or data.get("type") != FILE_TYPE:
        refuse_file(f"is not a nearfab checkpoint file (type {FILE_TYPE!r} expected)")
    signature = data.get("signature")
    doc = {k: v for k, v in data.items() if k != "signature"}
    pem = str(doc.get("public_key_pem", ""))
    if not isinstance(signature, str) or not signature_ok(pem, doc, signature):
        refuse_file("does not verify with the key it names: it was altered")
    try:
        body = doc["checkpoint"]
        checkpoint = _checkpoint_of(body, str(doc["checkpoint_signature"]), source="file")
        marks = [(int(m[0]), str(m[1])) for m in doc.get("marks", [])]
    except (KeyError, TypeError, ValueError, IndexError):
        refuse_file("is incomplete (checkpoint, checkpoint_signature, marks)")
    if body != checkpoint.body() or not signature_ok(pem, body, checkpoint.signature):
        refuse_file("holds a checkpoint whose own signature does not verify")
    same = (
        keys is not None
        and bool(keys.public_key_pem)
        and (
            _public_key(keys.public_key_pem) is not None
            and _raw(_public_key(keys.public_key_pem)) == _raw(_public_key(pem))
        )
    )
    return CheckpointFile(checkpoint, marks, pem, str(doc.get("key_id", "")), same)


def _raw(key: Ed25519PublicKey | None) -> bytes:
    if key is None:
        return b""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    first_bad: BadRow | None
    problems: list[BadRow] = field(default_factory=list)
    keyed: bool = False  # every row's MAC checked with the audit key
    checkpoint: Checkpoint | None = None  # the last signed checkpoint in the database
    anchored_seq: int = 0  # rows up to here match a signed checkpoint (or the file)
    unanchored_rows: int = 0  # rows after it: no signed checkpoint covers them yet
    against: dict[str, Any] | None = None  # the exported checkpoint file compared with

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows_checked": self.rows_checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_bad": asdict(self.first_bad) if self.first_bad else None,
            "problems": [asdict(p) for p in self.problems],
            "keyed": self.keyed,
            "checkpoint": self.checkpoint.to_dict() if self.checkpoint else None,
            "anchored_seq": self.anchored_seq,
            "unanchored_rows": self.unanchored_rows,
            "against": self.against,
        }


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


def _mac_with_seq(row: Mapping[str, Any], seq: int, key: bytes) -> str:
    content = entry_content(row)
    content["seq"] = seq
    return entry_mac(key, content)


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


def _check_mac(
    row: Mapping[str, Any], nxt: Mapping[str, Any] | None, key: bytes, required: bool
) -> tuple[BadRow | None, bool]:
    """The row's keyed MAC: (problem or None, whether the row carries a valid MAC). Rows from
    before the key (NULL) pass until the first keyed row or the checkpoint's `keyed_from`."""
    mac, seq = row.get("row_mac"), row["seq"]
    if mac is None:
        if not required:
            return None, False
        return (
            _bad(
                row,
                "inserted",
                "it has no MAC: not written by the application (the rows before it have one)",
            ),
            False,
        )
    if hmac.compare_digest(str(mac), _mac_with_seq(row, seq, key)):
        return None, True
    if hmac.compare_digest(str(mac), _mac_with_seq(row, seq + 1, key)):
        return (
            _bad(
                row,
                "deleted before it",
                f"its MAC says it was written as row {seq + 1}: a row before it was deleted "
                "and the rest renumbered and re-hashed outside the application",
            ),
            False,
        )
    if (
        nxt is not None
        and nxt.get("row_mac") is not None
        and hmac.compare_digest(str(nxt["row_mac"]), _mac_with_seq(nxt, seq, key))
    ):
        return (
            _bad(
                row,
                "inserted",
                f"its MAC does not match and the next row was written as {seq}: this row was "
                "put in outside the application and the rest renumbered",
            ),
            False,
        )
    return (
        _bad(
            row,
            "edited",
            "its MAC does not match its content: changed (or written) outside the application",
        ),
        False,
    )


def _compare_checkpoints(
    marks: Sequence[Checkpoint],
    seen: Mapping[int, str],
    last_seq: int,
    complete: bool,
) -> tuple[list[BadRow], int]:
    """Each signed checkpoint (or exported mark) against the rows: the row at its seq must
    have its head hash. Returns the problems and the highest seq that matched."""
    problems: list[BadRow] = []
    anchored, matched_before = 0, 0
    for mark in sorted(marks, key=lambda m: m.seq):
        where = f"the {mark.source} checkpoint of {mark.at}" if mark.at else f"the {mark.source}"
        if mark.seq in seen:
            if seen[mark.seq] == mark.head_hash:
                anchored = max(anchored, mark.seq)
                matched_before = max(matched_before, mark.seq)
                continue
            problems.append(
                BadRow(
                    mark.seq,
                    None,
                    None,
                    None,
                    "edited",
                    f"a row between seq {matched_before + 1} and {mark.seq} was edited, inserted "
                    f"or deleted after {where}: it signed head {mark.head_hash[:16]}…, the rows "
                    f"now give {seen[mark.seq][:16]}…",
                )
            )
        elif complete and mark.seq > last_seq:
            missing = (
                f"{last_seq + 1}" if mark.seq == last_seq + 1 else f"{last_seq + 1} to {mark.seq}"
            )
            problems.append(
                BadRow(
                    mark.seq,
                    None,
                    None,
                    None,
                    "deleted",
                    f"row(s) {missing} are missing (the chain was cut back): {where} signed the "
                    f"chain up to seq {mark.seq}",
                )
            )
    return problems, anchored


class _Default:
    pass


_FROM_ENGINE = _Default()


def verify_chain(
    conn: Connection,
    *,
    chunk: int = 5000,
    keys: AuditKeys | _Default | None = _FROM_ENGINE,
    against: CheckpointFile | None = None,
) -> ChainReport:
    """Walk the whole chain in seq order: each row's hash, its MAC (with the audit key), the
    links, gaps, duplicates, order, and the head row; then every signed checkpoint (and the
    exported file `against`) against the rows. The walk stops at the first bad row. Safe while
    others append (the head is read after each chunk)."""
    key_set = audit_keys(conn) if isinstance(keys, _Default) else keys
    mac_key = key_set.mac_key if key_set is not None else None
    checkpoints, problems = stored_checkpoints(conn, key_set)
    marks: list[Checkpoint] = list(checkpoints)
    against_info: dict[str, Any] | None = None
    if against is not None:
        marks.append(against.checkpoint)
        marks.extend(
            Checkpoint(s, h, "", None, {}, against.key_id, "", source="file mark")
            for s, h in against.marks
        )
        against_info = {
            **against.checkpoint.to_dict(),
            "same_key": against.same_key,
            "marks": len(against.marks),
        }
        if not against.same_key:
            problems.append(
                BadRow(
                    against.checkpoint.seq,
                    None,
                    None,
                    None,
                    "edited",
                    f"the checkpoint file was signed by key {against.key_id}, not by this "
                    "installation's control-site key (were the keys replaced?)",
                )
            )
    wanted = {m.seq for m in marks}
    required_from = min((c.keyed_from for c in marks if c.keyed_from is not None), default=None)
    seen: dict[int, str] = {}
    checked = 0
    prev: dict[str, Any] | None = None
    keyed = False

    def report(bad: BadRow | None, head: tuple[int, str], complete: bool) -> ChainReport:
        last_seq = prev["seq"] if prev is not None else 0
        found, anchored = _compare_checkpoints(marks, seen, last_seq, complete)
        every = [*([bad] if bad else []), *problems, *found]
        return ChainReport(
            ok=not every,
            rows_checked=checked,
            head_seq=head[0],
            head_hash=head[1],
            first_bad=every[0] if every else None,
            problems=every,
            keyed=mac_key is not None,
            checkpoint=checkpoints[-1] if checkpoints else None,
            anchored_seq=anchored,
            unanchored_rows=max(0, head[0] - anchored),
            against=against_info,
        )

    nulls = conn.execute(
        select(_TABLE.c.id, _TABLE.c.entity_type, _TABLE.c.entity_id)
        .where(_TABLE.c.seq.is_(None))
        .order_by(_TABLE.c.id)
        .limit(1)
    ).first()
    head = _read_head(conn)
    if head is None:
        bad = BadRow(None, None, None, None, "deleted", "the chain head row is missing")
        return report(bad, (0, ""), False)
    if nulls is not None:
        bad = BadRow(None, nulls[0], nulls[1], nulls[2], "inserted", "it has no sequence number")
        return report(bad, head, False)
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
            if found is None and mac_key is not None:
                required = keyed or (required_from is not None and row["seq"] >= required_from)
                found, valid = _check_mac(row, nxt, mac_key, required)
                keyed = keyed or valid
            if found is not None:
                return report(found, head_after, False)
            if row["seq"] in wanted:
                seen[row["seq"]] = row["row_hash"]
            prev = row
            checked += 1
    last_seq = prev["seq"] if prev is not None else 0
    last_hash = prev["row_hash"] if prev is not None else GENESIS
    if head[0] > last_seq:
        missing = f"{last_seq + 1}" if head[0] == last_seq + 1 else f"{last_seq + 1} to {head[0]}"
        bad = BadRow(head[0], None, None, None, "deleted", f"the last row(s) {missing} are missing")
        return report(bad, head, True)
    if head[1] != last_hash:
        assert prev is not None
        bad = _bad(prev, "edited", "the chain head records another hash for the last row")
        return report(bad, head, True)
    return report(None, head, True)


def verify_audit_chain(
    uow: UnitOfWork, actor: Actor, *, against: Mapping[str, Any] | None = None
) -> ChainReport:
    """`nearfab audit verify [--against FILE]`, GET /api/v1/audit/verify:
    Permission.AUDIT_VERIFY. `against`: an exported checkpoint file's JSON."""
    authorize_network(actor, Permission.AUDIT_VERIFY)
    conn = uow.session.connection()
    checked = None if against is None else read_checkpoint_file(dict(against), audit_keys(conn))
    return verify_chain(conn, against=checked)


# --- checkpoints --------------------------------------------------------------------------------
CHECKPOINT_EVERY_ROWS = 500  # the runner's sweep takes one when the head moved this far …
CHECKPOINT_EVERY = timedelta(minutes=5)  # … or this long after the last, if anything moved


def _signing_keys(conn: Connection) -> AuditKeys:
    keys = audit_keys(conn)
    if keys is None or keys.sign is None:
        raise ValidationFailed(
            "no control-site key is installed here: checkpoints are signed with it "
            "(keys/control_site_ed25519.pem)",
            field="key",
        )
    return keys


def take_checkpoint(uow: UnitOfWork) -> Checkpoint:
    """Sign the audit head and every custody ledger head with the control site's key, store
    it (append-only) and record it in the control site's ledger chain, in the caller's
    transaction. The head is read as committed (any committed head is a state of the chain;
    taking the chain's write lock here would order it before the control site's ledger key,
    the reverse of a custody step's order)."""
    conn = uow.session.connection()
    keys = _signing_keys(conn)
    assert keys.sign is not None
    seq, head = _read_head(conn) or (0, GENESIS)
    keyed_from = conn.execute(
        select(func.min(_TABLE.c.seq)).where(_TABLE.c.row_mac.is_not(None))
    ).scalar()
    ledger = keys.ledger_heads(conn) if keys.ledger_heads is not None else {}
    at = uow.clock.now()
    body = checkpoint_body(
        seq=seq,
        head_hash=head,
        at=_iso(at),
        keyed_from=None if keyed_from is None else int(keyed_from),
        ledger=ledger,
        key_id=keys.key_id,
    )
    signature = keys.sign(body)
    row_id = conn.execute(
        _CHECKPOINTS.insert()
        .values(
            seq=seq,
            head_hash=head,
            at=at,
            body=canonical_json(body).decode("utf-8"),
            key_id=keys.key_id,
            signature=signature,
        )
        .returning(_CHECKPOINTS.c.id)
    ).scalar_one()
    if keys.on_checkpoint is not None:
        keys.on_checkpoint(uow, body, signature)
    return _checkpoint_of(body, signature, id=int(row_id))


def create_checkpoint(uow: UnitOfWork, actor: Actor) -> Checkpoint:
    """On demand: `nearfab audit checkpoint`, POST /api/v1/audit/checkpoints
    (Permission.AUDIT_VERIFY). Committed."""
    authorize_network(actor, Permission.AUDIT_VERIFY)
    checkpoint = take_checkpoint(uow)
    uow.commit()
    return checkpoint


def checkpoint_if_due(
    uow: UnitOfWork,
    *,
    every_rows: int = CHECKPOINT_EVERY_ROWS,
    every: timedelta = CHECKPOINT_EVERY,
) -> Checkpoint | None:
    """The runner's sweep: a checkpoint when the audit head moved `every_rows` rows since the
    last one, or `every` has passed and anything moved (audit head or a ledger head); none
    where no control-site key is installed. Committed."""
    conn = uow.session.connection()
    keys = audit_keys(conn)
    if keys is None or keys.sign is None:
        return None
    last = conn.execute(
        select(_CHECKPOINTS.c.seq, _CHECKPOINTS.c.at, _CHECKPOINTS.c.body)
        .order_by(_CHECKPOINTS.c.id.desc())
        .limit(1)
    ).first()
    head = _read_head(conn) or (0, GENESIS)
    if last is not None:
        moved = head[0] - int(last[0])
        if moved < every_rows:
            if uow.clock.now() - last[1] < every:
                return None  # the common case: no query of the ledger
            if moved == 0:
                ledger = keys.ledger_heads(conn) if keys.ledger_heads is not None else {}
                recorded = json_loads(last[2]).get("ledger") or {}
                if not _ledger_moved(recorded, ledger):
                    return None
    elif head[0] == 0:
        return None
    checkpoint = take_checkpoint(uow)
    uow.commit()
    return checkpoint


def _ledger_moved(recorded: Mapping[str, Any], now: Mapping[str, Sequence[Any]]) -> bool:
    """Whether any ledger chain moved since a checkpoint recorded `recorded`, not counting
    that checkpoint's own entry in the control chain (a head [seq, hash, kind] that is an
    audit checkpoint right after the recorded one)."""
    for site, head in now.items():
        was = recorded.get(site)
        if was is not None and int(head[0]) == int(was[0]) and str(head[1]) == str(was[1]):
            continue
        own = len(head) > 2 and head[2] == "audit_checkpoint"
        if own and int(head[0]) == (0 if was is None else int(was[0])) + 1:
            continue
        return True
    return False


def export_checkpoint(uow: UnitOfWork, actor: Actor) -> dict[str, Any]:
    """`nearfab audit checkpoint export`: a fresh checkpoint, committed, as a JSON document to
    keep outside the database: the checkpoint and its signature, the marks (seq, head hash)
    of every earlier signed checkpoint, the control site's public key, all signed again as one
    document. Permission.AUDIT_VERIFY."""
    authorize_network(actor, Permission.AUDIT_VERIFY)
    checkpoint = take_checkpoint(uow)
    uow.commit()
    conn = uow.session.connection()
    keys = _signing_keys(conn)
    assert keys.sign is not None
    earlier, _bad_ones = stored_checkpoints(conn, keys)
    doc: dict[str, Any] = {
        "type": FILE_TYPE,
        "version": 1,
        "exported_at": _iso(uow.clock.now()),
        "exported_by": actor.user_id,
        "key_id": keys.key_id,
        "public_key_pem": keys.public_key_pem,
        "checkpoint": checkpoint.body(),
        "checkpoint_signature": checkpoint.signature,
        "marks": [[c.seq, c.head_hash] for c in earlier if c.seq < checkpoint.seq],
    }
    return {**doc, "signature": keys.sign(doc)}


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
    site_id = site_filter(actor, Permission.AUDIT_READ, site_id or None)
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit: 1 to {MAX_PAGE}", field="limit")
    if offset < 0:
        raise ValidationFailed("offset: 0 or more", field="offset")
    _aware(since, "since")
    _aware(until, "until")
    conds: list[Any] = []
    sites = visible_sites(actor, Permission.AUDIT_READ)
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
event.listen(
    _CHECKPOINTS, "after_create", _on_create(lambda d: append_only_ddl(d, "audit_checkpoints"))
)
