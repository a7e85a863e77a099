"""Per-node keys (`nearfab node rekey`, identity/services/nodekeys.py, docs/audit-trail.md "Key
epochs"): a node's data folder starts as a copy of the control's, keys/ included; the rekey
gives it its own audit HMAC key and ticket/checkpoint signing key, and the audit chain still
verifies across the change.

The `seeded` folder plays the copied node: its keys are the seeding installation's (the
"control's"), kept here as bytes before the rekey. Expected fingerprints and MACs are computed
from the documented definitions (test_audit_forgery.expected_mac, sha256 below), not with the
application's functions; every rekey and verification goes through the real CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests import flow_helpers as fh
from tests.conftest import CLOCK_JUMPS
from tests.identity.test_audit_chain import lift_triggers, rows
from tests.identity.test_audit_forgery import add_rows, checkpoint, expected_mac, rechain
from typer.testing import CliRunner

from nearfab.bootstrap import App, build_app
from nearfab.cli.main import app as cli
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.identity.services.keys import KeyMismatch, check_platform_keys
from nearfab.production.tickets import SignedTicket, TicketRejected, verify_ticket

seeded = fh.seeded


def run(app: App, *args: str) -> tuple[int, dict[str, Any]]:
    """`nearfab <args> --json` on this app's data folder and database, through the real CLI."""
    result = CliRunner().invoke(
        cli,
        ["--data-dir", str(app.settings.data_dir), *args, "--json"],
        env={"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()},
    )
    return result.exit_code, json.loads(result.stdout)


def rekey(app: App, reason: str = "site node provisioned") -> dict[str, Any]:
    code, out = run(app, "node", "rekey", "--reason", reason)
    assert code == 0, out
    return out


def verify(app: App) -> dict[str, Any]:
    return run(app, "audit", "verify")[1]


def keys_dir(app: App) -> Path:
    return Path(app.settings.data_dir) / "keys"


def key_files(app: App) -> dict[str, bytes]:
    """Every file under keys/ (retired/ included), by its path there; not the (empty) lock."""
    folder = keys_dir(app)
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".rekey.lock"
    }


def fingerprint(key: bytes) -> str:
    """The documented fingerprint of an audit key: SHA-256 of "nearfab-audit-chain" + key,
    first 16 hex digits."""
    return hashlib.sha256(b"nearfab-audit-chain" + key).hexdigest()[:16]


def reopen(app: App, clock: ManualClock) -> App:
    """The node started again on its folder (build_app checks the platform keys)."""
    settings = Settings(
        data_dir=app.settings.data_dir,
        database_url=app.settings.resolved_database_url(),
        **CLOCK_JUMPS,
    )
    return build_app(settings, clock=clock, migrate=False)


def rekey_rows(app: App) -> list[dict[str, Any]]:
    return [
        r for r in rows(app) if (r["entity_type"], r["entity_id"]) == ("platform_key", "node_keys")
    ]


