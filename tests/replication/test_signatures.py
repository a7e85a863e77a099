"""Ledger signatures checked where the records arrive (replication/signatures.py).

The entries are built here the way docs/custody.md defines them, with `cryptography` directly:
entry_hash = SHA-256(prev_hash + "\\n" + payload), signature = Ed25519 over the hash's bytes;
the node's own signing code is not used to make them. Then two real nodes: what a site signed
with a key the control does not hold is named, not trusted, and not anchored; once the control
holds the key (registered after the fact: test_node_keys.py), every signature verifies."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete, select
from tests.replication.test_replication_mqtt import nodes, register_site_keys, repl, some_work

from nearfab.bootstrap import App
from nearfab.custody import LedgerEntry
from nearfab.custody.models import SiteKey
from nearfab.identity import system_actor
from nearfab.replication.logic import Record
from nearfab.replication.models import InboxRecord
from nearfab.replication.signatures import KeyBook, verify_signatures

__all__ = ["nodes"]

SITE = "site_A"
GENESIS = "0" * 64


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Chain:
    """A site's ledger as records of one origin, signed as the test says."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.prev = GENESIS

    def add(
        self, key_id: str, key: Ed25519PrivateKey | None, kind: str = "epcis", body: object = None
    ) -> None:
        seq = len(self.records) + 1
        payload = json.dumps(  # the fields docs/custody.md lists for a ledger payload
            {
                "body": body or {"n": seq},
                "kind": kind,
                "recorded_at": "2026-12-07T00:00:00.000Z",
                "ref": f"r{seq}",
                "seq": seq,
                "site_id": SITE,
            }
        )
        digest = hashlib.sha256(f"{self.prev}\n{payload}".encode()).hexdigest()
        signature = key.sign(bytes.fromhex(digest)).hex() if key is not None else ""
        row = {
            "site_id": SITE,
            "seq": seq,
            "kind": kind,
            "ref": f"r{seq}",
            "payload": payload,
            "prev_hash": self.prev,
            "entry_hash": digest,
            "key_id": key_id,
            "signature": signature,
        }
        self.records.append(
            Record(
                id=f"{SITE}/ledger:{SITE}:{seq}",
                origin_site=SITE,
                seq=seq,
                kind="ledger",
                source_ref=f"ledger:{SITE}:{seq}",
                chain_hash=digest,
                prev_hash="",
                record_hash="",
                payload=json.dumps(row),
                created_at="2026-12-07T00:00:00+00:00",
            )
        )
        self.prev = digest


def test_valid_forged_unknown_and_rotated_keys() -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    book = KeyBook({"k1": (SITE, raw(k1))})
    chain = Chain()
    chain.add("k1", k1)
    chain.add("k1", k1)
    report = verify_signatures(chain.records, book)
    assert (report.verified, report.problems, report.unknown_keys) == (2, [], [])

    # an entry signed by another key than the one it names is not valid
    chain.add("k1", k2)
    assert verify_signatures(chain.records, KeyBook({"k1": (SITE, raw(k1))})).problems == [
        f"{SITE} seq 3 (ledger {SITE} seq 3): signature is not valid for key k1"
    ]

    # a key this node does not hold is named, its signatures unchecked (not trusted)
    chain = Chain()
    chain.add("k9", Ed25519PrivateKey.generate())
    report = verify_signatures(chain.records, KeyBook({}))
    assert (report.verified, report.problems, report.unknown_keys) == (0, [], ["k9"])

    # a rotation signed by k1 introduces k2: what k2 signs then verifies
    chain = Chain()
    chain.add("k1", k1)
    chain.add("k1", k1, "key", {"new_key_id": "k2", "public_key": raw(k2).hex()})
    chain.add("k2", k2)
    report = verify_signatures(chain.records, KeyBook({"k1": (SITE, raw(k1))}))
    assert (report.verified, report.problems, report.unknown_keys) == (3, [], [])

    # a rotation by a key nobody knows introduces nothing
    chain = Chain()
    chain.add(
        "k0", Ed25519PrivateKey.generate(), "key", {"new_key_id": "k2", "public_key": raw(k2).hex()}
    )
    chain.add("k2", k2)
    report = verify_signatures(chain.records, KeyBook({}))
    assert report.unknown_keys == ["k0", "k2"] and report.verified == 0

    # another site's key does not sign this site's entries
    chain = Chain()
    chain.add("k1", k1)
    assert verify_signatures(chain.records, KeyBook({"k1": ("site_B", raw(k1))})).problems


