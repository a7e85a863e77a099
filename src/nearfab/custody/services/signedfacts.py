"""The signed facts of a pack: what the QP's release put in the custody ledger.

A pack's row (`serial_units`: status, patient, GTIN, lot, expiry) can be changed by anyone who
can write to the database. What cannot be changed unnoticed is a ledger entry: its payload is
hashed into the entry hash and the hash is signed with the making site's Ed25519 key, whose
private half is sealed with the data folder's key (keys/custody_ledger.key), never stored in
the database in the clear. A public key in `custody_site_keys` is trusted only when its sealed
private half opens with that key and gives the same public key: a key row swapped in by SQL is
not trusted.

At release (`CustodyService.apply_disposition`) every pack's facts, the QP's decision and the
QP signature's own hashes go into one `release` entry per batch. At verification and dispense
`SignedFacts.check` compares the pack's row with that entry; any difference is an integrity
failure (docs/custody.md, docs/security.md).

Verified entries are cached by their recomputed entry hash together with the signature and
the key row (the content that was checked), so a scan costs one query, one SHA-256 of the
payload and a dictionary look-up; the Ed25519 check runs once per entry and process.

An entry appended in a block has no signature of its own: the next signed entry of its chain
covers it through the hash links. Walking that far is done once per block: when a walk ends at
a signature that verifies, every entry it passed is remembered as (site, seq, entry hash) ->
its cover, a fact that later changes to the table cannot undo (the hashes commit to the
content). An entry of the same block whose recomputed hash is the remembered one goes straight
to its cover's signature check; any other hash walks again."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import literal_column, select

from nearfab.custody.enums import LedgerKind
from nearfab.custody.logic.ledger import entry_hash
from nearfab.custody.logic.verify import SignatureFacts, SignedRelease, mismatch
from nearfab.custody.models import LedgerEntry, SerialUnit, SiteKey
from nearfab.custody.services.ledger import BLOCK, CustodyLedger
from nearfab.uow import UnitOfWork

_CACHE_SIZE = 20_000
# a release entry and its site key, as `SignedFacts.verify_rows` reads them
ENTRY_COLUMNS = (
    LedgerEntry.site_id,
    LedgerEntry.kind,
    LedgerEntry.ref,
    LedgerEntry.payload,
    LedgerEntry.prev_hash,
    LedgerEntry.entry_hash,
    LedgerEntry.key_id,
    LedgerEntry.signature,
    SiteKey.site_id,
    SiteKey.public_key,
    SiteKey.private_key_encrypted,
    LedgerEntry.seq,
)
# an entry appended in a block carries no signature of its own: the next signed entry of its
# chain covers it (its hash covers every entry before it); this many entries are followed,
# read this many at a time
_COVER_WALK = 4096
_COVER_PAGE = 300
# (site, seq, entry hash) of entries a verified signature covers: remembered per process
_COVERED_SIZE = 200_000

# (key_id, signature, the signed entry's hash, its key row (site, public, sealed))
Cover = tuple[str, str, str, tuple[Any, Any, Any]]


def release_entries_of(batch_id_column: Any) -> Any:
    """The join condition of a batch's release entries, for a query that has its batch id."""
    return LedgerEntry.ref == literal_column("'release:'").concat(batch_id_column)


def release_ref(batch_id: str) -> str:
    return f"release:{batch_id}"


def pack_facts(unit: SerialUnit) -> dict[str, str]:
    """The facts of a pack that a release binds (what a pharmacist relies on)."""
    return {
        "serial": unit.serial,
        "gtin": unit.gtin,
        "lot": unit.batch_number,
        "expiry": unit.expiry.isoformat(),
        "patient_id": unit.patient_id,
        "order_id": unit.order_id,
    }


