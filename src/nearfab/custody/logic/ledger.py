"""The custody ledger's hash chain: canonical payloads, entry hashes, and the check of a whole
chain. Pure: signatures are checked through a function the caller gives."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

GENESIS = "0" * 64


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 as is: the exact text that is hashed and stored (the
    same text as `json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`, from one encoder made once)."""
    return _CANONICAL.encode(value)


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


class Row(NamedTuple):
    """A ledger row as read from the database (nothing trusted yet). A tuple, so rows stream
    from the driver without an object per row."""

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


def row_problems(row: Sequence[Any], prev: str, expected_seq: int) -> list[Problem]:
    """Every problem of one row but its signature, the slow and exact way (parses the
    payload). `prev`: the previous row's hash (GENESIS first); `expected_seq`: its seq + 1."""
    id_, site_id, seq, kind, ref, payload, prev_hash, digest = row[:8]
    problems: list[Problem] = []
    if seq != expected_seq:
        if seq > expected_seq:
            reason = (
                f"entries {expected_seq}..{seq - 1} are missing (deleted?)"
                if seq - 1 > expected_seq
                else f"entry {expected_seq} is missing (deleted?)"
            )
        else:
            reason = f"sequence number out of order (expected {expected_seq})"
        problems.append(Problem(site_id, seq, id_, reason))
    try:
        body = json.loads(payload)
    except ValueError:
        problems.append(Problem(site_id, seq, id_, "payload is not JSON"))
        body = {}
    if isinstance(body, dict) and (
        body.get("seq") != seq
        or body.get("site_id") != site_id
        or body.get("kind") != kind
        or body.get("ref") != ref
    ):
        problems.append(Problem(site_id, seq, id_, "columns differ from the hashed payload"))
    if prev_hash != prev:
        problems.append(
            Problem(
                site_id,
                seq,
                id_,
                "does not follow the previous entry (inserted, deleted or reordered)",
            )
        )
    try:
        same = entry_hash(prev_hash, payload) == digest
    except (UnicodeError, AttributeError):
        same = False
    if not same:
        problems.append(Problem(site_id, seq, id_, "content changed after it was recorded"))
    return problems


# one string as `canonical` writes it (ensure_ascii=False): the C encoder, no encoder object
_json_text: Callable[[str], str] = json.encoder.encode_basestring
_KIND_PARTS: dict[str, str] = {}


def _head(kind: str) -> tuple[str, int]:
    """(',"kind":<kind>,"recorded_at":"', its length + 24): where a canonical payload's kind
    starts, counted back from the start of its recorded_at's closing quote."""
    head = ',"kind":' + _json_text(kind) + ',"recorded_at":"'
    return head, len(head) + 24


def _columns_match(payload: str, kind: str, ref: str, seq: int, site_tail: str) -> bool:
    """True only if the canonical payload's top-level kind, ref, seq and site_id are these
    columns, read off its end without parsing it: sorted keys put them last, in this order,
    after recorded_at. False means "not sure" (the caller parses the payload)."""
    tail = ',"ref":' + _json_text(ref) + ',"seq":' + str(seq) + site_tail
    if not payload.endswith(tail):
        return False
    cut = len(payload) - len(tail)
    if payload[cut - 1 : cut] != '"':
        return False
    at = cut - 41  # where it starts when recorded_at has epcis_time's 24 characters
    if not payload.startswith(',"recorded_at":"', at):
        at = payload.rfind(',"recorded_at":"', 0, cut)
    if at < 0 or payload.find('"', at + 16, cut - 1) != -1:
        return False
    kind_part = _KIND_PARTS.get(kind)
    if kind_part is None:
        kind_part = ',"kind":' + _json_text(kind)
        if len(_KIND_PARTS) < 64:
            _KIND_PARTS[kind] = kind_part
    return at >= len(kind_part) and payload.startswith(kind_part, at - len(kind_part))


STREAM_COLUMNS = (
    "id",
    "seq",
    "kind",
    "key_id",
    "ref",
    "payload",
    "prev_hash",
    "entry_hash",
    "signature",
)
"""One site's chain as `ChainChecker.feed` takes it: these columns of each row, in this order
(the site is given once per chain, not read with every row)."""


