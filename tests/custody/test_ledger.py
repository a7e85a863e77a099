"""The tamper-evident custody ledger on SQLite and PostgreSQL: every custody event and release
decision chained per site and signed; edits, deletions, insertions and reorderings made directly
in the database are found and the first bad entry is named; keys are sealed and rotate."""

from __future__ import annotations

import itertools
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.custody import CustodyChain, KeyRing, LedgerEntry, SiteKey
from nearfab.custody.logic.ledger import entry_hash

seeded = fh.seeded


@pytest.fixture
def made(seeded: App) -> tuple[App, CustodyChain]:
    """Two batches made, released and one pack dispensed, with the control site anchoring."""
    chain = ch.chain(seeded)
    _, first = ch.released_batch(seeded)
    ch.released_batch(seeded)
    ch.dispense(seeded, first[0])
    return seeded, chain


def _entries(app: App, site_id: str | None = None) -> list[LedgerEntry]:
    with app.uow() as uow:
        stmt = select(LedgerEntry).order_by(LedgerEntry.site_id, LedgerEntry.seq)
        if site_id:
            stmt = stmt.where(LedgerEntry.site_id == site_id)
        rows = list(uow.session.scalars(stmt))
        for r in rows:
            uow.session.expunge(r)
        return rows


def _verify(app: App, chain: CustodyChain, **kw: bool):  # type: ignore[no-untyped-def]
    with app.uow() as uow:
        return chain.ledger.verify(uow, **kw)


def _site_chain(app: App) -> list[LedgerEntry]:
    """The longest site chain (the making site's)."""
    rows = _entries(app)
    by_site: dict[str, list[LedgerEntry]] = {}
    for r in rows:
        by_site.setdefault(r.site_id, []).append(r)
    return max(by_site.values(), key=len)


def _tampered(payload: str) -> str:
    data = json.loads(payload)
    data["body"]["tampered"] = True
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _sql(app: App, stmt) -> None:  # type: ignore[no-untyped-def]
    with app.engine.begin() as conn:
        conn.execute(stmt)


def test_custody_events_and_release_decisions_are_chained_and_signed(
    made: tuple[App, CustodyChain],
) -> None:
    app, chain = made
    rows = _site_chain(app)
    kinds = [r.kind for r in rows]
    assert kinds.count("release") == 2
    assert kinds.count("epcis") >= 7  # 2 x (transformation, commissioning, release) + dispense
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    for prev, row in itertools.pairwise(rows):
        assert row.prev_hash == prev.entry_hash
        assert entry_hash(row.prev_hash, row.payload) == row.entry_hash
    body = json.loads(rows[0].payload)["body"]
    assert body["type"] == "TransformationEvent"
    report = _verify(app, chain, all_signatures=True)
    assert report.ok, report.problems
    assert report.entries == len(_entries(app))


def test_an_edited_entry_is_named(made: tuple[App, CustodyChain]) -> None:
    app, chain = made
    rows = _site_chain(app)
    victim = rows[2]
    _sql(
        app,
        update(LedgerEntry)
        .where(LedgerEntry.id == victim.id)
        .values(payload=_tampered(victim.payload)),
    )
    report = _verify(app, chain)
    assert not report.ok
    assert report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.entry_id) == (victim.seq, victim.id)
    assert "changed" in report.first_bad.reason


def test_an_edit_with_recomputed_hashes_fails_on_the_signature(
    made: tuple[App, CustodyChain],
) -> None:
    """Rewriting the chain from the edit onward keeps the hash links, but nobody without the
    site's key can sign the rewritten entries."""
    app, chain = made
    rows = _site_chain(app)
    prev = rows[1].entry_hash
    for row in rows[2:]:
        payload = row.payload if row is not rows[2] else _tampered(row.payload)
        digest = entry_hash(prev, payload)
        _sql(
            app,
            update(LedgerEntry)
            .where(LedgerEntry.id == row.id)
            .values(payload=payload, prev_hash=prev, entry_hash=digest),
        )
        prev = digest
    report = _verify(app, chain)
    assert not report.ok
    assert "signature" in report.first_bad.reason  # type: ignore[union-attr]
    full = _verify(app, chain, all_signatures=True)
    assert full.first_bad is not None and full.first_bad.seq == rows[2].seq


def test_a_deleted_entry_is_named(made: tuple[App, CustodyChain]) -> None:
    app, chain = made
    rows = _site_chain(app)
    _sql(app, LedgerEntry.__table__.delete().where(LedgerEntry.id == rows[3].id))
    report = _verify(app, chain)
    assert report.first_bad is not None
    assert report.first_bad.seq == rows[4].seq
    assert "missing" in report.first_bad.reason


