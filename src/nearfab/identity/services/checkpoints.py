"""Signed checkpoints of the audit trail: the audit head and every custody ledger head, signed
with the control site's key, stored (append-only), recorded in the control site's ledger
chain, and exported as a file to keep outside the database."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, func, select

from nearfab.common.canonical import canonical_json
from nearfab.common.errors import ValidationFailed
from nearfab.identity.logic import Actor
from nearfab.identity.permissions import Permission, authorize_network
from nearfab.identity.services.auditchain import (
    CHECKPOINTS,
    ENTRIES,
    GENESIS,
    AuditKeys,
    BadRow,
    audit_keys,
    iso_utc,
    read_head,
)
from nearfab.uow import UnitOfWork


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


def signed_by_keys(keys: AuditKeys, body: Mapping[str, Any], signature: str) -> bool:
    """Signed with the installation's checkpoint key, or with a key a rekey retired, for a
    checkpoint up to its `until_seq` (the last checkpoint it had signed here: the same key goes
    on signing another node's chain after the rekey, which is not this one)."""
    if signature_ok(keys.public_key_pem, body, signature):
        return True
    try:
        seq = int(body["seq"])
    except (KeyError, TypeError, ValueError):
        return False
    return any(
        r.key_id == body.get("key_id")
        and seq <= r.until_seq
        and signature_ok(r.public_key_pem, body, signature)
        for r in keys.retired_signing
    )


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
    rows = conn.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.id)).mappings().all()
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
                and signed_by_keys(keys, body, signature)
                and not any(k[0] == copy.seq and k[1] == copy.head_hash for k in known)
            ):
                good.append(copy)
    for row in rows:
        try:
            body = json_loads(row["body"])
            checkpoint = _checkpoint_of(body, row["signature"], id=row["id"])
            signed = keys is not None and signed_by_keys(keys, checkpoint.body(), row["signature"])
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
    ) or (
        # a file exported before a rekey, signed by the key it retired (nodekeys.py)
        keys is not None
        and _public_key(pem) is not None
        and any(
            _raw(_public_key(r.public_key_pem)) == _raw(_public_key(pem))
            and checkpoint.seq <= r.until_seq
            for r in keys.retired_signing
        )
    )
    return CheckpointFile(checkpoint, marks, pem, str(doc.get("key_id", "")), same)


def _raw(key: Ed25519PublicKey | None) -> bytes:
    if key is None:
        return b""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


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
    seq, head = read_head(conn) or (0, GENESIS)
    keyed_from = conn.execute(
        select(func.min(ENTRIES.c.seq)).where(ENTRIES.c.row_mac.is_not(None))
    ).scalar()
    ledger = keys.ledger_heads(conn) if keys.ledger_heads is not None else {}
    at = uow.clock.now()
    body = checkpoint_body(
        seq=seq,
        head_hash=head,
        at=iso_utc(at),
        keyed_from=None if keyed_from is None else int(keyed_from),
        ledger=ledger,
        key_id=keys.key_id,
    )
    signature = keys.sign(body)
    row_id = conn.execute(
        CHECKPOINTS.insert()
        .values(
            seq=seq,
            head_hash=head,
            at=at,
            body=canonical_json(body).decode("utf-8"),
            key_id=keys.key_id,
            signature=signature,
        )
        .returning(CHECKPOINTS.c.id)
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
        select(CHECKPOINTS.c.seq, CHECKPOINTS.c.at, CHECKPOINTS.c.body)
        .order_by(CHECKPOINTS.c.id.desc())
        .limit(1)
    ).first()
    head = read_head(conn) or (0, GENESIS)
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
        "exported_at": iso_utc(uow.clock.now()),
        "exported_by": actor.user_id,
        "key_id": keys.key_id,
        "public_key_pem": keys.public_key_pem,
        "checkpoint": checkpoint.body(),
        "checkpoint_signature": checkpoint.signature,
        "marks": [[c.seq, c.head_hash] for c in earlier if c.seq < checkpoint.seq],
    }
    return {**doc, "signature": keys.sign(doc)}
