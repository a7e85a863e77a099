"""Forging the audit trail with database access (issue 12 item 7): every attack is performed
with raw SQL, on SQLite and PostgreSQL, with the append-only triggers intact where the attack
needs none and lifted where it does, and `nearfab audit verify` (the real CLI) must name it.

What the application adds against it (docs/audit-trail.md): a keyed MAC on every row
(HMAC-SHA256 with keys/audit_chain.key, which is not in the database) and checkpoints of the
audit head signed with the control site's Ed25519 key, stored in the database, in the control
site's ledger chain, and exportable to a file kept elsewhere (`--against FILE`).

The attacker's hashes are computed here from the documented definition
(tests/identity/test_audit_chain.py::expected_hash), never with the application's functions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests import flow_helpers as fh
from tests.identity.test_audit_chain import expected_hash, lift_triggers, rows, sql
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.identity import system_actor
from nearfab.identity.services.audit import create_checkpoint

seeded = fh.seeded
SYSTEM = system_actor("test")
AUDITOR = "auditor"


def verify(app: App, *extra: str) -> tuple[int, dict[str, Any]]:
    """`nearfab audit verify --json [extra]` through the real CLI entry point."""
    result = CliRunner().invoke(
        cli,
        ["--data-dir", str(app.settings.data_dir), "audit", "verify", "--json", *extra],
        env={"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()},
    )
    return result.exit_code, json.loads(result.stdout)


def export(app: App, out: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli,
        [
            "--data-dir",
            str(app.settings.data_dir),
            "audit",
            "checkpoint",
            "export",
            "--out",
            str(out),
        ],
        env={"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()},
    )
    assert result.exit_code == 0, result.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def checkpoint(app: App) -> None:
    with app.uow() as uow:
        create_checkpoint(uow, fh.actor(app, AUDITOR))


def add_rows(app: App, n: int, entity_id: str = "t-1") -> None:
    from nearfab.identity import audit

    with app.uow() as uow:
        for i in range(n):
            audit(uow, SYSTEM, "create", "test_record", entity_id, new={"i": i})
        uow.commit()


def lift_checkpoint_triggers(app: App) -> None:
    with app.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_checkpoints DISABLE TRIGGER USER"))
        else:
            for name in conn.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name = 'audit_checkpoints'"
                )
            ).scalars():
                conn.execute(text(f'DROP TRIGGER "{name}"'))


def rechain(
    app: App, from_index: int, changed: list[dict[str, Any]], *, mac_key: bytes | None = None
) -> None:
    """What someone who knows the scheme does with the triggers lifted: give `changed` (the
    rows from `from_index` on, as they should now read) fresh seq, prev_hash and SHA-256, and
    move the head onto the last. With `mac_key` (they also hold the key file) the MACs too."""
    before = rows(app)
    prev = before[from_index - 1]["row_hash"] if from_index else "0" * 64
    with app.engine.begin() as conn:
        for r in before[from_index:]:
            conn.execute(text("DELETE FROM audit_entries WHERE id = :i"), {"i": r["id"]})
        for offset, r in enumerate(changed):
            seq = from_index + offset + 1
            row = {**r, "seq": seq}
            row_hash = expected_hash(row, prev)
            mac = r.get("row_mac")
            if mac_key is not None:
                mac = expected_mac(mac_key, row)
            conn.execute(
                text(
                    "INSERT INTO audit_entries (id, seq, at, actor_id, actor_name, action, "
                    "entity_type, entity_id, old, new, reason, site_id, prev_hash, row_hash, "
                    "row_mac) VALUES (:id, :seq, :at, :actor_id, :actor_name, :action, "
                    ":entity_type, :entity_id, :old, :new, :reason, :site_id, :prev_hash, "
                    ":row_hash, :row_mac)"
                ),
                {
                    **{k: row[k] for k in ("id", "seq", "at", "actor_id", "actor_name", "action")},
                    **{k: row[k] for k in ("entity_type", "entity_id", "reason", "site_id")},
                    "old": _json(row["old"]),
                    "new": _json(row["new"]),
                    "prev_hash": prev,
                    "row_hash": row_hash,
                    "row_mac": mac,
                },
            )
            prev = row_hash
        conn.execute(
            text("UPDATE audit_chain_head SET seq = :s, hash = :h"),
            {"s": from_index + len(changed), "h": prev},
        )


def _json(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def expected_mac(key: bytes, row: dict[str, Any]) -> str:
    """The documented MAC: HMAC-SHA256 over "nearfab-audit-row-mac-v1\\n" and the canonical
    JSON of the row's content with its seq, without prev_hash."""
    from datetime import UTC, datetime

    at = row["at"]
    if isinstance(at, str):
        at = datetime.fromisoformat(at).replace(tzinfo=UTC)
    content = {
        **{k: row[k] for k in ("seq", "actor_id", "actor_name", "action", "entity_type")},
        "at": at.astimezone(UTC).isoformat(),
        "entity_id": row["entity_id"],
        **{k: json.loads(row[k]) if isinstance(row[k], str) else row[k] for k in ("old", "new")},
        "reason": row["reason"],
        "site_id": row["site_id"],
    }
    data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, b"nearfab-audit-row-mac-v1\n" + data.encode(), hashlib.sha256).hexdigest()