def test_a_deleted_last_entry_is_found_by_the_anchor_and_the_events(
    made: tuple[App, CustodyChain],
) -> None:
    app, chain = made
    with app.uow() as uow:
        anchors = chain.ledger.anchor(uow, fh.actor(app, "qp"))
    assert anchors
    rows = _site_chain(app)
    _sql(app, LedgerEntry.__table__.delete().where(LedgerEntry.id == rows[-1].id))
    report = _verify(app, chain)
    assert not report.ok
    assert any("anchored" in p.reason for p in report.problems)
    assert any("no ledger entry" in p.reason for p in report.problems)


def test_an_inserted_entry_is_named(made: tuple[App, CustodyChain]) -> None:
    """A forged entry appended with a correct hash link but another key's signature."""
    app, chain = made
    rows = _site_chain(app)
    head = rows[-1]
    payload = head.payload.replace(f'"seq":{head.seq}', f'"seq":{head.seq + 1}')
    digest = entry_hash(head.entry_hash, payload)
    forged = Ed25519PrivateKey.generate().sign(bytes.fromhex(digest)).hex()
    _sql(
        app,
        LedgerEntry.__table__.insert().values(
            site_id=head.site_id,
            seq=head.seq + 1,
            kind=head.kind,
            ref=head.ref,
            recorded_at=head.recorded_at,
            payload=payload,
            prev_hash=head.entry_hash,
            entry_hash=digest,
            key_id=head.key_id,
            signature=forged,
        ),
    )
    report = _verify(app, chain)
    assert report.first_bad is not None
    assert report.first_bad.seq == head.seq + 1
    assert "signature" in report.first_bad.reason


def test_an_entry_inserted_in_the_middle_is_named(made: tuple[App, CustodyChain]) -> None:
    app, chain = made
    rows = _site_chain(app)
    # make room at seq 3 by shifting the later entries up (what an inserter has to do)
    for row in reversed(rows[2:]):
        _sql(app, update(LedgerEntry).where(LedgerEntry.id == row.id).values(seq=row.seq + 1))
    copy = rows[1]
    _sql(
        app,
        LedgerEntry.__table__.insert().values(
            site_id=copy.site_id,
            seq=3,
            kind=copy.kind,
            ref=copy.ref,
            recorded_at=copy.recorded_at,
            payload=copy.payload,
            prev_hash=copy.prev_hash,
            entry_hash=copy.entry_hash,
            key_id=copy.key_id,
            signature=copy.signature,
        ),
    )
    report = _verify(app, chain)
    assert report.first_bad is not None and report.first_bad.seq == 3


def test_reordered_entries_are_named(made: tuple[App, CustodyChain]) -> None:
    app, chain = made
    rows = _site_chain(app)
    a, b = rows[2], rows[3]
    _sql(app, update(LedgerEntry).where(LedgerEntry.id == a.id).values(seq=-1))
    _sql(app, update(LedgerEntry).where(LedgerEntry.id == b.id).values(seq=a.seq))
    _sql(app, update(LedgerEntry).where(LedgerEntry.id == a.id).values(seq=b.seq))
    report = _verify(app, chain)
    assert report.first_bad is not None
    assert report.first_bad.seq == a.seq
    assert report.first_bad.entry_id == b.id


def test_keys_are_sealed_and_rotate_keeping_old_signatures_valid(
    made: tuple[App, CustodyChain],
) -> None:
    app, chain = made
    site_id = _site_chain(app)[0].site_id
    with app.uow() as uow:
        key = uow.session.scalars(select(SiteKey).where(SiteKey.site_id == site_id)).one()
        sealed = key.private_key_encrypted
        public = key.public_key
    assert public not in sealed and len(sealed) > 64
    other = KeyRing.generate()
    with pytest.raises(Exception):  # noqa: B017 - any decryption failure
        other.open(sealed)
    with app.uow() as uow:
        new = chain.ledger.rotate(uow, fh.actor(app, "admin"), site_id, reason="yearly rotation")
    ch.released_batch(app)  # signed with the new key
    with app.uow() as uow:
        keys = list(uow.session.scalars(select(SiteKey).where(SiteKey.site_id == site_id)))
    assert {k.key_id for k in keys} == {key.key_id, new.key_id}
    assert [k.retired_at is not None for k in keys if k.key_id == key.key_id] == [True]
    rows = _site_chain(app)
    assert {r.key_id for r in rows} == {key.key_id, new.key_id}
    assert rows[-1].key_id == new.key_id
    assert any(r.kind == "key" and r.key_id == key.key_id for r in rows)
    assert _verify(app, chain, all_signatures=True).ok
    with app.uow() as uow, pytest.raises(Exception, match="reason"):
        chain.ledger.rotate(uow, fh.actor(app, "admin"), site_id, reason=" ")
