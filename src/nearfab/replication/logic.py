"""Replication records as pure data: their hash, their wire form, and the checks the receiving
node makes (gaps, the record chain, the source chains they carry). No I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.replication.enums import RecordKind

GENESIS = "0" * 64  # the `prev_hash` of a node's first record
TOPIC_ROOT = "nearfab/repl/v1"
WIRE_FIELDS = (
    "id",
    "origin_site",
    "seq",
    "kind",
    "source_ref",
    "chain_hash",
    "prev_hash",
    "record_hash",
    "payload",
    "created_at",
)


def topic(origin_site: str, kind: str) -> str:
    """Where a node publishes one of its records: `nearfab/repl/v1/<origin site>/<kind>`."""
    return f"{TOPIC_ROOT}/{origin_site}/{kind}"


def origin_filter(origin_site: str | None = None) -> str:
    """The subscription for one origin's records (every origin's when None)."""
    return f"{TOPIC_ROOT}/{origin_site or '+'}/#"


def record_id(origin_site: str, source_ref: str) -> str:
    """A record's stable id: the same source row always gets the same id, so a row captured
    twice (or delivered twice) is recognised as the same record."""
    return f"{origin_site}/{source_ref}"


def record_hash(
    *,
    id: str,
    origin_site: str,
    seq: int,
    kind: str,
    source_ref: str,
    chain_hash: str,
    prev_hash: str,
    payload: str,
) -> str:
    """SHA-256 of the canonical JSON of the record's fields and the previous record's hash:
    the node's outbox is a hash chain of its own, across every kind of record."""
    return sha256_hex(
        canonical_json(
            {
                "id": id,
                "origin_site": origin_site,
                "seq": seq,
                "kind": kind,
                "source_ref": source_ref,
                "chain_hash": chain_hash,
                "prev_hash": prev_hash,
                "payload": payload,
            }
        )
    )


@dataclass(frozen=True)
class Record:
    """One replicated record as it travels."""

    id: str
    origin_site: str
    seq: int
    kind: str
    source_ref: str
    chain_hash: str
    prev_hash: str
    record_hash: str
    payload: str
    created_at: str

    def expected_hash(self) -> str:
        return record_hash(
            id=self.id,
            origin_site=self.origin_site,
            seq=self.seq,
            kind=self.kind,
            source_ref=self.source_ref,
            chain_hash=self.chain_hash,
            prev_hash=self.prev_hash,
            payload=self.payload,
        )

    def to_message(self) -> bytes:
        return canonical_json(asdict(self))


class MalformedRecord(ValueError):
    """A message that is not a replication record; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_message(data: bytes) -> Record:
    """The record a message carries; MalformedRecord naming the field otherwise."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRecord("message", "not JSON") from None
    if not isinstance(raw, dict):
        raise MalformedRecord("message", "not a JSON object")
    values: dict[str, Any] = {}
    for name in WIRE_FIELDS:
        if name not in raw:
            raise MalformedRecord(name, "missing")
        value = raw[name]
        if name == "seq":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MalformedRecord(name, "must be a whole number from 1")
        elif not isinstance(value, str) or not value:
            raise MalformedRecord(name, "must be a non-empty string")
        values[name] = value
    if values["kind"] not in {k.value for k in RecordKind}:
        raise MalformedRecord("kind", f"unknown kind {values['kind']!r}")
    return Record(**values)


def missing_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """The runs of sequence numbers missing from 1 to the highest one received."""
    gaps: list[tuple[int, int]] = []
    expected = 1
    for seq in sorted(set(seqs)):
        if seq > expected:
            gaps.append((expected, seq - 1))
        expected = seq + 1
    return gaps


def describe_range(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


def _audit_row_hash(row: Mapping[str, Any]) -> str:
    # docs/audit-trail.md: SHA-256 of the canonical JSON of the row's content and prev_hash
    content = {k: v for k, v in row.items() if k != "row_hash"}
    return sha256_hex(canonical_json(content))


def _ledger_entry_hash(prev_hash: str, payload: str) -> str:
    # docs/custody.md: SHA-256 over the previous entry's hash, a newline and the payload
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + payload.encode("utf-8")).hexdigest()


