"""Verifying the audit trail: walk the chain and name the first bad row (edited, deleted,
inserted, reordered), check each row's MAC and every signed checkpoint (and an exported
checkpoint file) against the rows."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, select, tuple_

from nearfab.identity.logic import Actor
from nearfab.identity.permissions import Permission, authorize_network
from nearfab.identity.services.auditchain import (
    ENTRIES,
    GENESIS,
    REKEY_ENTITY_ID,
    REKEY_ENTITY_TYPE,
    AuditKeys,
    BadRow,
    audit_key_fingerprint,
    audit_keys,
    entry_content,
    entry_hash,
    entry_mac,
    read_head,
)
from nearfab.identity.services.checkpoints import (
    Checkpoint,
    CheckpointFile,
    read_checkpoint_file,
    stored_checkpoints,
)
from nearfab.uow import UnitOfWork


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
    # rows of a key epoch whose audit key this data folder does not hold (a node's copy of the
    # control's rows, before its rekey): no MAC checked, their hashes sealed by the rekey row
    sealed_rows: int = 0

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
            "sealed_rows": self.sealed_rows,
        }


_COLUMNS = [c for c in ENTRIES.c]


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


def _is_rekey(row: Mapping[str, Any]) -> bool:
    return bool(row["entity_type"] == REKEY_ENTITY_TYPE and row["entity_id"] == REKEY_ENTITY_ID)


def _named(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else None


def _first_epoch(conn: Connection, held: Mapping[str, bytes], current: str) -> str | None:
    """The fingerprint of the audit key the chain's first rows were MACed with: the one the
    first rekey row replaced, else the data folder's own key."""
    first = conn.execute(
        select(ENTRIES.c.old)
        .where(ENTRIES.c.entity_type == REKEY_ENTITY_TYPE, ENTRIES.c.entity_id == REKEY_ENTITY_ID)
        .order_by(ENTRIES.c.seq, ENTRIES.c.id)
        .limit(1)
    ).first()
    if first is None:
        return current
    named = _named(first[0], "audit_chain")
    return str(named) if named is not None else None


def _check_rekey(
    row: Mapping[str, Any],
    nxt: Mapping[str, Any] | None,
    held: Mapping[str, bytes],
    epoch: str | None,
) -> tuple[BadRow | None, str | None]:
    """A rekey row starts a key epoch (docs/audit-trail.md): it is MACed with the new key it
    names, it names the key of the rows before it, and it seals them: its `new.sealed_head`
    is the seq and hash of the row before it. Returns (problem or None, the new epoch's key
    fingerprint)."""
    new_fp = _named(row.get("new"), "audit_chain")
    key = held.get(str(new_fp)) if new_fp is not None else None
    if key is None:
        return (
            _bad(
                row,
                "edited",
                f"it names audit key {new_fp}, which this data folder does not hold "
                "(keys/audit_chain.key, keys/retired/): a rekey not made here, or its key lost",
            ),
            None,
        )
    bad, _valid = _check_mac(row, nxt, key, True)
    if bad is not None:
        return bad, None
    old_fp = _named(row.get("old"), "audit_chain")
    if old_fp != epoch:
        return (
            _bad(
                row,
                "edited",
                f"it replaces audit key {old_fp}, but the rows before it are of key {epoch}",
            ),
            None,
        )
    sealed = _named(row.get("new"), "sealed_head")
    want = [row["seq"] - 1, row["prev_hash"]]
    if not isinstance(sealed, list) or [int(sealed[0]), str(sealed[1])] != want:
        return (
            _bad(
                row,
                "edited",
                f"the rows before it were changed after the rekey sealed them: it sealed "
                f"{sealed}, the chain before it now ends at seq {want[0]} hash {want[1][:16]}…",
            ),
            None,
        )
    return None, str(new_fp)


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
    # key epochs: the data folder's key and its own earlier ones (a rekeyed node's); a rekey
    # row switches to the key it names for the rows from it on
    held: dict[str, bytes] = {}
    epoch: str | None = None
    if key_set is not None:
        held = {**key_set.retired_mac, audit_key_fingerprint(key_set.mac_key): key_set.mac_key}
        epoch = _first_epoch(conn, held, audit_key_fingerprint(key_set.mac_key))
    sealed = 0
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
            sealed_rows=sealed,
        )

    nulls = conn.execute(
        select(ENTRIES.c.id, ENTRIES.c.entity_type, ENTRIES.c.entity_id)
        .where(ENTRIES.c.seq.is_(None))
        .order_by(ENTRIES.c.id)
        .limit(1)
    ).first()
    head = read_head(conn)
    if head is None:
        bad = BadRow(None, None, None, None, "deleted", "the chain head row is missing")
        return report(bad, (0, ""), False)
    if nulls is not None:
        bad = BadRow(None, nulls[0], nulls[1], nulls[2], "inserted", "it has no sequence number")
        return report(bad, head, False)
    while True:
        stmt = select(*_COLUMNS).order_by(ENTRIES.c.seq, ENTRIES.c.id).limit(chunk)
        if prev is not None:
            stmt = stmt.where(tuple_(ENTRIES.c.seq, ENTRIES.c.id) > (prev["seq"], prev["id"]))
        # the head read before the rows bounds what must be there (a row it counts was committed
        # before the query); the head read after them says which rows the application wrote
        head = read_head(conn) or (0, GENESIS)
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        if not rows:
            break
        head_after = read_head(conn) or (0, GENESIS)
        for i, row in enumerate(rows):
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            found = _check_row(row, prev, nxt, head_after[0])
            if found is None and mac_key is not None:
                epoch_key = held.get(epoch) if epoch is not None else None
                if _is_rekey(row):
                    found, epoch = _check_rekey(row, nxt, held, epoch)
                    keyed = keyed or found is None
                elif epoch_key is None:  # a key this folder does not hold: sealed, unchecked
                    sealed += 1
                else:
                    required = keyed or (required_from is not None and row["seq"] >= required_from)
                    found, valid = _check_mac(row, nxt, epoch_key, required)
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
