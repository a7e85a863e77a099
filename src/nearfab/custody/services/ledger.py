"""The tamper-evident custody ledger: per-site hash chains signed with each site's Ed25519 key,
the control site anchoring every site's head in its own chain, key rotation, verification."""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import Connection, func, select

from nearfab.common.errors import NotFound, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.common.node import LEDGER_ANCHOR, NodeRole
from nearfab.custody.enums import LedgerKind
from nearfab.custody.logic.epcis import epcis_time
from nearfab.custody.logic.ledger import (
    GENESIS,
    STREAM_COLUMNS,
    ChainChecker,
    Problem,
    Row,
    entry_hash,
    payload_of,
    verify_anchors,
)
from nearfab.custody.models import EpcisEvent, LedgerEntry, SiteKey
from nearfab.identity import (
    Actor,
    AuditAction,
    audit,
    audit_keys,
    read_checkpoint_file,
    stored_checkpoints,
)
from nearfab.network.reads import control_site
from nearfab.network.reads import site as network_site
from nearfab.uow import UnitOfWork


class KeyRing:
    """Encrypts site private keys with the data folder's ledger key (keys/custody_ledger.key,
    mode 0600, like the patient-identity key): the database alone cannot sign."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self.fingerprint = hashlib.sha256(b"nearfab-fingerprint" + key).hexdigest()[:16]

    @classmethod
    def generate(cls) -> KeyRing:
        return cls(Fernet.generate_key())

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def seal(self, private: Ed25519PrivateKey) -> bytes:
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return self._fernet.encrypt(raw)

    def open(self, sealed: bytes) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self._fernet.decrypt(sealed))


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class AnchorSeen:
    """The control site's latest anchor of one site: where it is (`site_id`, `anchor_seq`
    in the control chain) and what it names (`seq`, `head`)."""

    site_id: str
    anchor_seq: int
    seq: int
    head: str
    recorded_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "control_site_id": self.site_id,
            "anchor_seq": self.anchor_seq,
            "seq": self.seq,
            "head": self.head,
            "recorded_at": self.recorded_at,
        }


@dataclass
class SiteChain:
    """One site's chain as checked, for people: entries, head, last anchor, its problems."""

    site_id: str
    entries: int
    head_seq: int
    head_hash: str
    last_anchor: AnchorSeen | None = None
    last_anchor_ok: bool | None = None  # None: never anchored
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "last_anchor": None if self.last_anchor is None else self.last_anchor.to_dict(),
            "last_anchor_ok": self.last_anchor_ok,
            "first_bad": None if self.first_bad is None else _problem_dict(self.first_bad),
        }


def _problem_dict(problem: Problem) -> dict[str, Any]:
    return {
        "site_id": problem.site_id,
        "seq": problem.seq,
        "entry_id": problem.entry_id,
        "reason": problem.reason,
        "text": problem.describe(),
    }


@dataclass
class LedgerReport:
    entries: int
    sites: int
    problems: list[Problem] = field(default_factory=list)
    chains: list[SiteChain] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def unchained(self) -> list[Problem]:
        """Problems that belong to no site's chain (custody events without an entry)."""
        ids = {c.site_id for c in self.chains}
        return [p for p in self.problems if p.site_id not in ids]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "sites": self.sites,
            "first_bad": None if self.first_bad is None else _problem_dict(self.first_bad),
            "problems": [p.describe() for p in self.problems],
            "chains": [c.to_dict() for c in self.chains],
        }


class Appended(NamedTuple):
    """An entry `append_many` added."""

    site_id: str
    seq: int
    kind: str
    ref: str
    entry_hash: str


BLOCK = 256  # append_many signs the last entry of every block of this many (and the last)


_INSERT_COLUMNS = (
    "site_id",
    "seq",
    "kind",
    "ref",
    "recorded_at",
    "payload",
    "prev_hash",
    "entry_hash",
    "key_id",
    "signature",
)


def _insert_sql(dialect: Any) -> str:
    marks = {"qmark": "?", "numeric": ":{}", "named": ":p{}"}.get(dialect.paramstyle, "%s")
    values = ", ".join(marks.format(i + 1) for i in range(len(_INSERT_COLUMNS)))
    table = LedgerEntry.__tablename__
    return f"INSERT INTO {table} ({', '.join(_INSERT_COLUMNS)}) VALUES ({values})"


