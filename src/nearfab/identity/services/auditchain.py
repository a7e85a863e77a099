"""The audit trail's hash chain (docs/audit-trail.md): numbering and hashing rows as they are
written, the keys it is sealed with, and the chain's head.

Every row gets a gapless `seq`, `prev_hash` (the row before's `row_hash`, or GENESIS) and
`row_hash` = SHA-256 of the canonical JSON of its content and `prev_hash`. Numbers and hashes
are given at flush time by a `before_flush` hook on every ORM session (so `audit`, `refuse` and
any `session.add(AuditEntry(...))` are chained), and by `append_audit_rows` for bulk Core
inserts. Each writing transaction first locks the one-row `audit_chain_head` (row lock on
PostgreSQL, the write lock on SQLite), so rows are numbered by one writer at a time, and moves it
onto its last row after the insert.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, event, insert, select, text
from sqlalchemy.orm import Session
from sqlalchemy.orm import attributes as orm_attributes

from nearfab.common.canonical import canonical_json, sha256_hex, to_jsonable
from nearfab.identity.models import AuditChainHead, AuditCheckpoint, AuditEntry
from nearfab.uow import UnitOfWork

GENESIS = "0" * 64  # the `prev_hash` of the first row

ENTRIES = cast(Table, AuditEntry.__table__)
HEAD = cast(Table, AuditChainHead.__table__)
CHECKPOINTS = cast(Table, AuditCheckpoint.__table__)


# --- keys: installed per database engine by the composition root (bootstrap) --------------------
@dataclass(frozen=True)
class RetiredSigningKey:
    """A checkpoint key replaced by a rekey (its public half only): it signed this chain's
    checkpoints up to `until_seq` (the last it had signed here when it was replaced)."""

    key_id: str
    public_key_pem: str
    until_seq: int


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
    # a rekeyed node's earlier keys, kept for verification only (keys/retired/, nodekeys.py):
    # its own earlier audit keys by fingerprint, and the earlier checkpoint keys' public halves
    retired_mac: dict[str, bytes] = field(default_factory=dict)
    retired_signing: list[RetiredSigningKey] = field(default_factory=list)
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

# the row that starts a key epoch (`nearfab node rekey`, nodekeys.py): its `old` and `new` name
# the keys' fingerprints, its `new` also the head it seals; it is MACed with the new key
REKEY_ENTITY_TYPE = "platform_key"
REKEY_ENTITY_ID = "node_keys"
# a session that writes the rekey row MACs it with the new key (session.info)
MAC_KEY_OVERRIDE = "nearfab.audit_mac_key"


def audit_key_fingerprint(key: bytes) -> str:
    """The fingerprint of an audit HMAC key, as recorded in platform_keys and rekey rows."""
    return hashlib.sha256(b"nearfab-audit-chain" + key).hexdigest()[:16]


def entry_mac(key: bytes, content: Mapping[str, Any]) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of the row's content (with its `seq`, without
    `prev_hash`), keyed with the audit key: only a holder of the key file can compute it."""
    return hmac.new(key, MAC_CONTEXT + canonical_json(dict(content)), hashlib.sha256).hexdigest()


# --- the chain ----------------------------------------------------------------------------------
def iso_utc(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def entry_content(row: Mapping[str, Any] | AuditEntry) -> dict[str, Any]:
    """What a row's hash covers (everything but its database id and its own hashes)."""
    get = row.get if isinstance(row, Mapping) else lambda k: getattr(row, k, None)
    old, new = get("old"), get("new")
    return {
        "seq": get("seq"),
        "at": iso_utc(cast(datetime, get("at"))),
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


def lock_head(conn: Connection) -> tuple[int, str]:
    """Take the chain's write lock and read where it ends. PostgreSQL: a row lock held to the
    end of the transaction. SQLite: a no-op UPDATE takes the database's one write lock now,
    before the head is read (a plain SELECT would read outside the transaction)."""
    if conn.dialect.name == "postgresql":
        row = conn.execute(
            select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1).with_for_update()
        ).first()
    else:
        row = conn.execute(
            text("UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
        ).first()
    if row is None:
        raise RuntimeError("the audit chain head row is missing: run `nearfab init` (migrations)")
    return int(row[0]), str(row[1])


def _move_head(conn: Connection, seq: int, row_hash: str) -> None:
    conn.execute(HEAD.update().where(HEAD.c.id == 1).values(seq=seq, hash=row_hash))


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
    seq, prev = lock_head(conn)
    key = session.info.get(MAC_KEY_OVERRIDE) or _mac_key(conn)
    session.info[_PENDING_HEAD] = _chain(new, seq, prev, setattr, key)


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
    seq, prev = lock_head(conn)
    seq, prev = _chain(batch, seq, prev, lambda r, k, v: r.__setitem__(k, v), _mac_key(conn))
    conn.execute(insert(AuditEntry), batch)
    _move_head(conn, seq, prev)
    return len(batch)


def read_head(conn: Connection) -> tuple[int, str] | None:
    row = conn.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD.c.id == 1)).first()
    return (int(row[0]), str(row[1])) if row is not None else None


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
