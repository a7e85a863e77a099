"""The audit trail is append-only at the database level and hash-chained (EU GMP Annex 11 §9,
21 CFR 11.10(e)): every row numbered without gaps and bound to the one before; UPDATE and
DELETE refused by triggers on both backends; tampering behind the application's back (the
triggers lifted) found by `nearfab audit verify`, which names the first bad row; a change to GMP
data needs a reason. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from tests import flow_helpers as fh
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.common.errors import Conflict, Forbidden, ValidationFailed
from nearfab.custody.services.verifylog import VerificationLog
from nearfab.identity import (
    AuditEntry,
    append_audit_rows,
    audit,
    audited_transition,
    refuse,
    search_audit,
    system_actor,
    verify_audit_chain,
)
from nearfab.identity.services.audit import verify_chain
from nearfab.materials import MaterialLot
from nearfab.network.enums import SITE_TRANSITIONS, SiteStatus

seeded = fh.seeded
GENESIS = "0" * 64
SYSTEM = system_actor("test")


# --- helpers --------------------------------------------------------------------------------
def rows(app: App) -> list[dict[str, Any]]:
    with app.engine.connect() as conn:
        found = conn.execute(text("SELECT * FROM audit_entries ORDER BY seq, id")).mappings()
        return [dict(r) for r in found]


def expected_hash(row: dict[str, Any], prev_hash: str) -> str:
    """Recomputed here from the definition (not with the application's function): SHA-256 of
    the canonical JSON (sorted keys, no spaces, UTF-8) of the row's content and prev_hash."""
    with_orm = {k: row[k] for k in ("seq", "actor_id", "actor_name", "action", "entity_type")}
    at = row["at"]
    if isinstance(at, str):  # SQLite hands back text: stored in UTC
        at = datetime.fromisoformat(at).replace(tzinfo=UTC)
    loaded = {k: json.loads(row[k]) if isinstance(row[k], str) else row[k] for k in ("old", "new")}
    content = {
        **with_orm,
        "at": at.astimezone(UTC).isoformat(),
        "entity_id": row["entity_id"],
        **loaded,
        "reason": row["reason"],
        "site_id": row["site_id"],
        "prev_hash": prev_hash,
    }
    data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def lift_triggers(app: App) -> None:
    """What someone with database superuser rights could do: switch the protection off."""
    with app.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_entries DISABLE TRIGGER USER"))
            conn.execute(text("ALTER TABLE audit_chain_head DISABLE TRIGGER USER"))
        else:
            for name in conn.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name IN ('audit_entries', 'audit_chain_head')"
                )
            ).scalars():
                conn.execute(text(f'DROP TRIGGER "{name}"'))


def sql(app: App, statement: str, **params: Any) -> None:
    with app.engine.begin() as conn:
        conn.execute(text(statement), params)