def _bind_value(uow: UnitOfWork, column: Any, value: Any) -> Any:
    """`value` as the driver receives it for `column` (the type's bind processing, once)."""
    dialect = uow.session.get_bind().dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process is not None else value


class CustodyLedger:
    def __init__(self, keyring: KeyRing, node: NodeRole | None = None) -> None:
        self._keyring = keyring
        self._node = node or NodeRole()
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, tuple[str, Ed25519PublicKey]] = {}

    @property
    def keyring(self) -> KeyRing:
        """The data folder's key that seals the site keys (a public key is trusted only when
        the sealed private half opens with it: custody/services/signedfacts.py)."""
        return self._keyring

    # --- keys --------------------------------------------------------------------------------
    def _current_key(self, uow: UnitOfWork, site_id: str) -> SiteKey | None:
        # FOR UPDATE: appends to one site's chain queue behind each other (PostgreSQL)
        return uow.session.scalar(
            select(SiteKey)
            .where(SiteKey.site_id == site_id, SiteKey.retired_at.is_(None))
            .with_for_update()
        )

    def _new_key(self, uow: UnitOfWork, site_id: str) -> tuple[SiteKey, Ed25519PrivateKey]:
        private = Ed25519PrivateKey.generate()
        key = SiteKey(
            key_id=new_id("lk"),
            site_id=site_id,
            public_key=_raw_public(private),
            private_key_encrypted=self._keyring.seal(private),
            created_at=uow.clock.now(),
            retired_at=None,
        )
        uow.session.add(key)
        self._private[key.key_id] = private
        return key, private

    def _signing_key(self, uow: UnitOfWork, site_id: str) -> tuple[SiteKey, Ed25519PrivateKey]:
        key = self._current_key(uow, site_id)
        if key is None:
            return self._new_key(uow, site_id)
        private = self._private.get(key.key_id)
        if private is None:
            private = self._keyring.open(key.private_key_encrypted)
            self._private[key.key_id] = private
        return key, private

    def keep_private_keys_of(self, uow: UnitOfWork, actor: Actor, site_id: str | None) -> int:
        """Provisioning a node from the control's copy: erase the private half of every site
        key but `site_id`'s (None: every one; the control keeps public halves only), so a node
        can sign for no other site. Audited; returns how many were erased."""
        others = list(
            uow.session.scalars(
                select(SiteKey).where(
                    SiteKey.site_id != site_id if site_id is not None else SiteKey.key_id != "",
                    SiteKey.private_key_encrypted != b"",
                )
            )
        )
        for key in others:
            key.private_key_encrypted = b""
            self._private.pop(key.key_id, None)
        if others:
            audit(
                uow,
                actor,
                AuditAction.UPDATE,
                "ledger_key",
                site_id or "network",
                new={"private_halves_erased": sorted(k.key_id for k in others)},
                reason="a node keeps the private half of its own site's keys only",
                site_id=site_id,
            )
        uow.commit()
        return len(others)

    def rotate(self, uow: UnitOfWork, actor: Actor, site_id: str, *, reason: str) -> SiteKey:
        """A new signing key for the site; the old one is retired but kept for verification.
        The change is itself a ledger entry signed with the old key."""
        network_site(uow.session, site_id)  # NotFound naming site_id
        if not reason.strip():
            raise ValidationFailed("give the reason for rotating the key", field="reason")
        old = self._current_key(uow, site_id)
        new, _ = self._new_key(uow, site_id)
        uow.flush()
        if old is not None:
            self.append(
                uow,
                site_id,
                LedgerKind.KEY,
                new.key_id,
                {"new_key_id": new.key_id, "public_key": new.public_key.hex(), "reason": reason},
                key=old,
            )
            old.retired_at = uow.clock.now()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "ledger_key",
            new.key_id,
            new={"site_id": site_id, "retired": old.key_id if old else None},
            reason=reason,
            site_id=site_id,
        )
        uow.commit()
        return new

    # --- appending ---------------------------------------------------------------------------
    def head(self, uow: UnitOfWork, site_id: str) -> tuple[int, str]:
        row = uow.session.execute(
            select(LedgerEntry.seq, LedgerEntry.entry_hash)
            .where(LedgerEntry.site_id == site_id)
            .order_by(LedgerEntry.seq.desc())
            .limit(1)
        ).first()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def append(
        self,
        uow: UnitOfWork,
        site_id: str,
        kind: LedgerKind,
        ref: str,
        body: dict[str, Any],
        *,
        key: SiteKey | None = None,
    ) -> LedgerEntry:
        """Add one entry to the site's chain in the caller's transaction."""
        if key is None:
            key, private = self._signing_key(uow, site_id)
        else:
            private = self._private.get(key.key_id) or self._keyring.open(key.private_key_encrypted)
        seq, prev = self.head(uow, site_id)
        recorded = uow.clock.now()
        payload = payload_of(
            site_id=site_id,
            seq=seq + 1,
            kind=kind.value,
            ref=ref,
            recorded_at=epcis_time(recorded),
            body=body,
        )
        digest = entry_hash(prev, payload)
        entry = LedgerEntry(
            site_id=site_id,
            seq=seq + 1,
            kind=kind.value,
            ref=ref[:100],
            recorded_at=recorded,
            payload=payload,
            prev_hash=prev,
            entry_hash=digest,
            key_id=key.key_id,
            signature=private.sign(bytes.fromhex(digest)).hex(),
        )
        uow.session.add(entry)
        uow.flush()
        return entry

    def append_many(
        self,
        uow: UnitOfWork,
        site_id: str,
        items: Sequence[tuple[LedgerKind, str, dict[str, Any]]],
        *,
        block: int = BLOCK,
    ) -> list[Appended]:
        """Add entries (kind, ref, body) to the site's chain in the caller's transaction, in
        order: the same entries `append` would make one by one (each hashed over the one before
        it), with one key look-up, one head look-up and one multi-row INSERT, and one Ed25519
        signature per block: the last entry of every `block` entries (and the last of the
        call) is signed (`block=1`: every entry); its hash covers every entry before it through
        the chain, so the block is signed as a whole. The others carry an empty signature,
        "covered by the next signed entry"; `verify` names an entry that no signed entry of its
        key covers (docs/audit-trail.md, the ledger's tail)."""
        if not items:
            return []
        key, private = self._signing_key(uow, site_id)
        uow.flush()  # a new key row before the entries that name it
        seq, prev = self.head(uow, site_id)
        recorded = uow.clock.now()
        stamp = epcis_time(recorded)
        rows: list[tuple[Any, ...]] = []
        made: list[Appended] = []
        when = _bind_value(uow, LedgerEntry.__table__.c.recorded_at, recorded)
        sha256 = hashlib.sha256
        key_id, last = key.key_id, len(items) - 1
        for index, (kind, ref, body) in enumerate(items):
            seq += 1
            payload = payload_of(
                site_id=site_id, seq=seq, kind=kind.value, ref=ref, recorded_at=stamp, body=body
            )
            raw = sha256((prev + "\n" + payload).encode("utf-8")).digest()
            digest = raw.hex()
            # the block's last entry signs the block (its hash covers the entries before it)
            signed = index == last or seq % block == 0
            signature = private.sign(raw).hex() if signed else ""
            short = ref[:100]
            rows.append(
                (site_id, seq, kind.value, short, when, payload, prev, digest, key_id, signature)
            )
            made.append(Appended(site_id, seq, kind.value, short, digest))
            prev = digest
        # one driver-level executemany of ready-made tuples (the ORM's bulk insert builds
        # and processes a parameter dict per row: half the time of an append)
        connection = uow.session.connection()
        connection.exec_driver_sql(_insert_sql(connection.dialect), rows)
        return made

    def anchor(self, uow: UnitOfWork, actor: Actor) -> list[LedgerEntry]:
        """The control site records every other site's current head in its own chain (only heads
        that moved since the last anchor). Run periodically (the runner's sweep). Refused at a
        site node (`control_site_only`): the control's chain is the control node's to write;
        it anchors a site node's chains as they arrive (replication's `inbox anchor`)."""
        self._node.require_control(LEDGER_ANCHOR)
        control = control_site(uow.session)
        if control is None:
            raise NotFound("the network has no control site", field="site_id")
        anchored: dict[str, int] = {}
        for row in uow.session.scalars(
            select(LedgerEntry.payload).where(
                LedgerEntry.site_id == control.id, LedgerEntry.kind == LedgerKind.ANCHOR.value
            )
        ):
            body = json.loads(row)["body"]
            anchored[body["site_id"]] = max(anchored.get(body["site_id"], 0), body["seq"])
        site_ids = uow.session.scalars(
            select(LedgerEntry.site_id).where(LedgerEntry.site_id != control.id).distinct()
        ).all()
        made = []
        for site_id in sorted(site_ids):
            seq, head = self.head(uow, site_id)
            if seq and anchored.get(site_id, 0) < seq:
                made.append(
                    self.append(
                        uow,
                        control.id,
                        LedgerKind.ANCHOR,
                        f"{site_id}:{seq}",
                        {"site_id": site_id, "seq": seq, "head": head},
                    )
                )
        if made:
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "ledger_anchor",
                control.id,
                new={"anchored": [e.ref for e in made]},
                site_id=control.id,
            )
        uow.commit()
        return made

    # --- audit checkpoints (docs/audit-trail.md) ---------------------------------------------
    def heads(self, connection: Connection) -> dict[str, list[Any]]:
        """Every site's chain head, site -> [seq, entry_hash, kind]: what each audit checkpoint
        signs (seq and hash), so a tail cut off after it is named by `verify` (and by an
        exported checkpoint file)."""
        last = (
            select(LedgerEntry.site_id, func.max(LedgerEntry.seq).label("seq"))
            .group_by(LedgerEntry.site_id)
            .subquery()
        )
        rows = connection.execute(
            select(
                LedgerEntry.site_id, LedgerEntry.seq, LedgerEntry.entry_hash, LedgerEntry.kind
            ).join(last, (LedgerEntry.site_id == last.c.site_id) & (LedgerEntry.seq == last.c.seq))
        )
        return {str(r[0]): [int(r[1]), str(r[2]), str(r[3])] for r in rows}

    def audit_checkpoints(self, connection: Connection) -> list[tuple[dict[str, Any], str]]:
        """The audit checkpoints recorded in the control site's chain: (body, signature)."""
        found: list[tuple[dict[str, Any], str]] = []
        for payload in connection.execute(
            # ref "audit:<seq>": a range on the ref index, not a scan of the ledger
            select(LedgerEntry.payload).where(
                LedgerEntry.ref >= "audit:",
                LedgerEntry.ref < "audit;",
                LedgerEntry.kind == LedgerKind.AUDIT_CHECKPOINT.value,
            )
        ).scalars():
            try:
                body = json.loads(payload)["body"]
                found.append((dict(body["checkpoint"]), str(body["signature"])))
            except (ValueError, KeyError, TypeError):
                continue  # a damaged entry: named by verify-ledger
        return found

    def record_audit_checkpoint(
        self, uow: UnitOfWork, body: dict[str, Any], signature: str
    ) -> None:
        """The checkpoint as an entry of the control site's chain (no control site yet: none); at
        a site node, of the node's own site's chain, which travels to the control with the rest
        of its ledger (the control's chain is not the site node's to write)."""
        if self._node.site_node and self._node.site_id is not None:
            chain = self._node.site_id
        else:
            found = control_site(uow.session)
            if found is None:
                return
            chain = found.id
        self.append(
            uow,
            chain,
            LedgerKind.AUDIT_CHECKPOINT,
            f"audit:{body['seq']}",
            {"checkpoint": body, "signature": signature},
        )

    # --- verification ------------------------------------------------------------------------
    def _check_signature(self, uow: UnitOfWork) -> Any:
        keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for key in uow.session.scalars(select(SiteKey)):
            keys[key.key_id] = (key.site_id, Ed25519PublicKey.from_public_bytes(key.public_key))

        def check(key_id: str, site_id: str, digest: str, signature: str) -> bool:
            found = keys.get(key_id)
            if found is None or found[0] != site_id:
                return False
            try:
                found[1].verify(bytes.fromhex(signature), bytes.fromhex(digest))
            except (InvalidSignature, ValueError):
                return False
            return True

        return check

    def verify(
        self,
        uow: UnitOfWork,
        *,
        all_signatures: bool = True,
        against: dict[str, Any] | None = None,
    ) -> LedgerReport:
        """Check every chain, every signature, every anchor, and that every custody event made
        here has its entry; every site's head as the last signed audit checkpoint recorded it
        (and as the exported checkpoint file `against` recorded it) must still be there with
        that hash: a cut-off tail is named. Problems come first-bad-first (by site, then seq).

        Each site's chain streams from the database in seq order (`_stream`: the driver's own
        tuples of the columns the check needs, the site given once per chain) through
        `ChainChecker` (hashlib on each row; the JSON is parsed only for a row that fails the
        fast check); only the hashes of anchored entries are kept."""
        check = self._check_signature(uow)
        connection = uow.session.connection()
        # the ledger heads the last signed checkpoint (and the exported file) recorded
        recorded: list[tuple[str, dict[str, list[Any]]]] = []
        keys = audit_keys(connection)
        signed, _bad = stored_checkpoints(connection, keys)
        if signed:
            last = max(signed, key=lambda c: (c.seq, c.id or 0))
            recorded.append((f"audit checkpoint #{last.id} of {last.at}", last.ledger))
        if against is not None:
            exported = read_checkpoint_file(against, keys)
            recorded.append(
                (f"exported checkpoint of {exported.checkpoint.at}", exported.checkpoint.ledger)
            )
        keep: dict[str, set[int]] = defaultdict(set)
        for _source, heads in recorded:
            for site, (seq, _hash) in heads.items():
                keep[site].add(int(seq))

        def fetch_signature(entry_id: int) -> str:
            found = connection.execute(
                select(LedgerEntry.signature).where(LedgerEntry.id == entry_id)
            ).scalar()
            return "" if found is None else str(found)

        # the anchors (entries of kind anchor, in whichever chain) are collected on the way
        checker = ChainChecker(
            check,
            all_signatures=all_signatures,
            keep=keep,
            fetch_signature=fetch_signature,
            collect=(LedgerKind.ANCHOR.value,),
        )
        sql = _chain_sql(connection, all_signatures=all_signatures)
        for site_id in _ledger_sites(connection):
            for part in _stream(connection, sql, site_id):
                checker.feed(site_id, part)
        chains = sorted(checker.close(), key=lambda c: c.site_id)
        anchors = checker.collected  # in (site, seq) order
        anchored: dict[str, set[int]] = defaultdict(set)
        last_anchor: dict[str, AnchorSeen] = {}
        for anchor in anchors:
            body = _anchor_body(anchor)
            named, at = body.get("site_id"), body.get("seq")
            if isinstance(named, str) and isinstance(at, int):
                anchored[named].add(at)
                seen = last_anchor.get(named)
                if seen is None or (anchor.site_id, anchor.seq) > (seen.site_id, seen.anchor_seq):
                    last_anchor[named] = AnchorSeen(
                        site_id=anchor.site_id,
                        anchor_seq=anchor.seq,
                        seq=at,
                        head=str(body.get("head")),
                        recorded_at=str(json.loads(anchor.payload).get("recorded_at", "")),
                    )
        _fill_kept(connection, checker.kept, anchored)
        problems = [p for c in chains for p in c.problems]
        problems.extend(verify_anchors(anchors, checker.kept))
        problems.extend(_against_recorded_heads(recorded, chains, checker.kept))
        unchained = (
            select(EpcisEvent.event_hash)
            .where(EpcisEvent.source == "nearfab")
            .where(
                ~select(LedgerEntry.id)
                .where(LedgerEntry.ref == func.substr(EpcisEvent.event_hash, 1, 100))
                .exists()
            )
        )
        for event_hash in uow.session.scalars(unchained):
            problems.append(
                Problem("?", 0, None, f"custody event {event_hash} has no ledger entry")
            )
        sites = []
        for chain in chains:
            seen = last_anchor.get(chain.site_id)
            anchor_ok = None
            if seen is not None:
                anchor_ok = checker.kept.get(chain.site_id, {}).get(seen.seq) == seen.head
            own = [p for p in problems if p.site_id == chain.site_id]
            sites.append(
                SiteChain(
                    site_id=chain.site_id,
                    entries=chain.entries,
                    head_seq=chain.head_seq,
                    head_hash=chain.head_hash,
                    last_anchor=seen,
                    last_anchor_ok=anchor_ok,
                    problems=own,
                )
            )
        return LedgerReport(
            entries=checker.entries, sites=len(chains), problems=problems, chains=sites
        )


