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


def _made(app: App) -> None:
    """Two batches made, released and one pack dispensed, with the control site anchoring."""
    ch.chain(app)
    _, first = ch.released_batch(app)
    ch.released_batch(app)
    ch.dispense(app, first[0])


made_world = fh.world_fixture(_made)  # made once per backend and worker, copied per test


@pytest.fixture
def made(made_world: fh.Built) -> tuple[App, CustodyChain]:
    return made_world.app, ch.chain(made_world.app)


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


def test_columns_changed_beside_an_intact_payload_are_named(
    made: tuple[App, CustodyChain],
) -> None:
    """The payload and its hash untouched, but the row's columns say something else: read
    off the payload's end in the fast check, so it must still be caught there."""
    app, chain = made
    rows = _site_chain(app)
    for column, value in (("ref", "release:someone-else"), ("kind", "anchor")):
        victim = rows[2]
        _sql(app, update(LedgerEntry).where(LedgerEntry.id == victim.id).values({column: value}))
        report = _verify(app, chain)
        assert report.first_bad is not None
        assert (report.first_bad.seq, report.first_bad.entry_id) == (victim.seq, victim.id)
        assert "columns differ" in report.first_bad.reason
        _sql(
            app,
            update(LedgerEntry)
            .where(LedgerEntry.id == victim.id)
            .values({column: getattr(victim, column)}),
        )
    assert _verify(app, chain, all_signatures=True).ok


def test_the_report_gives_each_site_its_entries_head_and_last_anchor(
    made: tuple[App, CustodyChain],
) -> None:
    app, chain = made
    with app.uow() as uow:
        chain.ledger.anchor(uow, fh.actor(app, "qp"))
    report = _verify(app, chain)
    rows = _site_chain(app)
    site = next(c for c in report.chains if c.site_id == rows[0].site_id)
    assert (site.entries, site.head_seq, site.head_hash) == (
        len(rows),
        rows[-1].seq,
        rows[-1].entry_hash,
    )
    assert site.last_anchor is not None and site.last_anchor.seq == rows[-1].seq
    assert site.last_anchor.head == rows[-1].entry_hash and site.last_anchor_ok is True
    assert sum(c.entries for c in report.chains) == report.entries
    as_json = report.to_dict()
    assert {c["site_id"] for c in as_json["chains"]} == {c.site_id for c in report.chains}
    victim = rows[1]
    _sql(
        app,
        update(LedgerEntry)
        .where(LedgerEntry.id == victim.id)
        .values(payload=_tampered(victim.payload)),
    )
    broken = next(c for c in _verify(app, chain).chains if c.site_id == victim.site_id)
    assert broken.first_bad is not None and broken.first_bad.entry_id == victim.id
    assert all(c.ok for c in _verify(app, chain).chains if c.site_id != victim.site_id)