def verify_chain(records: Sequence[Record]) -> list[str]:
    """Check one origin's records, in seq order: each record's hash, each link to the record
    before, and the source chains they carry (each audit row's and ledger entry's own hash, and
    their links where consecutive rows arrived). Returns the problems in words, first first."""
    problems: list[str] = []
    prev_record: Record | None = None
    last_source: dict[str, tuple[int, str]] = {}  # chain -> (seq, hash) of the last row seen
    audit_hashes: dict[Any, str] = {}  # audit seq -> row hash, for the batch summaries
    audit_news: dict[Any, Any] = {}  # audit seq -> the `new` of a row sending a dossier
    for record in records:
        where = f"{record.origin_site} seq {record.seq} ({record.source_ref})"
        if record.record_hash != record.expected_hash():
            problems.append(f"{where}: record hash does not match its content (altered)")
        if prev_record is None:
            if record.seq == 1 and record.prev_hash != GENESIS:
                problems.append(f"{where}: the first record does not start the chain")
        elif prev_record.seq == record.seq - 1 and record.prev_hash != prev_record.record_hash:
            problems.append(
                f"{where}: does not follow seq {prev_record.seq} (prev_hash differs: a fork "
                "or a record replaced)"
            )
        prev_record = record
        try:
            row = json.loads(record.payload)
        except ValueError:
            problems.append(f"{where}: payload is not JSON")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: payload is not a JSON object")
            continue
        if record.kind in (
            RecordKind.BATCH.value,
            RecordKind.TELEMETRY.value,
            RecordKind.DOSSIER.value,
        ):
            # a summary carries the hash of the audit row that changed the batch record (a
            # dossier: of the audit row that sent it, whose `new` it must be)
            carried = audit_hashes.get(row.get("audit_seq"))
            if carried is not None and carried != record.chain_hash:
                problems.append(f"{where}: carries another hash than audit seq {row['audit_seq']}")
            sent = audit_news.get(row.get("audit_seq"))
            if record.kind == RecordKind.DOSSIER.value and sent is not None:
                own_part = {k: v for k, v in row.items() if k not in ("audit_seq", "sent_at")}
                if own_part != sent:
                    problems.append(
                        f"{where}: is not the dossier audit seq {row['audit_seq']} sent"
                    )
            continue
        if record.kind == RecordKind.AUDIT.value:
            chain, seq, prev, own = (
                "audit",
                row.get("seq"),
                row.get("prev_hash"),
                row.get("row_hash"),
            )
            ok = own == record.chain_hash and _audit_row_hash(row) == own
            audit_hashes[seq] = record.chain_hash
            if row.get("entity_type") == "release_dossier":
                audit_news[seq] = row.get("new")
        else:
            chain = f"ledger:{row.get('site_id')}"
            seq, prev, own = row.get("seq"), row.get("prev_hash"), row.get("entry_hash")
            ok = (
                own == record.chain_hash
                and isinstance(prev, str)
                and isinstance(row.get("payload"), str)
                and _ledger_entry_hash(prev, str(row["payload"])) == own
            )
        if not ok:
            problems.append(f"{where}: the {chain} row's hash does not match its content")
        if isinstance(seq, int):
            before = last_source.get(chain)
            if before is not None and before[0] == seq - 1 and before[1] != prev:
                problems.append(f"{where}: {chain} seq {seq} does not follow seq {seq - 1}")
            last_source[chain] = (seq, str(own))
    return problems


# --- the control's signed decisions (releases.py signs them, decisions.py requires them) ---
def decision_ref(batch_id: str) -> str:
    """The ref of the control's signed ledger entry for a QP decision on a site's batch."""
    return f"remote_release:{batch_id}"


def publication_ref(master_file_id: str) -> str:
    """The ref of the control's signed ledger entry for a master-file version it published."""
    return f"master_file_published:{master_file_id}"


def withdrawal_ref(master_file_id: str) -> str:
    """The ref of the control's signed ledger entry for a master-file version it withdrew."""
    return f"master_file_withdrawn:{master_file_id}"


def recall_ref(recall_id: str) -> str:
    """The ref of the control's signed ledger entry for a recall it made."""
    return f"recall:{recall_id}"


def handover_ref(order_id: str) -> str:
    """The ref of the control's signed ledger entry for an order it handed over to a site."""
    return f"order_handover:{order_id}"


def cancellation_ref(order_id: str) -> str:
    """The ref of the control's signed ledger entry for a handed-over order it cancelled (one
    per order: a cancelled order is never cancelled again)."""
    return f"order_cancellation:{order_id}"


def transfer_ref(order_id: str) -> str:
    """The ref of the control's signed ledger entry for an order it moves from the site that
    holds it to another site (docs/replication.md, "Orders moved between sites"): each
    transfer's body names which (`transfer_id`) by SHA-256."""
    return f"order_transfer:{order_id}"


def order_release_ref(order_id: str) -> str:
    """The ref of a site node's signed ledger entry for an order it gave up for a transfer the
    control decided (its body names the release's SHA-256)."""
    return f"order_release:{order_id}"


def dossier_ref(batch_id: str) -> str:
    """The ref of a site node's signed ledger entry for a release dossier it sent (one per
    dossier sent: its body names which by SHA-256)."""
    return f"release_dossier:{batch_id}"


def decision_digest(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a decision's audit body: what the control's signed
    ledger entry names, and what the site node checks the decision it acts on against."""
    return sha256_hex(canonical_json(body))