def _chain_sql(connection: Connection, *, all_signatures: bool) -> str:
    """One site's chain in seq order, the columns `ChainChecker.feed` takes (STREAM_COLUMNS).
    The signature of every row only when every signature is checked (NULLIF: an entry of a
    block carries none, read as None, which costs nothing); otherwise NULL, and the few
    signatures checked are fetched by id (reading the column for every row costs as much as
    the rest of the row)."""
    table = LedgerEntry.__table__
    columns = [table.c[name].name for name in STREAM_COLUMNS[:-1]]
    signature = "NULLIF(signature, '')" if all_signatures else "NULL"
    mark = {"qmark": "?", "numeric": ":1", "named": ":site_id"}.get(
        connection.dialect.paramstyle, "%s"
    )
    return (
        f"SELECT {', '.join(columns)}, {signature} FROM {LedgerEntry.__tablename__} "
        f"WHERE site_id = {mark} ORDER BY seq"
    )


def _ledger_sites(connection: Connection) -> Iterator[str]:
    """The sites that have ledger entries, in order: one index seek each (the (site_id, seq)
    unique index), not a scan of the ledger."""
    after: str | None = None
    while True:
        query = select(LedgerEntry.site_id).order_by(LedgerEntry.site_id).limit(1)
        if after is not None:
            query = query.where(LedgerEntry.site_id > after)
        found = connection.execute(query).scalar()
        if found is None:
            return
        yield str(found)
        after = str(found)


