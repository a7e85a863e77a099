"""The outbox capture on both databases (SQLite and PostgreSQL): every row the node owns once,
in order, chained; the control node captures only its decisions for the sites."""

from __future__ import annotations

import itertools

from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.custody import LedgerEntry
from nearfab.custody.enums import LedgerKind
from nearfab.identity import AuditAction, AuditEntry, audit, system_actor
from nearfab.replication import ReplicationService, install_capture, node_capture, verify_chain
from nearfab.replication.logic import GENESIS
from nearfab.replication.models import OutboxRecord

seeded = fh.seeded


def _note(app: App, site_id: str, entity_type: str, i: int, ledger: bool) -> None:
    with app.uow() as uow:
        if ledger:
            app.custody_chain.ledger.append(uow, site_id, LedgerKind.EPCIS, f"n{i}", {"i": i})
        audit(
            uow,
            system_actor("test"),
            AuditAction.CREATE,
            entity_type,
            f"e{i}",
            new={"i": i},
            site_id=site_id,
        )
        uow.commit()


def test_a_site_node_captures_its_audit_rows_and_its_ledger_chain(seeded: App) -> None:
    site_id = fh.site_id(seeded, "GSTT-PH")
    other = fh.site_id(seeded, "MAN-PH")
    install_capture(seeded.engine, node_capture(site_id, seeded.clock, control=False))
    for i in range(3):
        _note(seeded, site_id, "note", i, ledger=True)
    # another site's chain written in this database is not this node's to send
    with seeded.uow() as uow:
        seeded.custody_chain.ledger.append(uow, other, LedgerKind.EPCIS, "elsewhere", {})
        uow.commit()
    with seeded.uow() as uow:
        audit_seqs = uow.session.scalars(select(AuditEntry.seq)).all()
        ledger_seqs = uow.session.scalars(
            select(LedgerEntry.seq).where(LedgerEntry.site_id == site_id)
        ).all()
        rows = list(uow.session.scalars(select(OutboxRecord).order_by(OutboxRecord.seq)))
    owned = {f"audit:{s}" for s in audit_seqs} | {f"ledger:{site_id}:{s}" for s in ledger_seqs}
    assert len(ledger_seqs) >= 3
    assert sorted(r.source_ref for r in rows) == sorted(owned)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(rows))
    # what a receiving node checks holds on this database's rows (audit row hashes over their
    # content as stored, ledger entry hashes, the links): nothing to name
    service = ReplicationService(node_capture(site_id, seeded.clock, control=False))
    with seeded.uow() as uow:
        assert verify_chain(service.pending(uow, 100_000)) == []


def test_the_control_node_sends_the_sites_only_its_decisions(seeded: App) -> None:
    control_id = fh.site_id(seeded, "CTRL")
    config = node_capture(control_id, seeded.clock, control=True)
    install_capture(seeded.engine, config)
    _note(seeded, control_id, "note", 1, ledger=False)  # the control site's own business
    _note(seeded, control_id, "recall", 2, ledger=False)  # a decision the sites need
    service = ReplicationService(config)
    decisions = (
        "recall",
        "master_file",
        "master_file_published",
        "release_review",
        "remote_release",
    )
    with seeded.uow() as uow:
        sent = {r.source_ref for r in service.pending(uow, 100_000) if r.kind == "audit"}
        wanted = uow.session.scalars(
            select(AuditEntry.seq).where(AuditEntry.entity_type.in_(decisions))
        ).all()
        note = uow.session.scalars(
            select(AuditEntry.seq).where(AuditEntry.entity_type == "note")
        ).one()
    assert sent == {f"audit:{s}" for s in wanted}  # the seed's approvals and the recall
    assert f"audit:{note}" not in sent


def test_concurrent_writers_get_one_gapless_chained_outbox(seeded: App) -> None:
    """Four threads writing at once (audit rows only, ledger entries only, both): every owned
    row is in the outbox once, numbered without a gap, each record chained to the one before
    (the outbox head is locked by each capturing transaction). A writer that loses a race is
    refused whole (`concurrent_change`) and retried, as a person would."""
    import threading

    from nearfab.common.errors import Conflict

    site_id = fh.site_id(seeded, "GSTT-PH")
    install_capture(seeded.engine, node_capture(site_id, seeded.clock, control=False))
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                for _attempt in range(20):
                    try:
                        if n % 3 == 0:
                            _note(seeded, site_id, "note", n * 100 + i, ledger=True)
                        elif n % 3 == 1:
                            _note(seeded, site_id, "note", n * 100 + i, ledger=False)
                        else:
                            with seeded.uow() as uow:
                                seeded.custody_chain.ledger.append(
                                    uow, site_id, LedgerKind.EPCIS, f"w{n}-{i}", {}
                                )
                                uow.commit()
                        break
                    except Conflict:
                        continue
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with seeded.uow() as uow:
        audit_seqs = uow.session.scalars(select(AuditEntry.seq)).all()
        ledger_seqs = uow.session.scalars(
            select(LedgerEntry.seq).where(LedgerEntry.site_id == site_id)
        ).all()
        rows = list(uow.session.scalars(select(OutboxRecord).order_by(OutboxRecord.seq)))
    owned = {f"audit:{s}" for s in audit_seqs} | {f"ledger:{site_id}:{s}" for s in ledger_seqs}
    assert len(ledger_seqs) >= 45  # 15 + 30 entries written by the threads, at least
    assert sorted(r.source_ref for r in rows) == sorted(owned)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(rows))


def test_the_inbox_applies_once_verifies_and_anchors_on_each_database(seeded: App) -> None:
    """The receiving side on SQLite and PostgreSQL (no broker: the messages as they travel):
    applied once, a second delivery dropped as duplicates, the chains verified, anchored."""
    site_id = fh.site_id(seeded, "GSTT-PH")
    control_id = fh.site_id(seeded, "CTRL")
    install_capture(seeded.engine, node_capture(site_id, seeded.clock, control=False))
    for i in range(3):
        _note(seeded, site_id, "note", i, ledger=True)
    sender = ReplicationService(node_capture(site_id, seeded.clock, control=False))
    receiver = ReplicationService(node_capture(control_id, seeded.clock, control=True))
    with seeded.uow() as uow:
        messages = [r.to_message() for r in sender.pending(uow, 100_000)]
    with seeded.uow() as uow:
        assert receiver.apply(uow, messages).applied == len(messages)
    with seeded.uow() as uow:
        again = receiver.apply(uow, messages)
    assert again.applied == 0 and len(again.problems) == len(messages)
    with seeded.uow() as uow:
        (status,) = receiver.inbox_status(uow)
    assert status.ok and status.records == len(messages) and status.duplicates == len(messages)
    with seeded.uow() as uow:
        anchored = receiver.anchor(uow, system_actor("replication"))
    assert anchored["anchored"][site_id]["seq"] == len(messages)