def loaded(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_the_rekeyed_node_holds_none_of_the_controls_keys_and_its_chain_verifies(
    seeded: App, clock: ManualClock
) -> None:
    control = key_files(seeded)
    control_mac = control["audit_chain.key"]
    control_pem = control["control_site_ed25519.pem"]
    add_rows(seeded, 3)
    checkpoint(seeded)  # signed with the control's key, before the rekey
    before = rows(seeded)
    out = rekey(seeded)

    after = key_files(seeded)
    for name, data in after.items():  # no copy of the control's secrets, under any name
        assert control_mac not in data, name
        assert control_pem.strip() not in data, name
    assert after["audit_chain.key"] != control_mac and len(after["audit_chain.key"]) == 32
    assert not any(name.startswith("retired/audit_chain") for name in after)
    assert "pending" not in {Path(n).parts[0] for n in after}

    # the rekey row: old and new fingerprints, the sealed head, MACed with the new key
    [row] = rekey_rows(seeded)
    new_key = after["audit_chain.key"]
    assert row["seq"] == len(before) + 1 == out["audit_seq"]
    assert loaded(row["old"])["audit_chain"] == fingerprint(control_mac) == out["old_audit_key"]
    assert loaded(row["new"])["audit_chain"] == fingerprint(new_key) == out["new_audit_key"]
    assert loaded(row["new"])["sealed_head"] == [before[-1]["seq"], before[-1]["row_hash"]]
    assert loaded(row["new"])["control_site_ed25519"] == out["new_signing_key"]
    assert loaded(row["old"])["control_site_ed25519"] == out["old_signing_key"]
    assert out["new_signing_key"] != out["old_signing_key"]
    assert row["row_mac"] == expected_mac(new_key, row)
    assert row["reason"] == "site node provisioned"

    # started again: check_platform_keys passes with the new keys, refuses the control's
    node = reopen(seeded, clock)
    try:
        fps = {"audit_chain": fingerprint(new_key), "control_site_ed25519": out["new_signing_key"]}
        check_platform_keys(node.session_factory, clock, fps)
        with pytest.raises(KeyMismatch):
            check_platform_keys(
                node.session_factory, clock, {"audit_chain": fingerprint(control_mac)}
            )
        add_rows(node, 2, entity_id="after-rekey")
        written = rows(node)[-2:]
        assert all(r["row_mac"] == expected_mac(new_key, r) for r in written)
        report = verify(node)
        assert report["ok"], report
        assert report["rows_checked"] == len(before) + 3
        # the control's rows: sealed by the rekey row, their MACs not checkable here
        assert report["sealed_rows"] == len(before)
        # the checkpoint the control's key signed before the rekey still anchors them
        assert report["checkpoint"]["key_id"] == out["old_signing_key"]
        assert report["anchored_seq"] == report["checkpoint"]["seq"] > 0
    finally:
        node.engine.dispose()


def test_a_row_macd_with_the_old_key_after_the_rekey_is_named(
    seeded: App, clock: ManualClock
) -> None:
    """`seeded`'s engine still holds the control's key (a process started before the rekey,
    or a forger with the control's key file): its row after the rekey is named."""
    rekey(seeded)
    add_rows(seeded, 1, entity_id="old-key")
    forged = rows(seeded)[-1]
    node = reopen(seeded, clock)
    try:
        report = verify(node)
    finally:
        node.engine.dispose()
    assert not report["ok"]
    assert report["first_bad"]["seq"] == forged["seq"]
    assert report["first_bad"]["problem"] == "edited"
    assert "MAC" in report["first_bad"]["detail"]


def test_a_sealed_row_rewritten_and_rechained_is_named_at_the_rekey_row(
    seeded: App, clock: ManualClock
) -> None:
    """Without the node's key: edit a row of the control's epoch and re-hash every row after
    it (the rekey row's MAC stays valid: it does not cover prev_hash): its sealed head names
    it."""
    rekey(seeded)
    node = reopen(seeded, clock)
    try:
        lift_triggers(node)
        before = rows(node)
        target = len(before) // 2
        changed = [dict(r) for r in before[target:]]
        changed[0]["reason"] = "rewritten after the rekey"
        rechain(node, target, changed)
        report = verify(node)
    finally:
        node.engine.dispose()
    assert not report["ok"]
    [rekey_row] = [r for r in before if r["entity_id"] == "node_keys"]
    assert report["first_bad"]["seq"] == rekey_row["seq"], report["first_bad"]
    assert "sealed" in report["first_bad"]["detail"]


def test_a_second_rekey_keeps_the_nodes_own_key_for_verification(
    seeded: App, clock: ManualClock
) -> None:
    control_mac = key_files(seeded)["audit_chain.key"]
    first = rekey(seeded)
    assert first["old_audit_key_kept"] is False
    node = reopen(seeded, clock)
    try:
        add_rows(node, 2, entity_id="first-epoch")
        own_key = key_files(node)["audit_chain.key"]
    finally:
        node.engine.dispose()
    second = rekey(seeded, "scheduled key change")
    assert second["old_audit_key"] == first["new_audit_key"] == fingerprint(own_key)
    assert second["old_audit_key_kept"] is True
    files = key_files(seeded)
    assert files[f"retired/audit_chain-{fingerprint(own_key)}.key"] == own_key
    assert all(control_mac not in data for data in files.values())
    assert len(rekey_rows(seeded)) == 2
    node = reopen(seeded, clock)
    try:
        add_rows(node, 1, entity_id="second-epoch")
        report = verify(node)
        assert report["ok"], report
        # only the control's rows are sealed: the first epoch's are checked with the kept key
        assert report["sealed_rows"] == rekey_rows(node)[0]["seq"] - 1
        # and an edit of a first-epoch row's MAC is named (its key is held)
        lift_triggers(node)
        mid = next(r for r in rows(node) if r["entity_id"] == "first-epoch")
        with node.engine.begin() as conn:
            conn.execute(
                text("UPDATE audit_entries SET row_mac = :m WHERE id = :i"),
                {"m": "0" * 64, "i": mid["id"]},
            )
        report = verify(node)
        assert not report["ok"] and report["first_bad"]["seq"] == mid["seq"]
    finally:
        node.engine.dispose()


def test_an_empty_reason_is_refused_naming_the_field(seeded: App) -> None:
    before = key_files(seeded)
    head = len(rows(seeded))
    code, out = run(seeded, "node", "rekey", "--reason", "   ")
    assert code == 2
    assert out["error"]["field"] == "reason"
    assert key_files(seeded) == before and len(rows(seeded)) == head


def test_a_broken_chain_is_not_sealed(seeded: App) -> None:
    lift_triggers(seeded)
    with seeded.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET reason = 'edited' WHERE seq = 3"))
    before = key_files(seeded)
    code, out = run(seeded, "node", "rekey", "--reason", "provisioned")
    assert code == 2 and out["error"]["field"] == "audit_trail", out
    assert key_files(seeded) == before


def test_the_nodes_machines_take_its_own_tickets_not_the_controls(
    seeded: App, clock: ManualClock
) -> None:
    control_public = seeded.signer.public_key_pem
    out = rekey(seeded)
    node = reopen(seeded, clock)
    try:
        assert node.signer.key_id == out["new_signing_key"]
        job_id = fh.ticketed_job(node)
        ticket = SignedTicket.from_dict(fh.job(node, job_id).ticket or {})
        assert ticket.key_id == out["new_signing_key"]
        with pytest.raises(TicketRejected):
            verify_ticket(
                ticket, control_public, machine_id=fh.job(node, job_id).machine_id, now=clock.now()
            )
        batch_id = fh.start(node, job_id)  # checked again at the start, then by the machine
        fh.finish(node, batch_id)
        with node.uow() as uow:
            assert node.production.get(uow, batch_id).status == "completed"
    finally:
        node.engine.dispose()


def test_an_interrupted_rekey_is_finished_or_dropped_at_the_next_start(
    seeded: App, clock: ManualClock
) -> None:
    """Keys moved into place after the commit: a crash in between leaves keys/pending/, which
    the next start installs (the database recorded them) or drops (it did not)."""
    folder = keys_dir(seeded)
    rekey(seeded)
    installed = key_files(seeded)
    # the commit happened, the move did not: put the new keys back in pending/, old in place
    pending = folder / "pending"
    pending.mkdir()
    for name in ("audit_chain.key", "control_site_ed25519.pem"):
        shutil.copyfile(folder / name, pending / name)
    (folder / "audit_chain.key").write_bytes(b"x" * 32)
    node = reopen(seeded, clock)
    node.engine.dispose()
    assert key_files(seeded) == installed
    # a rekey that did not commit: its pending keys are dropped, the folder's kept
    pending.mkdir()
    (pending / "audit_chain.key").write_bytes(b"y" * 32)
    shutil.copyfile(folder / "control_site_ed25519.pem", pending / "control_site_ed25519.pem")
    node = reopen(seeded, clock)
    node.engine.dispose()
    assert key_files(seeded) == installed


def test_demo_nodes_give_each_site_node_its_own_keys(tmp_path: Path) -> None:
    """`nearfab demo --nodes`'s provisioning (demo_nodes.prepare), real SQLite: each site node's
    folder is rekeyed, the control keeps its own keys; every node starts (its platform keys
    check) and its audit chain verifies; a site's machines get the site's public key."""
    from sqlalchemy import select

    from nearfab.demo_nodes import plan, prepare
    from nearfab.identity.services.audit import verify_chain
    from nearfab.scheduling import Job

    settings = Settings(data_dir=tmp_path, demo_password=fh.TEST_PASSWORD)
    nodes = plan(settings, 18080)
    prepare(settings, nodes, lambda _line: None)
    control_keys = nodes[0].folder / "keys"
    control_mac = (control_keys / "audit_chain.key").read_bytes()
    control_pem = (control_keys / "control_site_ed25519.pem").read_bytes()
    signing_ids: set[str] = set()
    for node in nodes:
        folder = node.folder / "keys"
        files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        site = node is not nodes[0]
        if site:
            for path, data in files.items():
                assert control_mac not in data, path
                assert control_pem.strip() not in data, path
        app = build_app(Settings(data_dir=node.folder, node_site=node.site_code), migrate=False)
        try:
            signing_ids.add(app.signer.key_id)
            assert app.fleet._public_key == app.signer.public_key_pem
            with app.engine.connect() as conn:
                report = verify_chain(conn)
            assert report.ok, report.first_bad
            assert (report.sealed_rows > 0) is site  # the control's rows, at a site node
            if site:  # a ticket in the copy was signed by the control: none is open there
                with app.uow() as uow:
                    site_id = app.network.get_site(uow, node.site_code).id
                    issued = uow.session.scalars(
                        select(Job.id).where(Job.site_id == site_id, Job.status == "ticket_issued")
                    ).all()
                assert issued == []
        finally:
            app.engine.dispose()
    assert len(signing_ids) == len(nodes)  # four nodes, four signing keys


def _insert_checkpoint(app: App, pem: bytes, seq: int, head_hash: str, at: Any) -> None:
    """A checkpoint signed with the private key `pem` (the control's), built from the documented
    body and signed here with `cryptography`, as the control would sign one of its own chain."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(raw).hexdigest()[:16]  # documented: tickets.key_id_of
    body = {
        "type": "nearfab.audit.checkpoint",
        "version": 1,
        "seq": seq,
        "head_hash": head_hash,
        "at": "2026-01-01T00:00:00+00:00",
        "keyed_from": 1,
        "ledger": {},
        "key_id": key_id,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = base64.b64encode(key.sign(canonical.encode())).decode()
    with app.engine.begin() as conn:  # INSERT only: the triggers allow it
        conn.execute(
            text(
                "INSERT INTO audit_checkpoints (seq, head_hash, at, body, key_id, signature) "
                "VALUES (:seq, :h, :at, :body, :k, :sig)"
            ),
            {
                "seq": seq,
                "h": head_hash,
                "at": at,
                "body": canonical,
                "k": key_id,
                "sig": signature,
            },
        )


def test_the_controls_key_vouches_here_only_for_the_checkpoints_it_had_signed_here(
    seeded: App, clock: ManualClock, tmp_path: Path
) -> None:
    """After the rekey the control's key goes on signing the control's chain, whose seqs go on
    from the copy's: a checkpoint it signs for a seq after the last it had signed here is not
    this chain's (named, not compared); one up to it, and a file exported before the rekey,
    still count."""
    control_pem = key_files(seeded)["control_site_ed25519.pem"]
    checkpoint(seeded)
    code, exported = run(
        seeded, "audit", "checkpoint", "export", "--out", str(tmp_path / "cp.json")
    )
    assert code == 0, exported
    add_rows(seeded, 2)  # rows the old key signed no checkpoint of
    before = rows(seeded)
    with seeded.engine.connect() as conn:
        last_signed = conn.execute(text("SELECT max(seq) FROM audit_checkpoints")).scalar_one()
    assert last_signed < before[-1]["seq"]
    rekey(seeded)
    node = reopen(seeded, clock)
    try:
        at = before[-1]["at"]
        inside = before[last_signed - 1]
        _insert_checkpoint(node, control_pem, inside["seq"], inside["row_hash"], at)
        report = verify(node)
        assert report["ok"], report
        code, against = run(node, "audit", "verify", "--against", str(tmp_path / "cp.json"))
        assert code == 0 and against["against"]["same_key"] is True, against
        beyond = before[-1]
        _insert_checkpoint(node, control_pem, beyond["seq"], beyond["row_hash"], at)
        report = verify(node)
    finally:
        node.engine.dispose()
    assert not report["ok"]
    bad = report["first_bad"]
    assert bad["entity_type"] == "audit_checkpoint" and bad["seq"] == beyond["seq"], bad


def test_a_start_during_a_rekey_is_refused_not_left_to_drop_its_keys(
    seeded: App, clock: ManualClock
) -> None:
    """A rekey in progress holds keys/.rekey.lock with its keys in keys/pending/: a worker
    starting then is refused, and the pending keys are left for the rekey to install."""
    import fcntl
    import os

    folder = keys_dir(seeded)
    pending = folder / "pending"
    pending.mkdir()
    (pending / "audit_chain.key").write_bytes(b"z" * 32)
    fd = os.open(folder / ".rekey.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what the rekey's process holds
        with pytest.raises(KeyMismatch, match="rekey is under way"):
            reopen(seeded, clock)
        assert (pending / "audit_chain.key").read_bytes() == b"z" * 32
    finally:
        os.close(fd)
    reopen(seeded, clock).engine.dispose()  # the lock released: the stale keys are dropped
    assert not pending.exists()


def test_a_rotation_at_the_control_can_keep_its_own_old_key(
    seeded: App, clock: ManualClock
) -> None:
    """At an installation whose key is its own (the control), `--keep-old-key` keeps it under
    keys/retired/: every row, before the rekey too, is MAC-checked (none sealed)."""
    original = key_files(seeded)["audit_chain.key"]
    code, out = run(seeded, "node", "rekey", "--reason", "yearly rotation", "--keep-old-key")
    assert code == 0 and out["old_audit_key_kept"] is True, out
    assert key_files(seeded)[f"retired/audit_chain-{fingerprint(original)}.key"] == original
    node = reopen(seeded, clock)
    try:
        add_rows(node, 1, entity_id="after-rotation")
        report = verify(node)
        assert report["ok"] and report["sealed_rows"] == 0, report
        # a pre-rotation row's MAC spoiled: named, since its key is held
        lift_triggers(node)
        with node.engine.begin() as conn:
            conn.execute(
                text("UPDATE audit_entries SET row_mac = :m WHERE seq = 2"), {"m": "0" * 64}
            )
        report = verify(node)
        assert not report["ok"] and report["first_bad"]["seq"] == 2, report["first_bad"]
    finally:
        node.engine.dispose()