def _stream(
    connection: Connection, sql: str, site_id: str, size: int | None = None
) -> Iterator[Sequence[Any]]:
    """The rows of `sql` for one site, `size` at a time, as the driver's own tuples, in the
    connection's transaction: SQLAlchemy's row objects cost twice the driver's fetch.
    PostgreSQL streams through a server-side cursor, 2,000 rows a round trip; SQLite's cursor
    streams as it is, 500 at a time (rows checked while still in the CPU's cache: less CPU per
    entry than 5,000 at a time)."""
    dbapi = connection.connection.dbapi_connection
    if dbapi is None:  # pragma: no cover - a detached connection
        raise RuntimeError("no database connection")
    postgres = connection.dialect.name == "postgresql"
    size = size or (2000 if postgres else 500)
    cursor = dbapi.cursor(name="nearfab_ledger_verify") if postgres else dbapi.cursor()
    params: Any = {"site_id": site_id} if connection.dialect.paramstyle == "named" else (site_id,)
    try:
        cursor.execute(sql, params)
        while part := cursor.fetchmany(size):
            yield part
    finally:
        cursor.close()


def _fill_kept(
    connection: Connection, kept: dict[str, dict[int, str]], wanted: dict[str, set[int]]
) -> None:
    """Add the hashes of the entries (site -> seqs) not in `kept` yet, as they are stored (one
    index look-up each, 500 to a query)."""
    for site, seqs in sorted(wanted.items()):
        have = kept.setdefault(site, {})
        missing = sorted(seqs - have.keys())
        for start in range(0, len(missing), 500):
            rows = connection.execute(
                select(LedgerEntry.seq, LedgerEntry.entry_hash)
                .where(
                    LedgerEntry.site_id == site,
                    LedgerEntry.seq.in_(missing[start : start + 500]),
                )
                .order_by(LedgerEntry.seq, LedgerEntry.id)
            )
            for seq, digest in rows:
                have[int(seq)] = str(digest)