def cli_verify(app: App) -> tuple[int, dict[str, Any]]:
    """`nearfab audit verify --json` on this app's database, through the real CLI entry point."""
    result = CliRunner().invoke(
        cli,
        ["--data-dir", str(app.settings.data_dir), "audit", "verify", "--json"],
        env={"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()},
    )
    return result.exit_code, json.loads(result.stdout)


def add_rows(app: App, n: int, entity_id: str = "t-1") -> None:
    with app.uow() as uow:
        for i in range(n):
            audit(uow, SYSTEM, "create", "test_record", entity_id, new={"i": i, "x": 1.25})
        uow.commit()


# --- the chain ------------------------------------------------------------------------------
def test_annex11_s9_every_row_is_numbered_without_gaps_and_chained(seeded: App) -> None:
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow:
        lot = uow.session.query(MaterialLot).filter(MaterialLot.status == "approved").first()
        assert lot is not None
        seeded.materials.set_status(uow, qp, lot.id, "on_hold", reason="supplier complaint")
    all_rows = rows(seeded)
    assert len(all_rows) > 20
    assert [r["seq"] for r in all_rows] == list(range(1, len(all_rows) + 1))
    prev = GENESIS
    for r in all_rows:
        assert r["prev_hash"] == prev, f"row {r['seq']} does not link to the one before"
        assert r["row_hash"] == expected_hash(r, prev), f"row {r['seq']}: hash"
        prev = r["row_hash"]
    ids = [r["id"] for r in all_rows]
    assert ids == sorted(ids)  # numbered in the order written
    with seeded.engine.connect() as conn:
        head = conn.execute(text("SELECT seq, hash FROM audit_chain_head")).one()
    assert (head.seq, head.hash) == (all_rows[-1]["seq"], all_rows[-1]["row_hash"])
    # the last change is there with its old value kept beside the new one
    assert all_rows[-1]["entity_type"] == "material_lot"
    with seeded.uow() as uow:
        report = verify_audit_chain(uow, fh.actor(seeded, "auditor"))
    assert report.ok and report.rows_checked == len(all_rows)
    assert report.head_hash == all_rows[-1]["row_hash"]


def test_annex11_s9_a_refusal_and_a_bulk_written_verification_are_chained_too(
    seeded: App,
) -> None:
    before = len(rows(seeded))
    # a refusal rolls the attempt back and commits its own row
    with pytest.raises(Forbidden), seeded.uow() as uow:
        audit(uow, SYSTEM, "create", "test_record", "rolled-back")
        refuse(uow, SYSTEM, Forbidden("not yours"), "batch", "B-1")
    # the verification log writes its rows in bulk from a background thread (Core INSERT)
    vlog = VerificationLog()
    now = seeded.clock.now()
    for i in range(3):
        vlog.submit(
            seeded.engine,
            {
                "at": now,
                "actor_id": "system:scanner",
                "actor_name": "scanner",
                "action": "verify",
                "entity_type": "unit",
                "entity_id": f"u-{i}",
                "old": None,
                "new": {"answer": "valid"},
                "reason": None,
                "site_id": None,
            },
        )
    vlog.flush()
    after = rows(seeded)
    assert len(after) >= before + 3
    assert [r["seq"] for r in after] == list(range(1, len(after) + 1))
    assert [r["entity_id"] for r in after[-4:]] == ["B-1", "u-0", "u-1", "u-2"]
    assert "rolled-back" not in {r["entity_id"] for r in after}
    code, report = cli_verify(seeded)
    assert code == 0 and report["ok"], report
    assert report["rows_checked"] == len(after)


def test_annex11_s9_concurrent_writers_get_one_gapless_chain(app: App) -> None:
    """Several threads append at once (the head row serialises them): no duplicate number, no
    gap, every link right."""
    before = len(rows(app))
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for j in range(8):
                for _attempt in range(50):  # SQLite may answer "database is locked": retry
                    try:
                        add_rows(app, 3, entity_id=f"w{k}-{j}")
                        break
                    except Conflict:
                        continue
                else:
                    raise AssertionError("a writer never got the lock")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    after = rows(app)
    assert len(after) == before + 4 * 8 * 3
    assert [r["seq"] for r in after] == list(range(1, len(after) + 1))
    with app.uow() as uow:
        report = verify_audit_chain(uow, SYSTEM)
    assert report.ok, report.first_bad


# --- the database refuses changes ---------------------------------------------------------------
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET reason = 'nothing happened' WHERE seq = 5",
        "UPDATE audit_entries SET old = NULL WHERE seq = 5",
        "DELETE FROM audit_entries WHERE seq = 5",
        "DELETE FROM audit_entries",
        "UPDATE signatures SET meaning = 'reviewed only'",
        "DELETE FROM signatures",
        "UPDATE audit_chain_head SET seq = seq - 1, hash = 'x'",
        "DELETE FROM audit_chain_head",
    ],
    ids=lambda s: s.split(" SET")[0].split(" WHERE")[0],
)
def test_11_10_e_direct_update_or_delete_is_refused_by_the_database(
    seeded: App, statement: str
) -> None:
    before_rows = rows(seeded)
    with seeded.engine.connect() as conn:
        sigs_before = conn.execute(text("SELECT * FROM signatures ORDER BY id")).all()
    assert sigs_before, "the demo seed signs master files"
    with pytest.raises(DBAPIError, match=r"append-only|only moves forward|refused"):
        sql(seeded, statement)
    assert rows(seeded) == before_rows
    with seeded.engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM signatures ORDER BY id")).all() == sigs_before


def test_11_10_e_the_head_moves_only_onto_the_last_row(seeded: App) -> None:
    last = rows(seeded)[-1]
    with pytest.raises(DBAPIError, match="only moves forward"):
        sql(seeded, "UPDATE audit_chain_head SET seq = :s, hash = :h", s=last["seq"] + 5, h="f")


# --- tampering behind the application's back is found -------------------------------------------
def test_annex11_s9_untouched_chain_verifies_through_the_cli(seeded: App) -> None:
    code, report = cli_verify(seeded)
    assert code == 0, report
    assert report["ok"] is True and report["first_bad"] is None
    assert report["rows_checked"] == len(rows(seeded)) == report["head_seq"]