class SignedFacts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (key_id, site_id, public key, sealed private key) -> the trusted public key
        self._keys: dict[tuple[str, str, bytes, bytes], Ed25519PublicKey | None] = {}
        # (entry hash, signature, key_id, entry site) -> the verified entry
        self._entries: OrderedDict[tuple[str, str, str, str], SignedRelease] = OrderedDict()
        # (site, seq, entry hash) of an unsigned entry -> the signed entry that covers it, for
        # entries passed by a walk that ended at a signature that verified
        self._covered: OrderedDict[tuple[str, int, str], Cover] = OrderedDict()

    # --- keys and entries ----------------------------------------------------------------------
    def _trusted_key(
        self, ledger: CustodyLedger, key_id: str, site_id: str, public: bytes, sealed: bytes
    ) -> Ed25519PublicKey | None:
        cache_key = (key_id, site_id, public, sealed)
        with self._lock:
            if cache_key in self._keys:
                return self._keys[cache_key]
        trusted: Ed25519PublicKey | None = None
        try:
            private = ledger.keyring.open(sealed)
            raw = private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            if raw == public:
                trusted = Ed25519PublicKey.from_public_bytes(public)
        except Exception:  # a key the data folder's key does not open is not ours
            trusted = None
        with self._lock:
            self._keys[cache_key] = trusted
        return trusted

    def releases(
        self, uow: UnitOfWork, ledger: CustodyLedger | None, batch_id: str
    ) -> tuple[list[SignedRelease], list[str]]:
        """The batch's release entries that verify, and why the others do not."""
        ref = release_ref(batch_id)
        rows = uow.session.execute(
            select(*ENTRY_COLUMNS)
            .outerjoin(SiteKey, SiteKey.key_id == LedgerEntry.key_id)
            .where(LedgerEntry.ref == ref)
        ).all()
        return self.verify_rows(uow, ledger, batch_id, rows)

    def verify_rows(
        self,
        uow: UnitOfWork,
        ledger: CustodyLedger | None,
        batch_id: str,
        rows: Sequence[Sequence[Any]],
    ) -> tuple[list[SignedRelease], list[str]]:
        """Like `releases`, on rows (`ENTRY_COLUMNS`) the caller read itself (verification
        reads them in the same query as the pack)."""
        if ledger is None:
            return [], ["no custody ledger is configured: nothing was signed"]
        ref = release_ref(batch_id)
        good: list[SignedRelease] = []
        bad: list[str] = []
        for row in rows:
            found = self._verified(uow, ledger, ref, row)
            if isinstance(found, str):
                bad.append(found)
            else:
                good.append(found)
        return good, bad

    def _verified(
        self, uow: UnitOfWork, ledger: CustodyLedger, ref: str, row: Any
    ) -> SignedRelease | str:
        (site_id, kind, row_ref, payload, prev, digest, key_id, signature) = row[:8]
        try:
            recomputed = entry_hash(str(prev), str(payload))
        except (UnicodeError, AttributeError):
            recomputed = ""
        if recomputed != digest:
            return f"ledger entry {ref} was changed after it was recorded"
        cache_key = (recomputed, str(signature), str(key_id), str(site_id))
        with self._lock:
            if cache_key in self._entries:
                self._entries.move_to_end(cache_key)
                return self._entries[cache_key]
        key_row: tuple[Any, Any, Any] = (row[8], row[9], row[10])
        signed_digest = recomputed
        walked: list[tuple[str, int, str]] = []
        if not signature:  # appended in a block: the next signed entry of the chain covers it
            at = (str(site_id), int(row[11]), recomputed)
            with self._lock:
                cover = self._covered.get(at)
            if cover is None:
                cover, walked = self._covering(uow, str(site_id), int(row[11]), recomputed)
            if cover is None:
                return f"ledger entry {ref}: no signed entry of its chain covers it"
            key_id, signature, signed_digest, key_row = cover
        result = self._check_entry(
            ledger,
            ref,
            site_id,
            kind,
            row_ref,
            payload,
            signed_digest,
            key_id,
            signature,
            key_row,
            recomputed,
        )
        if isinstance(result, SignedRelease):  # only what verified is remembered
            with self._lock:
                self._entries[cache_key] = result
                while len(self._entries) > _CACHE_SIZE:
                    self._entries.popitem(last=False)
                if walked:  # the cover's signature verified: so does every link walked to it
                    assert cover is not None
                    for at in walked:
                        self._covered[at] = cover
                    while len(self._covered) > _COVERED_SIZE:
                        self._covered.popitem(last=False)
        return result

    def _check_entry(
        self,
        ledger: CustodyLedger,
        ref: str,
        site_id: str,
        kind: str,
        row_ref: str,
        payload: str,
        digest: str,
        key_id: str,
        signature: str,
        key_row: tuple[Any, Any, Any],
        digest_of_entry: str,
    ) -> SignedRelease | str:
        key_site, public, sealed = key_row
        if key_site is None or key_site != site_id or public is None or sealed is None:
            return f"ledger entry {ref} names no key of its site"
        key = self._trusted_key(ledger, str(key_id), str(key_site), bytes(public), bytes(sealed))
        if key is None:
            return f"ledger entry {ref}: its site key is not one this installation sealed"
        try:
            key.verify(bytes.fromhex(str(signature)), bytes.fromhex(digest))
        except (InvalidSignature, ValueError):
            return f"ledger entry {ref} is not signed by its site's key"
        try:
            whole = json.loads(payload)
            body = whole["body"]
        except (ValueError, KeyError, TypeError):
            return f"ledger entry {ref} is not a release record"
        if (
            whole.get("kind") != LedgerKind.RELEASE.value
            or kind != LedgerKind.RELEASE.value
            or whole.get("ref") != ref
            or row_ref != ref
            or whole.get("site_id") != site_id
            or not isinstance(body, dict)
        ):
            return f"ledger entry {ref} is not a release record"
        # the signed facts of each pack as parsed (`mismatch` compares them as text)
        packs: dict[str, dict[str, Any]] = {}
        for item in body.get("packs") or []:
            if isinstance(item, dict) and isinstance(item.get("serial"), str):
                packs[item["serial"]] = item
        return SignedRelease(
            entry_hash=digest_of_entry,
            site_id=site_id,
            batch_id=str(body.get("batch_id")),
            decision=str(body.get("decision")),
            signature_id=body.get("signature_id"),
            signature_hash=body.get("signature_hash"),
            signed_record_hash=body.get("signed_record_hash"),
            packs=packs,
        )

    def _covering(
        self, uow: UnitOfWork, site_id: str, seq: int, digest: str
    ) -> tuple[Cover | None, list[tuple[str, int, str]]]:
        """The signed entry that covers an unsigned one (seq, digest) of a site's chain: the
        next signed entry, every link from it to the cover checked (seq, previous hash, own
        hash), read a page at a time until it is found. The read starts at the first entry of
        the entry's block (`BLOCK`: the entries after the last seq that `append_many` signs
        for certain), so that one walk vouches for the whole block, not only for the entries
        after the one scanned: every earlier entry whose links to this one hold unbroken is
        covered by the same signature (a broken link, a gap or a signed entry starts the run
        again from there). ((key_id, signature, its hash, its key row), the (site, seq, hash)
        of the unsigned entries covered), or (None, [])."""
        expected = seq - (seq - 1) % BLOCK if seq >= 1 else seq
        # the last entry read and accepted as a link (seq, hash), and the unsigned entries
        # linked unbroken from there: those the cover vouches for, once it is found
        tail: tuple[int, str] | None = None
        run: list[tuple[str, int, str]] = []
        found = False
        while expected <= seq + _COVER_WALK:
            rows = uow.session.execute(
                select(
                    LedgerEntry.seq,
                    LedgerEntry.prev_hash,
                    LedgerEntry.payload,
                    LedgerEntry.entry_hash,
                    LedgerEntry.key_id,
                    LedgerEntry.signature,
                    SiteKey.site_id,
                    SiteKey.public_key,
                    SiteKey.private_key_encrypted,
                )
                .outerjoin(SiteKey, SiteKey.key_id == LedgerEntry.key_id)
                .where(
                    LedgerEntry.site_id == site_id,
                    LedgerEntry.seq >= expected,
                    LedgerEntry.seq <= seq + _COVER_WALK,
                )
                .order_by(LedgerEntry.seq)
                .limit(_COVER_PAGE)
            ).all()
            if not rows:
                return None, []
            for r in rows:
                at = int(r[0])
                try:
                    own = entry_hash(str(r[1]), str(r[2])) == r[3]
                except (UnicodeError, AttributeError):
                    own = False
                linked = tail is not None and at == tail[0] + 1 and r[1] == tail[1]
                if at < seq:  # before the scanned entry: a run that may reach it
                    if not own:
                        tail, run = None, []
                    elif r[5]:  # signed: the entries before it are its own to cover
                        tail, run = (at, str(r[3])), []
                    else:
                        if not linked:
                            run = []
                        run.append((site_id, at, str(r[3])))
                        tail = (at, str(r[3]))
                    continue
                if at == seq:  # the scanned entry, as the caller read and hashed it
                    if r[3] != digest or not own:
                        return None, []
                    if not linked:
                        run = []
                    run.append((site_id, at, digest))
                    tail, found = (at, digest), True
                    continue
                if not found or not linked or not own:
                    return None, []  # after it, every link must hold (or a gap: refused)
                if r[5]:
                    return (str(r[4]), str(r[5]), str(r[3]), (r[6], r[7], r[8])), run
                run.append((site_id, at, str(r[3])))
                tail = (at, str(r[3]))
            expected = int(rows[-1][0]) + 1
        return None, []

    # --- the check at verification and dispense --------------------------------------------------
    def check(
        self,
        uow: UnitOfWork,
        ledger: CustodyLedger | None,
        unit: SerialUnit,
        signature: SignatureFacts,
        rows: Sequence[Sequence[Any]] | None = None,
    ) -> str | None:
        """None when the pack's row and the QP's decision match the signed release; else what
        differs (an integrity failure: never hand the pack over). `rows`: the batch's release
        entries (`ENTRY_COLUMNS`) when the caller read them already."""
        if rows is None:
            releases, problems = self.releases(uow, ledger, unit.batch_id)
        else:
            releases, problems = self.verify_rows(uow, ledger, unit.batch_id, rows)
        return mismatch(releases, problems, unit.batch_id, pack_facts(unit), signature)