def _anchor_body(anchor: Row) -> dict[str, Any]:
    try:
        body = json.loads(anchor.payload).get("body", {})
    except (ValueError, AttributeError):
        return {}
    return body if isinstance(body, dict) else {}


def _against_recorded_heads(
    recorded: Sequence[tuple[str, dict[str, list[Any]]]],
    chains: Sequence[Any],
    kept: dict[str, dict[int, str]],
) -> list[Problem]:
    """Each site head a signed checkpoint (or an exported file) recorded must still be there
    with its hash: a missing one means the chain's tail was cut off after it."""
    problems: list[Problem] = []
    last_seq = {c.site_id: c.head_seq for c in chains}
    for source, heads in recorded:
        for site, (seq, digest) in sorted(heads.items()):
            seq = int(seq)
            found = kept.get(site, {}).get(seq)
            if found is None:
                have = last_seq.get(site, 0)
                missing = f"entry {seq}" if seq == have + 1 else f"entries {have + 1}..{seq}"
                problems.append(
                    Problem(
                        site,
                        seq,
                        None,
                        f"{missing} missing: the tail after seq {have} was cut off (the {source} "
                        f"recorded this chain up to seq {seq})",
                    )
                )
            elif found != digest:
                problems.append(
                    Problem(site, seq, None, f"differs from the hash the {source} recorded for it")
                )
    return problems
