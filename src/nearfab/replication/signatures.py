"""The Ed25519 signatures of the ledger entries a node received, checked where they arrive
(docs/replication.md, "Signatures"). Pure: the keys come in a `KeyBook`.

The rules are those of the custody ledger (docs/custody.md), re-implemented from the documented
formulas: a signature is Ed25519 over the bytes of the entry's `entry_hash` with the site key
named by `key_id`; an entry written in a block may carry no signature of its own, covered by
the next signed entry of the same key (whose hash covers it through the chain), and every
call of the writer ends signed, so a committed chain never ends unsigned; a key rotation
(`kind` "key") introduces the new key, and it is trusted because the key before signed it.
A key the node's database holds as retired at T (a rotation there, a certified statement
saying so, or a revoked certificate: custody's `site_public_keys`) validates no entry whose
hashed payload says it was recorded after T, even before the rotation entry arrives; that time
is the signer's claim (see docs/replication.md, "Signatures").
A node sends its own site's chain only: an entry of another site is refused, as is one whose
columns (site, seq, kind, ref) differ from the payload its hash covers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from nearfab.replication.enums import RecordKind
from nearfab.replication.logic import Record

ROTATION = "key"  # the ledger kind of a key rotation entry (custody's LedgerKind.KEY)


class KeyBook:
    """The ledger keys a receiving node checks with: key id -> (site, raw public key). It starts
    from the node's own database (custody's read view `site_public_keys`) and learns the keys a
    known key introduced in a chain it received."""

    def __init__(
        self, known: Mapping[str, tuple[str, bytes] | tuple[str, bytes, datetime | None]]
    ) -> None:
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        # key id -> when it was retired here: it validates no entry recorded after that
        self._retired: dict[str, datetime] = {}
        for key_id, (site_id, raw, *rest) in known.items():
            if self._add(key_id, site_id, raw) and rest and rest[0] is not None:
                retired = rest[0]
                self._retired[key_id] = (
                    retired if retired.tzinfo is not None else retired.replace(tzinfo=UTC)
                )

    def _add(self, key_id: str, site_id: str, raw: bytes) -> bool:
        try:
            self._keys[key_id] = (site_id, Ed25519PublicKey.from_public_bytes(raw))
        except ValueError:
            return False
        return True

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys

    def holds(self, key_id: str, site_id: str, public_hex: str) -> bool:
        """Whether `key_id` is known as exactly this site's key (a rotation this node's own
        database already holds, e.g. one made before the node's copy)."""
        found = self._keys.get(key_id)
        if found is None or found[0] != site_id:
            return False
        raw = found[1].public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex() == public_hex.lower()

    def check(self, key_id: str, site_id: str, digest: str, signature: str) -> bool | None:
        """True: valid; False: not valid (or another site's key); None: key not known here."""
        found = self._keys.get(key_id)
        if found is None:
            return None
        if found[0] != site_id:
            return False
        try:
            found[1].verify(bytes.fromhex(signature), bytes.fromhex(digest))
        except (InvalidSignature, ValueError):
            return False
        return True

    def late(self, key_id: str, row: Mapping[str, Any]) -> str | None:
        """Why an entry signed with `key_id` is past the key's retirement here (None: it is
        not, or the key is not retired): its hashed payload's `recorded_at` after it."""
        retired = self._retired.get(key_id)
        if retired is None:
            return None
        try:
            stated = json.loads(str(row.get("payload")))["recorded_at"]
            recorded = datetime.fromisoformat(str(stated))
        except (ValueError, KeyError, TypeError):
            return f"key {key_id} is retired here and the entry states no time it was recorded"
        if recorded.tzinfo is None:
            recorded = recorded.replace(tzinfo=UTC)
        if recorded <= retired:
            return None
        return (
            f"key {key_id} is retired here since {retired.isoformat()} (a rotation, a "
            f"certified statement or a revoked certificate) and the entry says it was recorded "
            f"at {recorded.isoformat()}: signed after the key's retirement"
        )

    def introduce(self, key_id: str, site_id: str, public_hex: str) -> bool:
        """Trust a new key of `site_id`; never replaces a key id already known (a rotation
        naming another key's id would take that key over)."""
        if key_id in self._keys:
            return False
        try:
            return self._add(key_id, site_id, bytes.fromhex(public_hex))
        except ValueError:
            return False


@dataclass
class SignatureReport:
    """One origin's ledger signatures as checked: how many verified, the problems in words,
    and the keys this node does not know (their signatures could not be checked)."""

    verified: int = 0
    problems: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)