def test_annex11_s9_an_edited_row_is_named(seeded: App) -> None:
    target = rows(seeded)[9]
    lift_triggers(seeded)
    sql(
        seeded,
        "UPDATE audit_entries SET reason = 'approved by phone' WHERE id = :i",
        i=target["id"],
    )
    code, report = cli_verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert (bad["seq"], bad["id"], bad["problem"]) == (target["seq"], target["id"], "edited")
    assert (bad["entity_type"], bad["entity_id"]) == (target["entity_type"], target["entity_id"])
    assert report["rows_checked"] == target["seq"] - 1


def test_annex11_s9_an_edit_with_a_recomputed_hash_is_still_found(seeded: App) -> None:
    """Whoever edits a row and recomputes its hash breaks the next row's link instead."""
    target = rows(seeded)[9]
    changed = {**target, "reason": "approved by phone"}
    lift_triggers(seeded)
    sql(
        seeded,
        "UPDATE audit_entries SET reason = :r, row_hash = :h WHERE id = :i",
        r=changed["reason"],
        h=expected_hash(changed, target["prev_hash"]),
        i=target["id"],
    )
    code, report = cli_verify(seeded)
    assert code == 1
    assert (report["first_bad"]["seq"], report["first_bad"]["problem"]) == (
        target["seq"],
        "edited",
    )


def test_annex11_s9_a_deleted_row_is_found_at_the_row_after_it(seeded: App) -> None:
    target, after = rows(seeded)[9], rows(seeded)[10]
    lift_triggers(seeded)
    sql(seeded, "DELETE FROM audit_entries WHERE id = :i", i=target["id"])
    code, report = cli_verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert (bad["seq"], bad["id"], bad["problem"]) == (
        after["seq"],
        after["id"],
        "deleted before it",
    )
    assert str(target["seq"]) in bad["detail"]


def test_annex11_s9_a_deleted_last_row_is_found_from_the_head(seeded: App) -> None:
    last = rows(seeded)[-1]
    lift_triggers(seeded)
    sql(seeded, "DELETE FROM audit_entries WHERE id = :i", i=last["id"])
    code, report = cli_verify(seeded)
    assert code == 1
    assert (report["first_bad"]["seq"], report["first_bad"]["problem"]) == (last["seq"], "deleted")


def test_annex11_s9_an_inserted_row_is_named_even_with_a_correct_hash(seeded: App) -> None:
    """A forged row appended with a well-computed hash: the head says where the application's
    chain ends."""
    last = rows(seeded)[-1]
    forged = {
        **last,
        "seq": last["seq"] + 1,
        "action": "sign",
        "entity_type": "batch",
        "entity_id": "B-FORGED",
        "reason": "backdated approval",
        "old": None,
        "new": None,
    }
    lift_triggers(seeded)
    with seeded.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, at, actor_id, actor_name, action, entity_type, "
                "entity_id, old, new, reason, site_id, prev_hash, row_hash) VALUES (:seq, :at, "
                ":actor_id, :actor_name, :action, :entity_type, :entity_id, NULL, NULL, :reason, "
                ":site_id, :prev_hash, :row_hash)"
            ),
            {
                **{k: forged[k] for k in ("seq", "actor_id", "actor_name", "action")},
                **{k: forged[k] for k in ("entity_type", "entity_id", "reason", "site_id")},
                "at": forged["at"],
                "prev_hash": last["row_hash"],
                "row_hash": expected_hash(forged, last["row_hash"]),
            },
        )
    code, report = cli_verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert (bad["seq"], bad["entity_id"], bad["problem"]) == (
        last["seq"] + 1,
        "B-FORGED",
        "inserted",
    )


def test_annex11_s9_reordered_rows_are_named(seeded: App) -> None:
    first, second = rows(seeded)[9], rows(seeded)[10]
    lift_triggers(seeded)
    with seeded.engine.begin() as conn:  # swap their numbers (through a free one)
        conn.execute(text("UPDATE audit_entries SET seq = -1 WHERE id = :i"), {"i": first["id"]})
        conn.execute(
            text("UPDATE audit_entries SET seq = :s WHERE id = :i"),
            {"s": first["seq"], "i": second["id"]},
        )
        conn.execute(
            text("UPDATE audit_entries SET seq = :s WHERE id = :i"),
            {"s": second["seq"], "i": first["id"]},
        )
    code, report = cli_verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert (bad["seq"], bad["id"], bad["problem"]) == (first["seq"], second["id"], "reordered")


def test_annex11_s9_verify_is_for_qp_admin_and_auditor(seeded: App) -> None:
    with seeded.uow() as uow:
        assert verify_audit_chain(uow, fh.actor(seeded, "auditor")).ok
    with pytest.raises(Forbidden), seeded.uow() as uow:
        verify_audit_chain(uow, fh.actor(seeded, "operator"))