def drop_ledgered_checkpoints(app: App, *, above: int) -> None:
    """The copies of the checkpoints in the control site's ledger chain (no trigger there)."""
    with app.engine.begin() as conn:
        for entry_id, payload in conn.execute(
            text("SELECT id, payload FROM custody_ledger WHERE kind = 'audit_checkpoint'")
        ).all():
            if json.loads(payload)["body"]["checkpoint"]["seq"] > above:
                conn.execute(text("DELETE FROM custody_ledger WHERE id = :i"), {"i": entry_id})


def key_file(app: App) -> bytes:
    return (Path(app.settings.data_dir) / "keys" / "audit_chain.key").read_bytes()


# --- the rows are keyed -------------------------------------------------------------------------
def test_every_row_the_application_writes_carries_the_documented_mac(seeded: App) -> None:
    add_rows(seeded, 3)
    key = key_file(seeded)
    assert len(key) >= 32
    written = rows(seeded)
    keyed = [r for r in written if r["row_mac"] is not None]
    assert keyed and keyed[-1]["seq"] == written[-1]["seq"]
    first = keyed[0]["seq"]
    assert all(r["row_mac"] is not None for r in written if r["seq"] >= first)
    for r in keyed:
        assert r["row_mac"] == expected_mac(key, r), f"row {r['seq']}"
    code, report = verify(seeded)
    assert code == 0 and report["ok"] and report["keyed"] is True, report
    # the key is not in the database
    with seeded.engine.connect() as conn:
        dump = json.dumps(
            [list(map(str, r)) for r in conn.execute(text("SELECT * FROM platform_keys"))]
        )
    assert key.hex() not in dump and base64.b64encode(key).decode() not in dump


# --- triggers intact: a forged row with a correct SHA-256 and the head moved onto it -----------
@pytest.mark.parametrize("mac", [None, "random"])
def test_a_row_forged_with_a_correct_hash_and_the_head_moved_is_named(
    seeded: App, mac: str | None
) -> None:
    """Only INSERT and a forward UPDATE of the head: both allowed by the triggers."""
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
    row_hash = expected_hash(forged, last["row_hash"])
    with seeded.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, at, actor_id, actor_name, action, entity_type, "
                "entity_id, old, new, reason, site_id, prev_hash, row_hash, row_mac) VALUES "
                "(:seq, :at, :actor_id, :actor_name, :action, :entity_type, :entity_id, NULL, "
                "NULL, :reason, :site_id, :prev_hash, :row_hash, :row_mac)"
            ),
            {
                **{k: forged[k] for k in ("seq", "at", "actor_id", "actor_name", "action")},
                **{k: forged[k] for k in ("entity_type", "entity_id", "reason", "site_id")},
                "prev_hash": last["row_hash"],
                "row_hash": row_hash,
                "row_mac": None if mac is None else secrets.token_hex(32),
            },
        )
        # the head trigger lets it move forward onto the (forged) last row
        conn.execute(
            text("UPDATE audit_chain_head SET seq = :s, hash = :h"),
            {"s": forged["seq"], "h": row_hash},
        )
    code, report = verify(seeded)
    assert code == 1, report
    bad = report["first_bad"]
    assert (bad["seq"], bad["entity_id"]) == (forged["seq"], "B-FORGED")
    assert bad["problem"] == ("inserted" if mac is None else "edited")