def test_entries_appended_in_a_batch_are_each_chained_and_signed_per_block(seeded: App) -> None:
    """`append_many` (capture, benchmarks): one INSERT; each entry exactly what `append` would
    have made (hashed over the one before), and one Ed25519 signature per block of 256
    entries: the entry whose seq is a multiple of 256, and the batch's last; the others carry
    none (their hash is covered by that signed entry's through the chain)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from nearfab.custody.enums import LedgerKind

    chain = ch.chain(seeded)
    site_id = _any_site(seeded)
    items = [(LedgerKind.EPCIS, f"bulk-{i}", {"n": i, "text": 'é\u2028"x'}) for i in range(300)]
    with seeded.uow() as uow:
        chain.ledger.append(uow, site_id, LedgerKind.EPCIS, "single-1", {"n": -1})
        made = chain.ledger.append_many(uow, site_id, items)
        chain.ledger.append(uow, site_id, LedgerKind.EPCIS, "single-2", {"n": -2})
        uow.commit()
    assert [m.seq for m in made] == list(range(2, 302))
    rows = _entries(seeded, site_id)
    assert [r.seq for r in rows] == list(range(1, 303))
    with seeded.uow() as uow:
        key = uow.session.scalars(select(SiteKey).where(SiteKey.site_id == site_id)).one()
        public = Ed25519PublicKey.from_public_bytes(key.public_key)
    # single appends (1, 302), the block end (256) and the batch's last (301)
    signed = {1, 256, 301, 302}
    assert {r.seq for r in rows if r.signature} == signed
    for row in rows:
        if row.seq in signed:
            public.verify(bytes.fromhex(row.signature), bytes.fromhex(row.entry_hash))
    for prev, row in itertools.pairwise(rows):
        assert row.prev_hash == prev.entry_hash
        assert entry_hash(row.prev_hash, row.payload) == row.entry_hash
        body = json.loads(row.payload)
        assert (body["seq"], body["ref"], body["site_id"]) == (row.seq, row.ref, site_id)
        assert row.recorded_at.tzinfo is not None
    assert json.loads(rows[5].payload)["body"] == {"n": 4, "text": 'é\u2028"x'}
    assert _verify(seeded, chain, all_signatures=True).ok


@pytest.mark.parametrize("all_signatures", [False, True])
def test_a_block_whose_signed_end_was_deleted_is_named(seeded: App, all_signatures: bool) -> None:
    """Delete the signed last entry of a block (raw SQL): the entries before it are covered by
    no signature any more, and verify names the first of them that must be."""
    from nearfab.custody.enums import LedgerKind

    chain = ch.chain(seeded)
    site_id = _any_site(seeded)
    before = len(_entries(seeded, site_id))
    items = [(LedgerKind.EPCIS, f"blk-{i}", {"n": i}) for i in range(10)]
    with seeded.uow() as uow:
        chain.ledger.append_many(uow, site_id, items)
        uow.commit()
    assert _verify(seeded, chain, all_signatures=all_signatures).ok
    rows = _entries(seeded, site_id)
    assert len(rows) == before + 10 and rows[-1].signature and not rows[-2].signature
    _sql(seeded, LedgerEntry.__table__.delete().where(LedgerEntry.id == rows[-1].id))
    report = _verify(seeded, chain, all_signatures=all_signatures)
    assert not report.ok
    mine = [p for p in report.problems if p.site_id == site_id]
    # every earlier write ended with a signed entry: the unsigned run is the batch's first nine
    assert before == 0 or rows[before - 1].signature
    # checking every signature: the run's first entry is named; otherwise the chain's last
    expected = rows[before].seq if all_signatures else rows[-2].seq
    named = [p.seq for p in mine if "no signature covers it" in p.reason]
    assert named == [expected], report.problems


def test_a_chain_longer_than_one_fetch_is_checked_across_fetches(seeded: App) -> None:
    """Verification fetches each chain a few hundred rows at a time (500 on SQLite, 2,000 on
    PostgreSQL): an entry edited past the first fetch, and one deleted at a fetch boundary, are
    each named; every other site's chain stays fine."""
    from nearfab.custody.enums import LedgerKind

    chain = ch.chain(seeded)
    site_id = _any_site(seeded)
    before = len(_entries(seeded, site_id))
    items = [(LedgerKind.EPCIS, f"long-{i}", {"n": i}) for i in range(4200)]
    with seeded.uow() as uow:
        chain.ledger.append_many(uow, site_id, items)
        uow.commit()
    assert _verify(seeded, chain, all_signatures=False).ok
    rows = _entries(seeded, site_id)
    assert len(rows) == before + 4200
    # past the first fetch of either database; once rows[4000] is gone, the row after it is
    # the first of a fetch on both (500 and 2,000 rows a fetch)
    edited, deleted = rows[2600], rows[4000]
    _sql(
        seeded,
        update(LedgerEntry)
        .where(LedgerEntry.id == edited.id)
        .values(payload=_tampered(edited.payload)),
    )
    _sql(seeded, LedgerEntry.__table__.delete().where(LedgerEntry.id == deleted.id))
    for every in (False, True):
        report = _verify(seeded, chain, all_signatures=every)
        mine = [p for p in report.problems if p.site_id == site_id]
        assert mine[0].entry_id == edited.id and "changed" in mine[0].reason, mine
        # the entry after the edited one still names the stored hash it follows: fine; the
        # one after the deleted entry (the first row of a fetch now) follows nothing it should
        assert {p.seq for p in mine[1:]} == {deleted.seq + 1}, mine
        assert [p.reason for p in mine[1:]] == [
            f"entry {deleted.seq} is missing (deleted?)",
            "does not follow the previous entry (inserted, deleted or reordered)",
        ]
        assert all(c.ok for c in report.chains if c.site_id != site_id)


def _any_site(app: App) -> str:
    from nearfab.network import Site, SiteKind

    with app.uow() as uow:
        return next(
            s.id
            for s in uow.session.scalars(select(Site).order_by(Site.code))
            if s.kind != SiteKind.CONTROL.value
        )