# --- a reason for every change to GMP data ----------------------------------------------------
def test_annex11_s9_a_gmp_change_without_a_reason_is_refused(seeded: App) -> None:
    qp = fh.actor(seeded, "qp")
    before = len(rows(seeded))
    with seeded.uow() as uow:
        lot = uow.session.query(MaterialLot).filter(MaterialLot.status == "approved").first()
        assert lot is not None
        lot_id = lot.id
    for blank in ("", "   "):
        with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
            seeded.materials.set_status(uow, qp, lot_id, "on_hold", reason=blank)
        assert caught.value.field == "reason"
    with seeded.uow() as uow:
        assert uow.session.get(MaterialLot, lot_id).status == "approved"  # type: ignore[union-attr]
    assert len(rows(seeded)) == before
    # the rule is in audit() itself: every update or status change of GMP data
    for action, kind in [("update", "batch"), ("transition", "order"), ("update", "master_file")]:
        with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
            audit(uow, SYSTEM, action, kind, "x-1", old={"a": 1}, new={"a": 2})
        assert caught.value.field == "reason"


def test_annex11_s9_a_status_change_without_a_reason_changes_nothing(seeded: App) -> None:
    class Record:
        id, status = "site-x", SiteStatus.ACTIVE.value

    record = Record()
    with pytest.raises(ValidationFailed), seeded.uow() as uow:
        audited_transition(
            uow,
            SYSTEM,
            record,
            SiteStatus.PAUSED,
            SITE_TRANSITIONS,
            entity_type="site",
            label="site X",
            reason=None,
        )
    assert record.status == SiteStatus.ACTIVE.value


def test_creation_and_non_gmp_rows_need_no_reason(seeded: App) -> None:
    """Annex 11 §9 asks a reason for a change to GMP data: a creation (of a GMP record) and a
    change to a planning row (not GMP data) are written without one, and nothing else."""
    before = rows(seeded)
    with seeded.uow() as uow:
        audit(uow, SYSTEM, "create", "batch", "b-1", new={"a": 1})
        audit(uow, SYSTEM, "update", "order_planning", "o-1", old={"p": 1}, new={"p": 2})
        uow.commit()
    after = rows(seeded)
    assert len(after) == len(before) + 2
    written = [
        (r["action"], r["entity_type"], r["entity_id"], r["reason"]) for r in after[len(before) :]
    ]
    assert written == [
        ("create", "batch", "b-1", None),
        ("update", "order_planning", "o-1", None),
    ]
    assert [r["seq"] for r in after[-2:]] == [before[-1]["seq"] + 1, before[-1]["seq"] + 2]


# --- review: site scoping and filters -----------------------------------------------------------
def test_annex11_s9_site_staff_see_only_their_own_sites_rows(seeded: App) -> None:
    pharmacist = fh.actor(seeded, "pharmacist")  # GSTT-PH
    gstt, man = fh.site_id(seeded, "GSTT-PH"), fh.site_id(seeded, "MAN-PH")
    with seeded.uow() as uow:
        mine, total = search_audit(uow, pharmacist, limit=500)
    assert total > 0 and {r.site_id for r in mine} == {gstt}
    with pytest.raises(Forbidden) as caught, seeded.uow() as uow:
        search_audit(uow, pharmacist, site_id=man)
    assert caught.value.code == "other_site"
    with seeded.uow() as uow:
        everything, total_all = search_audit(uow, fh.actor(seeded, "auditor"), limit=500)
    assert total_all == len(rows(seeded)) and total_all > total
    assert [r.seq for r in everything] == sorted((r.seq for r in everything), reverse=True)
    with pytest.raises(Forbidden), seeded.uow() as uow:
        search_audit(uow, fh.actor(seeded, "operator"))


def test_annex11_s9_review_filters_and_pages(seeded: App) -> None:
    auditor = fh.actor(seeded, "auditor")
    with seeded.uow() as uow:
        page1, total = search_audit(uow, auditor, entity_type="master_file", limit=2)
        page2, _ = search_audit(uow, auditor, entity_type="master_file", limit=2, offset=2)
        signs, _ = search_audit(uow, auditor, action="sign", limit=500)
        by_qp, _ = search_audit(uow, auditor, who="parr", limit=500)
        late, _ = search_audit(uow, auditor, since=seeded.clock.now(), limit=500)
    assert total >= 4 and len(page1) == 2 and len(page2) == 2
    assert {r.id for r in page1}.isdisjoint({r.id for r in page2})
    assert all(r.entity_type == "master_file" for r in page1 + page2)
    assert signs and all(r.action == "sign" for r in signs)
    assert by_qp and all("Parr" in r.actor_name for r in by_qp)
    assert all(r.at >= seeded.clock.now() for r in late)
    with pytest.raises(ValidationFailed) as caught, seeded.uow() as uow:
        search_audit(uow, auditor, since=datetime(2026, 1, 1))  # no zone
    assert caught.value.field == "since"
    with pytest.raises(ValidationFailed), seeded.uow() as uow:
        search_audit(uow, auditor, limit=0)