# --- triggers lifted: re-chained edit, delete and truncation -----------------------------------
def test_an_edit_re_chained_to_the_end_is_named(seeded: App) -> None:
    before = rows(seeded)
    i = 12
    changed = [{**before[i], "reason": "approved by phone"}, *before[i + 1 :]]
    lift_triggers(seeded)
    rechain(seeded, i, changed)
    code, report = verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert (bad["seq"], bad["id"], bad["problem"]) == (i + 1, before[i]["id"], "edited")


def test_a_delete_re_numbered_and_re_chained_is_named(seeded: App) -> None:
    before = rows(seeded)
    i = 12  # row seq 13 deleted; 14.. renumbered 13..
    lift_triggers(seeded)
    rechain(seeded, i, before[i + 1 :])
    code, report = verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert (bad["seq"], bad["id"], bad["problem"]) == (
        i + 1,
        before[i + 1]["id"],
        "deleted before it",
    )


def test_a_row_inserted_in_the_middle_and_re_chained_is_named(seeded: App) -> None:
    before = rows(seeded)
    i = 12
    forged = {
        **before[i],
        "id": before[-1]["id"] + 1000,
        "entity_id": "B-FORGED",
        "row_mac": "0" * 64,
    }
    # keep ids in write order: the forged row and the ones after it get fresh, rising ids
    after = [{**r, "id": before[-1]["id"] + 1001 + k} for k, r in enumerate(before[i:])]
    lift_triggers(seeded)
    rechain(seeded, i, [forged, *after])
    code, report = verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert (bad["seq"], bad["entity_id"], bad["problem"]) == (i + 1, "B-FORGED", "inserted")


def test_truncation_before_a_checkpoint_is_named_and_after_it_reported_unanchored(
    seeded: App,
) -> None:
    checkpoint(seeded)
    anchored = rows(seeded)[-1]["seq"]
    add_rows(seeded, 4)
    code, report = verify(seeded)
    assert code == 0 and report["anchored_seq"] == anchored, report
    assert report["unanchored_rows"] == 4
    before = rows(seeded)
    cut = anchored - 3  # keep rows 1..cut: three signed rows and the four after are gone
    lift_triggers(seeded)
    rechain(seeded, cut, [])
    code, report = verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert bad["problem"] == "deleted" and bad["seq"] == anchored
    assert f"{cut + 1} to {anchored}" in bad["detail"]
    assert len(rows(seeded)) == cut < len(before)


def test_truncation_of_unanchored_rows_is_found_only_with_an_exported_file(
    seeded: App, tmp_path: Path
) -> None:
    """The limit, stated in docs/audit-trail.md: rows after the last checkpoint can be cut
    off unnoticed inside the database; a checkpoint file kept outside names it."""
    checkpoint(seeded)
    anchored = rows(seeded)[-1]["seq"]
    add_rows(seeded, 3)
    file = tmp_path / "outside.json"
    # the file is exported and kept outside; then the attacker removes its checkpoints
    export(seeded, file)
    exported_seq = json.loads(file.read_text())["checkpoint"]["seq"]
    assert exported_seq == anchored + 3
    lift_triggers(seeded)
    lift_checkpoint_triggers(seeded)
    sql(seeded, "DELETE FROM audit_checkpoints WHERE seq > :s", s=anchored)
    drop_ledgered_checkpoints(seeded, above=anchored)
    rechain(seeded, anchored, [])
    code, report = verify(seeded)
    assert code == 0, report  # nothing inside the database shows it
    code, report = verify(seeded, "--against", str(file))
    assert code == 1
    bad = report["first_bad"]
    assert bad["problem"] == "deleted" and bad["seq"] == exported_seq
    assert f"{anchored + 1} to {exported_seq}" in bad["detail"]