def _reference_problems(rows, check, *, all_signatures):  # type: ignore[no-untyped-def]
    """The check as it was before the fast path: parse every payload."""
    from nearfab.custody.logic.ledger import GENESIS, Problem, row_problems

    problems, prev, expected = [], GENESIS, 1
    for index, row in enumerate(rows):
        problems += row_problems(row, prev, expected)
        last_of_key = index + 1 == len(rows) or rows[index + 1].key_id != row.key_id
        if (all_signatures or last_of_key) and not check(
            row.key_id, row.site_id, row.entry_hash, row.signature
        ):
            problems.append(Problem(row.site_id, row.seq, row.id, "signature is not valid"))
        prev, expected = row.entry_hash, row.seq + 1
    return problems


def test_the_fast_check_finds_what_parsing_every_payload_finds() -> None:
    """Random edits of a chain (payload text, columns, links, order): the streaming check
    with its no-parse fast path reports exactly the problems of the full check."""
    import random

    from nearfab.custody.logic.ledger import (
        GENESIS,
        ChainChecker,
        Row,
        as_streamed,
        payload_of,
        verify_chain,
    )

    key = Ed25519PrivateKey.generate()
    public = key.public_key()

    def check(key_id: str, site_id: str, digest: str, signature: str) -> bool:
        try:
            public.verify(bytes.fromhex(signature), bytes.fromhex(digest))
        except Exception:
            return False
        return key_id.startswith("k")

    rows, prev = [], GENESIS
    for i in range(1, 41):
        kind = ("epcis", "release", "anchor")[i % 3]
        ref = f'r{i}"\\é' if i % 7 == 0 else f"r{i}"
        body = {"kind": "x", "ref": "r1", "seq": 1, "site_id": "s", "i": i}  # decoys inside
        payload = payload_of(
            site_id="site_1", seq=i, kind=kind, ref=ref, recorded_at="2026-01-01T00:00:00.000Z",
            body=body,
        )  # fmt: skip
        digest = entry_hash(prev, payload)
        key_id = "k1" if i <= 20 else "k2"
        rows.append(
            Row(i, "site_1", i, kind, ref, payload, prev, digest, key_id,
                key.sign(bytes.fromhex(digest)).hex())
        )  # fmt: skip
        prev = digest
    rng = random.Random(4)
    edits = [
        lambda r: r._replace(payload=r.payload.replace('"seq":', '"seq": ', 1)),
        lambda r: r._replace(payload=r.payload[:-1]),
        lambda r: r._replace(payload=r.payload.replace(f',"seq":{r.seq},', ',"seq":99,')),
        lambda r: r._replace(ref=r.ref + "x"),
        lambda r: r._replace(kind="key"),
        lambda r: r._replace(seq=r.seq + 1),
        lambda r: r._replace(prev_hash=GENESIS),
        lambda r: r._replace(signature="00" * 64),
        lambda r: r._replace(key_id="x9"),
        lambda r: r._replace(site_id="site_2"),
    ]
    for _ in range(300):
        chain = list(rows)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chain))
            chain[at] = rng.choice(edits)(chain[at])
        if rng.random() < 0.2:
            del chain[rng.randrange(len(chain))]
        # recompute some hashes after an edit, as someone covering their tracks would
        if rng.random() < 0.3:
            start = rng.randrange(len(chain))
            p = chain[start - 1].entry_hash if start else GENESIS
            for j in range(start, len(chain)):
                chain[j] = chain[j]._replace(
                    prev_hash=p, entry_hash=entry_hash(p, chain[j].payload)
                )
                p = chain[j].entry_hash
        for every in (False, True):
            if len({r.site_id for r in chain}) > 1:
                continue  # one chain per call, as the reference expects
            expected = _reference_problems(chain, check, all_signatures=every)
            assert verify_chain(chain, check, all_signatures=every) == expected
            # the same chain fed in pieces, as the database streams it: what a row's check
            # carries over from the row before (hash, seq, key run, unsigned run) crosses
            # every boundary
            for size in (1, 3, 16):
                checker = ChainChecker(check, all_signatures=every)
                for start in range(0, len(chain), size):
                    streamed = [as_streamed(r) for r in chain[start : start + size]]
                    checker.feed("site_1", streamed)
                pieces = [p for c in checker.close() for p in c.problems]
                assert pieces == expected, (size, every)