def test_entries_are_never_changed_by_the_orm_either(seeded: App) -> None:
    """An UPDATE issued through the ORM (the way a careless fix would) is refused as well."""
    with pytest.raises(DBAPIError), seeded.uow() as uow:
        entry = uow.session.query(AuditEntry).order_by(AuditEntry.seq).first()
        assert entry is not None
        entry.reason = "tidied up"
        uow.session.flush()


# --- however the schema is made ---------------------------------------------------------------
def test_11_10_e_a_schema_made_from_the_models_is_protected_too(tmp_path: Path) -> None:
    """`Base.metadata.create_all` (no migrations) brings the triggers and the head row."""
    from nearfab.db import Base, make_engine
    from nearfab.models import load_all

    load_all()
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    row = {
        "at": now,
        "actor_id": "system:test",
        "actor_name": "test",
        "action": "create",
        "entity_type": "batch",
        "entity_id": "b-1",
        "old": None,
        "new": {"a": 1},
        "reason": None,
        "site_id": None,
    }
    with engine.begin() as conn:
        append_audit_rows(conn, [row, row])
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET reason = 'x'"))
    with pytest.raises(DBAPIError, match="only moves forward"), engine.begin() as conn:
        conn.execute(text("UPDATE audit_chain_head SET seq = 1"))
    with engine.connect() as conn:
        guarded = conn.execute(
            text("SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger'")
        ).scalars()
        assert set(guarded) == {
            "audit_entries",
            "signatures",
            "audit_chain_head",
            "audit_checkpoints",
        }
        report = verify_chain(conn)
    assert report.ok and report.rows_checked == 2 and report.head_seq == 2
    engine.dispose()


def test_migration_0008_numbers_and_hashes_the_rows_already_there(database_url: str) -> None:
    """An existing database: its rows are chained in the order they were written."""
    from sqlalchemy import create_engine

    from nearfab.db import make_engine
    from nearfab.migrations import upgrade

    if database_url.startswith("sqlite"):
        url = database_url.replace("nearfab.db", "old.db")
    else:
        from tests.conftest import PG_ADMIN_URL

        name = f"nearfab_m8_{secrets.token_hex(4)}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url, "0007")
        engine = make_engine(url)
        with engine.begin() as conn:
            for i in range(3):
                conn.execute(
                    text(
                        "INSERT INTO audit_entries (at, actor_id, actor_name, action, entity_type,"
                        " entity_id, old, new, reason, site_id) VALUES (:at, 'u', 'U', 'update',"
                        " 'batch', :e, :old, :new, 'why', NULL)"
                    ),
                    {
                        "at": datetime(2026, 1, 5, 8, i, tzinfo=UTC),
                        "e": f"b-{i}",
                        "old": json.dumps({"status": "a"}),
                        "new": json.dumps({"status": "b"}),
                    },
                )
        engine.dispose()
        upgrade(url)
        engine = make_engine(url)
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT id, seq, entity_id FROM audit_entries ORDER BY id")
            ).all()
            assert [(r.seq, r.entity_id) for r in found] == [(1, "b-0"), (2, "b-1"), (3, "b-2")]
            report = verify_chain(conn)
        assert report.ok and report.rows_checked == 3 and report.head_seq == 3
        with pytest.raises(DBAPIError), engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_entries"))
        engine.dispose()
    finally:
        if not database_url.startswith("sqlite"):
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def test_annex11_s9_verify_reads_in_chunks_and_keeps_the_links_across_them(seeded: App) -> None:
    all_rows = rows(seeded)
    with seeded.engine.connect() as conn:
        report = verify_chain(conn, chunk=7)
    assert report.ok and report.rows_checked == len(all_rows)
    target = all_rows[14]  # the first row of the third chunk
    lift_triggers(seeded)
    sql(
        seeded, "UPDATE audit_entries SET actor_name = 'someone else' WHERE id = :i", i=target["id"]
    )
    with seeded.engine.connect() as conn:
        report = verify_chain(conn, chunk=7)
    assert not report.ok and report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.problem) == (target["seq"], "edited")