def as_row(site_id: str, streamed: Sequence[Any]) -> Row:
    """A streamed tuple (`STREAM_COLUMNS`) of `site_id`'s chain as a `Row`."""
    id_, seq, kind, key_id, ref, payload, prev_hash, digest, signature = streamed
    return Row(id_, site_id, seq, kind, ref, payload, prev_hash, digest, key_id, signature)


def as_streamed(row: Row) -> tuple[Any, ...]:
    """A `Row` as `ChainChecker.feed` takes it (`STREAM_COLUMNS`)."""
    return (
        row.id,
        row.seq,
        row.kind,
        row.key_id,
        row.ref,
        row.payload,
        row.prev_hash,
        row.entry_hash,
        row.signature,
    )


_NO_SIGNATURE = (
    "no signature covers it: the signed entry ending its block is missing "
    "(entries after it deleted?)"
)


@dataclass
class ChainSummary:
    """One site's chain as checked: how many entries, its head, and its problems."""

    site_id: str
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)


class ChainChecker:
    """Checks each site's chain, its rows streamed in seq order (`feed(site_id, rows)`, rows as
    `STREAM_COLUMNS`), one chain after another, with the same findings as `row_problems` plus
    signatures, in the same order.

    Fast path: a row whose seq follows, whose prev_hash is the previous row's hash, whose
    SHA-256 matches, and whose columns match the end of its payload is fine without parsing
    its JSON; any other row gets the exact, slow check. (A payload that is not JSON can only
    pass the fast path with a recomputed hash, which the site's signature then refuses.)
    Signatures: every one with `all_signatures` (the stream carries each row's signature, None
    or "" for an entry covered by the next signed entry of its key), else the last entry of
    each key in a chain, whose signature covers the hash that covers every entry before it.
    `keep`: (site, seq) pairs whose hashes to remember in `kept` (the anchored entries).
    `fetch_signature(row id)`: for rows streamed with signature None when only the last entry
    of each key is checked (reading the signature column of every row costs as much as the
    rest of the row; only a few are checked). `collect`: kinds whose rows are kept, as `Row`s
    in stream order, in `collected` (the anchors: found while checking, not by another pass
    over the ledger), whatever their check finds."""

    def __init__(
        self,
        check_signature: SignatureCheck,
        *,
        all_signatures: bool = False,
        keep: Mapping[str, set[int]] | None = None,
        fetch_signature: Callable[[int], str] | None = None,
        collect: Collection[str] = (),
    ) -> None:
        self._check = check_signature
        self._fetch = fetch_signature
        self._all = all_signatures
        self._keep = keep or {}
        self.chains: list[ChainSummary] = []
        self.kept: dict[str, dict[int, str]] = {}
        self.entries = 0
        self.collected: list[Row] = []
        self._collect = frozenset(collect)
        self._heads: dict[str, tuple[str, int]] = {}  # kind -> `_head(kind)`, not collected
        self._summary: ChainSummary | None = None
        self._site_tail = ""
        self._last: Sequence[Any] | None = None  # the chain's last row so far
        self._unsigned: Sequence[Any] | None = None  # first row waiting for a block signature

    def _signature(self, row: Sequence[Any]) -> None:
        """Check the signature of the last entry of a key's run (not checking every one): an
        entry appended in a block carries none ("") and is covered by the next signed entry of
        its key, so the end of a run must be signed."""
        assert self._summary is not None
        signature = row[8]
        if signature is None and self._fetch is not None:  # rows streamed without it
            signature = self._fetch(row[0])
        site = self._summary.site_id
        if not signature:
            self._summary.problems.append(Problem(site, row[1], row[0], _NO_SIGNATURE))
        elif not self._check(row[3], site, row[7], signature):
            self._summary.problems.append(Problem(site, row[1], row[0], "signature is not valid"))

    def _head_of(self, kind: str, site_id: str, row: Sequence[Any]) -> tuple[str, int]:
        """`_head(kind)` for a kind not in `_heads` yet: cached, except a collected kind,
        whose every row comes here and is kept."""
        head = _head(kind)
        if kind in self._collect:
            self.collected.append(as_row(site_id, row))
        elif len(self._heads) < 64:
            self._heads[kind] = head
        return head

    def _uncovered(self) -> None:
        """Unsigned rows that no signed row of their key followed (checking every one)."""
        first = self._unsigned
        if first is not None and self._summary is not None:
            self._summary.problems.append(
                Problem(self._summary.site_id, first[1], first[0], _NO_SIGNATURE)
            )
        self._unsigned = None

    def _end_chain(self) -> None:
        summary, last = self._summary, self._last
        if summary is not None and last is not None:
            if self._all:
                self._uncovered()
            else:
                self._signature(last)
            summary.head_seq, summary.head_hash = int(last[1]), str(last[7])
        self._summary = self._last = self._unsigned = None

    def feed(self, site_id: str, rows: Sequence[Sequence[Any]]) -> None:
        """The next rows of `site_id`'s chain (a new site ends the chain before it)."""
        if not rows:
            return
        summary = self._summary
        if summary is None or summary.site_id != site_id:
            self._end_chain()
            summary = self._summary = ChainSummary(site_id)
            self.chains.append(summary)
            self._site_tail = ',"site_id":' + _json_text(site_id) + "}"
        problems = summary.problems
        sha256 = hashlib.sha256
        json_text = _json_text
        heads = self._heads
        check = self._check
        check_all = self._all
        site_tail = self._site_tail
        last = self._last
        if last is None:
            prev, expected, key = GENESIS, 1, rows[0][3]
        else:
            prev, expected, key = last[7], last[1] + 1, last[3]
        for row in rows:
            id_, seq, kind, key_id, ref, payload, prev_hash, digest, signature = row
            if key_id != key:  # the previous key's run ended at `last`
                key = key_id
                if check_all:
                    self._uncovered()  # it ended with unsigned rows
                else:
                    assert last is not None
                    self._signature(last)
            # the columns read off the payload's end (sorted keys: kind, recorded_at, ref,
            # seq, site_id last; recorded_at of epcis_time's 24 characters): one endswith,
            # one startswith and one find; anything else takes `_columns_match`, then the
            # exact check
            tail = f'","ref":{json_text(ref)},"seq":{seq}{site_tail}'
            cut = len(payload) - len(tail)
            head = heads.get(kind) or self._head_of(kind, site_id, row)
            if not (
                seq == expected
                and prev_hash == prev
                and sha256(f"{prev}\n{payload}".encode()).hexdigest() == digest
                and (
                    (
                        payload.endswith(tail)
                        and payload.startswith(head[0], cut - head[1])
                        and payload.find('"', cut - 24, cut) < 0
                    )
                    or _columns_match(payload, kind, ref, seq, site_tail)
                )
            ):
                problems.extend(row_problems(as_row(site_id, row), prev, expected))
            if check_all:
                if not signature:  # covered by the next signed entry of its key
                    if self._unsigned is None:
                        self._unsigned = row
                else:
                    if not check(key_id, site_id, digest, signature):
                        problems.append(Problem(site_id, seq, id_, "signature is not valid"))
                    self._unsigned = None
            last, prev, expected = row, digest, seq + 1
        self._last = last
        summary.entries += len(rows)
        self.entries += len(rows)
        keep = self._keep.get(site_id)
        if keep:
            hits = keep.intersection([row[1] for row in rows])
            if hits:
                kept = self.kept.setdefault(site_id, {})
                for row in rows:
                    if row[1] in hits:
                        kept[row[1]] = row[7]

    def close(self) -> list[ChainSummary]:
        self._end_chain()
        return self.chains


def verify_chain(
    rows: Sequence[Row], check_signature: SignatureCheck, *, all_signatures: bool = True
) -> list[Problem]:
    """Problems of one site's chain, first first. `rows` ordered by seq.

    Without `all_signatures`, only the last entry signed by each key is checked: its signature
    covers its hash, which covers every entry before it, so a rewritten chain still fails
    there (and an edited or removed entry breaks the hash links at once)."""
    checker = ChainChecker(check_signature, all_signatures=all_signatures)
    for site_id, run in itertools.groupby(rows, key=lambda r: r.site_id):
        checker.feed(site_id, [as_streamed(r) for r in run])
    return [p for chain in checker.close() for p in chain.problems]


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