# --- a cut-off tail (issue 12 item 9) -----------------------------------------------------------
def _control_chain(app: App) -> list[LedgerEntry]:
    rows = _entries(app)
    anchors = [r for r in rows if r.kind in ("anchor", "audit_checkpoint")]
    assert anchors, "the control site anchors"
    control_id = anchors[0].site_id
    return [r for r in rows if r.site_id == control_id]


def _verify_ledger_cli(app: App, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    from typer.testing import CliRunner

    from nearfab.cli.main import app as cli

    result = CliRunner().invoke(
        cli,
        ["--data-dir", str(app.settings.data_dir), "custody", "verify-ledger", "--json", *extra],
        env={"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()},
    )
    return result.exit_code, json.loads(result.stdout)


def test_a_cut_off_tail_of_the_control_chain_is_named_from_the_signed_checkpoint(
    made: tuple[App, CustodyChain],
) -> None:
    """Nobody anchors the control site's own chain: its tail could be deleted unnoticed. Each
    signed audit checkpoint records every chain's head, so verify-ledger names the cut."""
    from nearfab.identity.services.audit import create_checkpoint

    app, chain = made
    with app.uow() as uow:
        chain.ledger.anchor(uow, fh.actor(app, "qp"))
    with app.uow() as uow:
        made_cp = create_checkpoint(uow, fh.actor(app, "auditor"))
    control = _control_chain(app)
    recorded_seq, recorded_hash = made_cp.ledger[control[0].site_id]
    assert (recorded_seq, recorded_hash) == (control[-2].seq, control[-2].entry_hash)
    code, report = _verify_ledger_cli(app)
    assert code == 0, report
    # the attacker deletes the last two entries of the control chain (no trigger guards it)
    cut = control[-2:]
    _sql(app, LedgerEntry.__table__.delete().where(LedgerEntry.id.in_([r.id for r in cut])))
    code, report = _verify_ledger_cli(app)
    assert code == 1
    bad = report["first_bad"]
    keep = control[-3].seq if len(control) > 2 else 0
    assert (bad["site_id"], bad["seq"]) == (control[0].site_id, recorded_seq)
    missing = (
        f"entry {recorded_seq}"
        if keep + 1 == recorded_seq
        else f"entries {keep + 1}..{recorded_seq}"
    )
    assert f"{missing} missing" in bad["reason"]
    assert "cut off" in bad["reason"]


def test_a_cut_off_unanchored_tail_is_named_against_an_exported_file(
    made: tuple[App, CustodyChain], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The window, stated in docs/audit-trail.md: entries after the last checkpoint inside the
    database can be removed with it; a checkpoint file kept outside names the cut."""
    from typer.testing import CliRunner

    from nearfab.cli.main import app as cli

    app, chain = made
    with app.uow() as uow:
        chain.ledger.anchor(uow, fh.actor(app, "qp"))
    file = tmp_path / "outside.json"
    result = CliRunner().invoke(
        cli,
        [
            "--data-dir",
            str(app.settings.data_dir),
            "audit",
            "checkpoint",
            "export",
            "--out",
            str(file),
        ],
        env={"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()},
    )
    assert result.exit_code == 0, result.stdout
    recorded = json.loads(file.read_text())["checkpoint"]["ledger"]
    control = _control_chain(app)
    control_id = control[0].site_id
    recorded_seq = recorded[control_id][0]
    # remove every checkpoint from the database (triggers lifted) and the control chain's tail
    with app.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_checkpoints_no_delete")
        conn.exec_driver_sql("DELETE FROM audit_checkpoints")
    tail = [r for r in control if r.seq >= recorded_seq]  # its recorded head and after
    _sql(app, LedgerEntry.__table__.delete().where(LedgerEntry.id.in_([r.id for r in tail])))
    code, report = _verify_ledger_cli(app)
    assert code == 0, report  # nothing inside the database shows it
    code, report = _verify_ledger_cli(app, "--against", str(file))
    assert code == 1
    bad = report["first_bad"]
    assert (bad["site_id"], bad["seq"]) == (control_id, recorded_seq)
    assert f"entry {recorded_seq} missing" in bad["reason"]
    # an altered file is refused, naming the option
    doc = json.loads(file.read_text())
    doc["checkpoint"]["ledger"][control_id][0] += 7
    file.write_text(json.dumps(doc))
    code, report = _verify_ledger_cli(app, "--against", str(file))
    assert code == 2 and report["error"]["field"] == "against"