def test_mac_stripping_is_named_from_the_checkpoint(seeded: App) -> None:
    checkpoint(seeded)
    keyed_from = min(r["seq"] for r in rows(seeded) if r["row_mac"] is not None)
    lift_triggers(seeded)
    sql(seeded, "UPDATE audit_entries SET row_mac = NULL")
    code, report = verify(seeded)
    assert code == 1
    assert (report["first_bad"]["seq"], report["first_bad"]["problem"]) == (keyed_from, "inserted")


# --- an attacker who also holds the key files ---------------------------------------------------
def test_with_the_key_files_a_rewrite_is_found_only_against_an_exported_file(
    seeded: App, tmp_path: Path
) -> None:
    file = tmp_path / "outside.json"
    export(seeded, file)
    before = rows(seeded)
    i = 8
    changed = [{**before[i], "reason": "rewritten with the keys"}, *before[i + 1 :]]
    lift_triggers(seeded)
    lift_checkpoint_triggers(seeded)
    rechain(seeded, i, changed, mac_key=key_file(seeded))
    sql(seeded, "DELETE FROM audit_checkpoints")  # they could sign new ones too
    drop_ledgered_checkpoints(seeded, above=0)
    code, report = verify(seeded)
    assert code == 0, report
    code, report = verify(seeded, "--against", str(file))
    assert code == 1
    bad = report["first_bad"]
    assert bad["problem"] == "edited" and bad["seq"] == len(before)
    assert "after the file checkpoint" in bad["detail"]


# --- the checkpoints themselves -----------------------------------------------------------------
def test_a_forged_checkpoint_row_is_named(seeded: App) -> None:
    checkpoint(seeded)
    with seeded.engine.begin() as conn:  # INSERT only: the triggers allow it
        good = conn.execute(text("SELECT * FROM audit_checkpoints")).mappings().one()
        body = json.loads(good["body"])
        body["seq"] = body["seq"] + 100
        conn.execute(
            text(
                "INSERT INTO audit_checkpoints (seq, head_hash, at, body, key_id, signature) "
                "VALUES (:seq, :h, :at, :body, :k, :sig)"
            ),
            {
                "seq": body["seq"],
                "h": body["head_hash"],
                "at": good["at"],
                "body": json.dumps(body),
                "k": good["key_id"],
                "sig": good["signature"],
            },
        )
    code, report = verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert bad["entity_type"] == "audit_checkpoint" and bad["seq"] == body["seq"]
    assert "not signed by the control site" in bad["detail"]


def test_checkpoints_are_append_only(seeded: App) -> None:
    from sqlalchemy.exc import DBAPIError

    checkpoint(seeded)
    for statement in ("UPDATE audit_checkpoints SET seq = 1", "DELETE FROM audit_checkpoints"):
        with pytest.raises(DBAPIError, match="append-only"):
            sql(seeded, statement)


def test_an_altered_checkpoint_file_is_refused_naming_the_option(
    seeded: App, tmp_path: Path
) -> None:
    file = tmp_path / "outside.json"
    doc = export(seeded, file)
    doc["checkpoint"]["seq"] -= 1
    file.write_text(json.dumps(doc))
    code, report = verify(seeded, "--against", str(file))
    assert code == 2
    assert report["error"]["field"] == "against"
    assert "altered" in report["error"]["message"]


