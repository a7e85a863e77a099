"""The custody ledger's hash chain: canonical payloads, entry hashes, and the check of a whole
chain. Pure: signatures are checked through a function the caller gives."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: the exact text that is hashed and stored."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev_hash: str, payload: str) -> str:
    """SHA-256 over the previous entry's hash and this entry's canonical payload."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + payload.encode("utf-8")).hexdigest()


def payload_of(
    *, site_id: str, seq: int, kind: str, ref: str, recorded_at: str, body: Mapping[str, Any]
) -> str:
    return canonical(
        {
            "site_id": site_id,
            "seq": seq,
            "kind": kind,
            "ref": ref,
            "recorded_at": recorded_at,
            "body": body,
        }
    )


@dataclass(frozen=True)
class Row:
    """A ledger row as read from the database (nothing trusted yet)."""

    id: int
    site_id: str
    seq: int
    kind: str
    ref: str
    payload: str
    prev_hash: str
    entry_hash: str
    key_id: str
    signature: str


@dataclass(frozen=True)
class Problem:
    site_id: str
    seq: int
    entry_id: int | None
    reason: str

    def describe(self) -> str:
        which = f"entry #{self.entry_id}" if self.entry_id is not None else "an entry"
        return f"site {self.site_id}, seq {self.seq} ({which}): {self.reason}"


SignatureCheck = Callable[[str, str, str, str], bool]
"""(key_id, site_id, entry_hash, signature hex) -> signature valid for that site's key."""


def verify_chain(
    rows: Sequence[Row], check_signature: SignatureCheck, *, all_signatures: bool = True
) -> list[Problem]:
    """Problems of one site's chain, first first. `rows` ordered by seq.

    Without `all_signatures`, only the last entry signed by each key is checked: its signature
    covers its hash, which covers every entry before it, so a rewritten chain still fails
    there (and an edited or removed entry breaks the hash links at once)."""
    problems: list[Problem] = []
    prev = GENESIS
    expected_seq = 1
    for index, row in enumerate(rows):
        last_of_key = index + 1 == len(rows) or rows[index + 1].key_id != row.key_id
        if row.seq != expected_seq:
            if row.seq > expected_seq:
                reason = (
                    f"entries {expected_seq}..{row.seq - 1} are missing (deleted?)"
                    if row.seq - 1 > expected_seq
                    else f"entry {expected_seq} is missing (deleted?)"
                )
            else:
                reason = f"sequence number out of order (expected {expected_seq})"
            problems.append(Problem(row.site_id, row.seq, row.id, reason))
        try:
            body = json.loads(row.payload)
        except ValueError:
            problems.append(Problem(row.site_id, row.seq, row.id, "payload is not JSON"))
            body = {}
        if isinstance(body, dict) and (
            body.get("seq") != row.seq
            or body.get("site_id") != row.site_id
            or body.get("kind") != row.kind
            or body.get("ref") != row.ref
        ):
            problems.append(
                Problem(row.site_id, row.seq, row.id, "columns differ from the hashed payload")
            )
        if row.prev_hash != prev:
            problems.append(
                Problem(
                    row.site_id,
                    row.seq,
                    row.id,
                    "does not follow the previous entry (inserted, deleted or reordered)",
                )
            )
        if entry_hash(row.prev_hash, row.payload) != row.entry_hash:
            problems.append(
                Problem(row.site_id, row.seq, row.id, "content changed after it was recorded")
            )
        if (all_signatures or last_of_key) and not check_signature(
            row.key_id, row.site_id, row.entry_hash, row.signature
        ):
            problems.append(Problem(row.site_id, row.seq, row.id, "signature is not valid"))
        prev = row.entry_hash
        expected_seq = row.seq + 1
    return problems


def verify_anchors(anchors: Iterable[Row], heads: Mapping[str, Mapping[int, str]]) -> list[Problem]:
    """Each anchor (control-site entry) names a site's (seq, hash); that entry must exist with
    that hash. `heads`: site -> seq -> entry_hash of its current rows."""
    problems: list[Problem] = []
    for anchor in anchors:
        body = json.loads(anchor.payload).get("body", {})
        site, seq, head = body.get("site_id"), body.get("seq"), body.get("head")
        chain = heads.get(str(site), {})
        if not isinstance(seq, int) or seq not in chain:
            problems.append(
                Problem(
                    str(site),
                    int(seq) if isinstance(seq, int) else 0,
                    None,
                    f"missing, though the control site anchored it (anchor seq {anchor.seq})",
                )
            )
        elif chain[seq] != head:
            problems.append(
                Problem(
                    str(site),
                    seq,
                    None,
                    f"differs from the hash the control site anchored (anchor seq {anchor.seq})",
                )
            )
    return problems