@dataclass
class _Run:
    key_id: str | None = None
    last_seq: int = 0
    uncovered: int | None = None  # first entry of the run not covered by a signature yet
    # keys a verified rotation replaced in this chain -> the rotation's ledger seq: they sign
    # nothing after it (a leaked old key cannot go on signing)
    retired: dict[str, int] = field(default_factory=dict)


def verify_signatures(records: Sequence[Record], book: KeyBook) -> SignatureReport:
    """Check the signatures of the ledger entries among one origin's records (seq order)."""
    report = SignatureReport()
    runs: dict[str, _Run] = {}
    for record in records:
        if record.kind != RecordKind.LEDGER.value:
            continue
        try:
            row: dict[str, Any] = json.loads(record.payload)
        except ValueError:
            continue  # named by verify_chain
        site, seq = str(row.get("site_id")), row.get("seq")
        key_id, signature = str(row.get("key_id") or ""), str(row.get("signature") or "")
        digest = str(row.get("entry_hash") or "")
        where = f"{record.origin_site} seq {record.seq} (ledger {site} seq {seq})"
        if site != record.origin_site:
            report.problems.append(
                f"{where}: an entry of another site's chain (a node sends its own site's only)"
            )
            continue
        if not _columns_match(row):
            report.problems.append(f"{where}: its columns differ from the payload its hash covers")
            continue
        run = runs.setdefault(site, _Run())
        if not isinstance(seq, int) or seq != run.last_seq + 1 or key_id != run.key_id:
            _uncovered(report, record.origin_site, site, run)  # its covering entry is not here
        run.key_id, run.last_seq = key_id, seq if isinstance(seq, int) else 0
        if key_id in run.retired:
            report.problems.append(
                f"{where}: key {key_id} was replaced at ledger seq {run.retired[key_id]} "
                "and signs nothing after it"
            )
            run.uncovered = None
            continue
        if not signature:
            if run.uncovered is None:
                run.uncovered = run.last_seq
            continue
        run.uncovered = None
        valid = book.check(key_id, site, digest, signature)
        if valid is None:
            if key_id not in report.unknown_keys:
                report.unknown_keys.append(key_id)
            continue
        if not valid:
            report.problems.append(f"{where}: signature is not valid for key {key_id}")
            continue
        late = book.late(key_id, row)
        if late is not None:
            report.problems.append(f"{where}: {late}")
            continue
        report.verified += 1
        if row.get("kind") == ROTATION and _introduce(book, site, row, where, report):
            run.retired[key_id] = run.last_seq
    for site, run in runs.items():  # a committed chain ends signed
        _uncovered(report, records[-1].origin_site if records else "?", site, run)
    return report


def _uncovered(report: SignatureReport, origin: str, site: str, run: _Run) -> None:
    if run.uncovered is not None:
        report.problems.append(
            f"{origin}: ledger {site} seq {run.uncovered} is covered by no signature of key "
            f"{run.key_id} (the signed entry ending its block is missing)"
        )
        run.uncovered = None


def _columns_match(row: Mapping[str, Any]) -> bool:
    """The entry's site, seq, kind and ref as its hashed payload states them."""
    try:
        entry = json.loads(str(row.get("payload")))
    except ValueError:
        return False
    return (
        isinstance(entry, dict)
        and all(entry.get(name) == row.get(name) for name in ("site_id", "seq", "kind"))
        # the ref column keeps the first 100 characters (custody's LedgerEntry.ref)
        and str(entry.get("ref"))[:100] == row.get("ref")
    )


def _introduce(
    book: KeyBook, site: str, row: Mapping[str, Any], where: str, report: SignatureReport
) -> bool:
    """A rotation signed by a known key of the site: its new key is trusted from here on (and
    the key that signed it retired). False, with the problem named, when it introduces none."""
    try:
        body = json.loads(str(row.get("payload")))["body"]
        new_key, public = str(body["new_key_id"]), str(body["public_key"])
    except (ValueError, KeyError, TypeError):
        report.problems.append(f"{where}: a key rotation that names no new key")
        return False
    if book.holds(new_key, site, public):
        return True  # known here already, as this very key of this site
    if book.knows(new_key):
        report.problems.append(f"{where}: the rotation names key {new_key}, already known")
        return False
    if not book.introduce(new_key, site, public):
        report.problems.append(f"{where}: the new key {new_key} is not an Ed25519 public key")
        return False
    return True