def test_a_block_is_covered_by_its_last_signed_entry_and_a_gap_in_coverage_is_named() -> None:
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    book = {"k1": (SITE, raw(k1)), "k2": (SITE, raw(k2))}
    chain = Chain()
    chain.add("k1", None)  # a block of three, signed at its end
    chain.add("k1", None)
    chain.add("k1", k1)
    report = verify_signatures(chain.records, KeyBook(book))
    assert (report.verified, report.problems) == (1, [])
    chain.add("k1", None)  # every call of the writer ends signed: an unsigned head is named
    assert verify_signatures(chain.records, KeyBook(book)).problems == [
        f"{SITE}: ledger {SITE} seq 4 is covered by no signature of key k1 (the signed entry "
        "ending its block is missing)"
    ]
    chain.add("k2", k2)  # k1's run ended unsigned: entry 4 is covered by nothing
    assert verify_signatures(chain.records, KeyBook(book)).problems == [
        f"{SITE}: ledger {SITE} seq 4 is covered by no signature of key k1 (the signed entry "
        "ending its block is missing)"
    ]


def test_the_control_names_a_site_key_it_lacks_and_verifies_once_it_holds_it(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    some_work(site, 3)  # ledger entries signed with the key the site made after the copy
    with site.uow() as uow:
        site_id = repl(site).site_id
        keys = list(uow.session.scalars(select(SiteKey).where(SiteKey.site_id == site_id)))
        signed = len(
            uow.session.scalars(
                select(LedgerEntry.id).where(
                    LedgerEntry.site_id == site_id, LedgerEntry.signature != ""
                )
            ).all()
        )
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
    with control.uow() as uow:
        repl(control).apply(uow, [r.to_message() for r in records])
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.unverified_keys == [k.key_id for k in keys] and status.signatures_verified == 0

    # not anchored while its signatures are unchecked
    with control.uow() as uow:
        refused = repl(control).anchor(uow, system_actor("replication"))["refused"]
    assert "signed by keys this node does not hold" in refused[site_id]

    # registered after the fact (`nearfab node keys export` at the site, `import` at the
    # control): the control holds the site's public keys and checks every signature
    assert register_site_keys(site, control) == [k.key_id for k in keys]
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.unverified_keys == [] and status.signatures_verified == signed

    # a record re-hashed after its signature was changed passes the record check, not this one
    ledger = [r for r in records if r.kind == "ledger"]
    row = json.loads(ledger[0].payload)
    row["signature"] = "00" * 64
    forged = replace(ledger[0], payload=json.dumps(row))
    book = KeyBook({k.key_id: (k.site_id, bytes(k.public_key)) for k in keys})
    named = verify_signatures([forged], book).problems
    assert named and "signature is not valid" in named[0]


def test_a_node_cannot_send_another_sites_entries_nor_take_over_a_key() -> None:
    """The review's attacks: origin A sends entries of B's chain; a rotation of A names B's key
    id to take it over; columns changed outside what the hash covers."""
    ka, kb = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    book = {"ka": (SITE, raw(ka)), "kb": ("site_B", raw(kb))}
    chain = Chain()
    chain.add("ka", ka)
    sent_as_b = [replace(chain.records[0], origin_site="site_B")]
    assert "another site's chain" in verify_signatures(sent_as_b, KeyBook(book)).problems[0]

    chain = Chain()
    chain.add("ka", ka, "key", {"new_key_id": "kb", "public_key": raw(ka).hex()})
    report = verify_signatures(chain.records, KeyBook(book))
    assert report.problems == [
        f"{SITE} seq 1 (ledger {SITE} seq 1): the rotation names key kb, already known"
    ]

    chain = Chain()
    chain.add("ka", ka)
    row = json.loads(chain.records[0].payload)
    row["kind"] = "release"  # the column, not the hashed payload
    moved = [replace(chain.records[0], payload=json.dumps(row))]
    assert "columns differ" in verify_signatures(moved, KeyBook(book)).problems[0]


def test_a_replaced_key_signs_nothing_after_its_rotation() -> None:
    """The review's nit: a leaked old key must not go on signing. And a rotation this node
    already holds (made before its copy) is consistent, not a takeover."""
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    chain = Chain()
    chain.add("k1", k1)
    chain.add("k1", k1, "key", {"new_key_id": "k2", "public_key": raw(k2).hex()})
    chain.add("k2", k2)
    chain.add("k1", k1)  # the old key again, after the rotation
    report = verify_signatures(chain.records, KeyBook({"k1": (SITE, raw(k1))}))
    assert report.problems == [
        f"{SITE} seq 4 (ledger {SITE} seq 4): key k1 was replaced at ledger seq 2 and signs "
        "nothing after it"
    ]
    assert report.verified == 3

    both = KeyBook({"k1": (SITE, raw(k1)), "k2": (SITE, raw(k2))})
    report = verify_signatures(chain.records[:3], both)
    assert (report.verified, report.problems) == (3, [])


def test_an_anchor_is_a_signed_entry_of_the_anchoring_nodes_chain_and_a_cut_tail_is_named(
    nodes: tuple[App, App],
) -> None:
    """docs/replication.md, "Anchoring": the control's anchor of an origin is also an entry
    of the control's own ledger chain (kind `replica_anchor`, ref `replica:<origin>:<seq>`)
    naming the last record's seq and hash, signed with the control's key; checked here with
    the public key from the control's own table and the `cryptography` library (Ed25519 over
    the entry hash's bytes, docs/custody.md). Records held before an anchor and removed after
    it (a cut tail: no gap shows, the chain still links) are named by `inbox status`."""
    site, control = nodes
    some_work(site, 3)
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
    with control.uow() as uow:
        repl(control).apply(uow, [r.to_message() for r in records])
    register_site_keys(site, control)
    origin, control_id = repl(site).site_id, repl(control).site_id
    with control.uow() as uow:
        body = repl(control).anchor(uow, system_actor("replication"))["anchored"][origin]
    with control.uow() as uow:
        (entry,) = uow.session.scalars(
            select(LedgerEntry).where(
                LedgerEntry.site_id == control_id, LedgerEntry.kind == "replica_anchor"
            )
        ).all()
        key = uow.session.get(SiteKey, entry.key_id)
        assert key is not None and key.site_id == control_id
        Ed25519PublicKey.from_public_bytes(bytes(key.public_key)).verify(
            bytes.fromhex(entry.signature), bytes.fromhex(entry.entry_hash)
        )  # raises InvalidSignature if not
        assert control.custody_chain.ledger.verify(uow).ok
    signed = json.loads(entry.payload)
    assert signed["ref"] == entry.ref == f"replica:{origin}:{len(records)}"
    assert signed["body"]["origin_site"] == origin
    assert (
        (signed["body"]["seq"], signed["body"]["record_hash"])
        == (
            records[-1].seq,
            records[-1].record_hash,
        )
        == (body["seq"], body["record_hash"])
    )

    with control.uow() as uow:  # the tail cut with SQL after the anchor
        uow.session.execute(
            delete(InboxRecord).where(
                InboxRecord.origin_site == origin, InboxRecord.seq >= records[-2].seq
            )
        )
        uow.commit()
    with control.uow() as uow:
        (status,) = [s for s in repl(control).inbox_status(uow) if s.origin_site == origin]
    assert status.gaps == [] and not status.ok
    assert any(
        f"seq {records[-1].seq}: anchored here on" in p and "no longer held" in p
        for p in status.chain_problems
    ), status.chain_problems