def test_the_checkpoint_is_signed_with_the_control_site_key_and_ledgered(
    seeded: App, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    doc = export(seeded, tmp_path / "cp.json")
    pem = (Path(seeded.settings.data_dir) / "keys" / "control_site_ed25519.pem").read_bytes()
    private = serialization.load_pem_private_key(pem, password=None)
    public = private.public_key()  # type: ignore[union-attr]
    body = doc["checkpoint"]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    public.verify(base64.b64decode(doc["checkpoint_signature"]), canonical.encode())  # type: ignore[union-attr]
    head = rows(seeded)[-1]
    assert (body["seq"], body["head_hash"]) == (head["seq"], head["row_hash"])
    with seeded.engine.connect() as conn:
        payloads = (
            conn.execute(text("SELECT payload FROM custody_ledger WHERE kind = 'audit_checkpoint'"))
            .scalars()
            .all()
        )
    assert any(json.loads(p)["body"]["checkpoint"] == body for p in payloads)


# --- the same finding through the API and the web page ------------------------------------------
def test_api_and_web_page_name_a_forged_row_and_the_unanchored_rows(seeded: App) -> None:
    import re

    from fastapi.testclient import TestClient

    from nearfab.web.server import create_web_app

    client = TestClient(create_web_app(seeded))
    r = client.post("/api/v1/auth/token", json={"username": AUDITOR, "password": fh.TEST_PASSWORD})
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    page = client.get("/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    client.post(
        "/login",
        data={"username": AUDITOR, "password": fh.TEST_PASSWORD, "csrf_token": csrf.group(1)},
    )
    checkpoint(seeded)
    add_rows(seeded, 2)
    report = client.get("/api/v1/audit/verify", headers=headers).json()
    assert report["ok"] and report["keyed"] and report["unanchored_rows"] == 2, report
    html = client.get("/audit/verify").text
    assert "intact" in html and "<b>2</b> row(s) after it are unanchored" in html
    # a forged row with a correct SHA-256, head moved (the triggers allow both)
    last = rows(seeded)[-1]
    forged = {**last, "seq": last["seq"] + 1, "entity_id": "B-FORGED", "old": None}
    row_hash = expected_hash(forged, last["row_hash"])
    with seeded.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_entries (seq, at, actor_id, actor_name, action, entity_type, "
                "entity_id, old, new, reason, site_id, prev_hash, row_hash) VALUES (:seq, :at, "
                ":actor_id, :actor_name, :action, :entity_type, :entity_id, NULL, :new, "
                ":reason, :site_id, :prev_hash, :row_hash)"
            ),
            {
                **{k: forged[k] for k in ("seq", "at", "actor_id", "actor_name", "action")},
                **{k: forged[k] for k in ("entity_type", "entity_id", "reason", "site_id")},
                "new": _json(forged["new"]),
                "prev_hash": last["row_hash"],
                "row_hash": row_hash,
            },
        )
        conn.execute(
            text("UPDATE audit_chain_head SET seq = :s, hash = :h"),
            {"s": forged["seq"], "h": row_hash},
        )
    report = client.get("/api/v1/audit/verify", headers=headers).json()
    assert not report["ok"]
    assert (report["first_bad"]["seq"], report["first_bad"]["problem"]) == (
        forged["seq"],
        "inserted",
    )
    html = client.get("/audit/verify").text
    assert "broken" in html and "B-FORGED" in html and "inserted" in html


def test_checkpoints_deleted_from_their_table_still_count_from_the_ledger(seeded: App) -> None:
    checkpoint(seeded)
    anchored = rows(seeded)[-1]["seq"]
    lift_triggers(seeded)
    lift_checkpoint_triggers(seeded)
    sql(seeded, "DELETE FROM audit_checkpoints")
    rechain(seeded, anchored - 2, [])
    code, report = verify(seeded)
    assert code == 1
    bad = report["first_bad"]
    assert bad["problem"] == "deleted" and bad["seq"] == anchored
    assert "ledger checkpoint" in bad["detail"]


def test_the_runner_takes_a_checkpoint_every_500_rows_or_5_minutes_of_change(
    seeded: App,
) -> None:
    """The documented rule (docs/audit-trail.md): after 500 new rows at once; otherwise once
    5 minutes have passed and the audit head or a ledger head moved; never when nothing did."""
    from nearfab.identity.services.audit import checkpoint_if_due

    def due() -> int | None:
        with seeded.uow() as uow:
            made = checkpoint_if_due(uow)
        return None if made is None else made.seq

    first = due()  # none yet: the first is taken at once
    assert first == rows(seeded)[-1]["seq"]
    assert due() is None  # nothing moved
    seeded.clock.advance(3600)  # type: ignore[attr-defined]
    assert due() is None  # an hour, but nothing moved (its own ledger entry is no change)
    add_rows(seeded, 3)
    assert due() == first + 3  # moved, and more than 5 minutes since the last
    add_rows(seeded, 3)
    assert due() is None  # moved, but less than 5 minutes and 500 rows
    seeded.clock.advance(5 * 60)  # type: ignore[attr-defined]
    assert due() == first + 6
    add_rows(seeded, 500)
    assert due() == first + 506  # 500 rows: at once
