"""`nearfab node keys export` / `import`: a site node's ledger public keys registered at the
control after the fact (docs/replication.md, "Signatures"), and `node inbox anchor` refusing an
origin signed by keys the control does not hold unless `--allow-unverified`.

Two real nodes (test_replication_mqtt.nodes: each its own copy of the seeded network). The
site signs with a key it makes after its copy, one the control never saw. What the site holds
(its keys, its signed entries) is read from its own tables; the refusals' expected wording is
the use case's documented contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.cli_helpers import run
from tests.replication.test_node_page import row_of
from tests.replication.test_replication_mqtt import nodes, repl, some_work

from nearfab.bootstrap import App
from nearfab.common.errors import NotFound, Refused, ValidationFailed
from nearfab.custody import (
    LedgerEntry,
    SiteKey,
    export_site_keys,
    import_site_keys,
    parse_site_keys,
)
from nearfab.identity import AuditEntry, system_actor
from nearfab.network.reads import sites
from nearfab.replication.services import ANCHOR_ENTITY

__all__ = ["nodes"]

SITE = {"NEARFAB_NODE_SITE": "GSTT-PH"}
CONTROL = {"NEARFAB_NODE_SITE": "CTRL"}
ADMIN = system_actor("provisioning")


def folder(app: App) -> Path:
    return Path(app.settings.data_dir)


def site_keys(site: App) -> list[tuple[str, str, bytes]]:
    """(key id, site id, raw public key) of the site's own keys, from its own table."""
    with site.uow() as uow:
        rows = uow.session.execute(
            select(SiteKey.key_id, SiteKey.site_id, SiteKey.public_key)
            .where(SiteKey.site_id == repl(site).site_id)
            .order_by(SiteKey.created_at)
        ).all()
    return [(k, s, bytes(p)) for k, s, p in rows]


def signed_entries(site: App) -> int:
    with site.uow() as uow:
        return int(
            uow.session.scalar(
                select(func.count())
                .select_from(LedgerEntry)
                .where(LedgerEntry.site_id == repl(site).site_id, LedgerEntry.signature != "")
            )
            or 0
        )


def received_at_control(site: App, control: App) -> str:
    """The site's records applied at the control, as the inbox would; the site's id."""
    with site.uow() as uow:
        repl(site).capture_now(uow)
    with site.uow() as uow:
        records = repl(site).pending(uow, 100_000)
    with control.uow() as uow:
        assert repl(control).apply(uow, [r.to_message() for r in records]).problems == []
    return repl(site).site_id


def audit_rows(app: App, entity: str) -> list[AuditEntry]:
    with app.uow() as uow:
        rows = list(
            uow.session.scalars(
                select(AuditEntry).where(AuditEntry.entity_type == entity).order_by(AuditEntry.seq)
            )
        )
        uow.session.expunge_all()
    return rows


def node_page_status(control: App, code: str) -> str:
    """The last cell of the origin's row on the control's node page, as a control QA reads it."""
    page = fh.web_login(control, "auditor").get("/node")
    assert page.status_code == 200
    return " ".join(row_of(page.text, code)[-1].split())


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def document(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"format": "nearfab-site-keys/1", "keys": list(keys)}


def key_row(key_id: str, site_id: str, public: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "key_id": key_id,
        "site_id": site_id,
        "public_key": public.hex(),
        "created_at": "2026-12-07T09:00:00+00:00",
        "retired_at": None,
        **extra,
    }


def test_a_site_key_the_control_lacks_blocks_the_anchor_until_it_is_registered(
    nodes: tuple[App, App],
) -> None:
    site, control = nodes
    some_work(site, 3)  # three entries signed with the key the site made after its copy
    with site.uow() as uow:
        site.custody_chain.ledger.rotate(uow, ADMIN, repl(site).site_id, reason="yearly")
    some_work(site, 2)  # and two with the next one
    mine = site_keys(site)
    assert len(mine) == 2
    origin = received_at_control(site, control)

    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.unverified_keys == [k for k, _, _ in mine]
    with control.uow() as uow:
        result = repl(control).anchor(uow, system_actor("replication"))
    assert result["anchored"] == {}
    # the node page does not call the origin complete: it names both keys (first and newest)
    status_cell = node_page_status(control, "GSTT-PH")
    assert status_cell.startswith("Needs QA: signed by keys this node does not hold")
    assert f"({mine[0][0]}, {mine[1][0]})" in status_cell
    assert result["refused"][origin].startswith(
        f"{origin}: signed by keys this node does not hold: {mine[0][0]}, {mine[1][0]}"
    )
    assert audit_rows(control, ANCHOR_ENTITY) == []

    # exported at the site: its keys as its table holds them, no private half
    with site.uow() as uow:
        exported = export_site_keys(uow.session, origin)
    assert exported["site_id"] == origin and exported["site_code"] == "GSTT-PH"
    assert [
        (k["key_id"], k["site_id"], bytes.fromhex(k["public_key"])) for k in exported["keys"]
    ] == (mine)
    assert all(
        set(k) == {"key_id", "site_id", "public_key", "created_at", "retired_at"}
        for k in exported["keys"]
    )
    assert exported["keys"][0]["retired_at"] is not None  # the rotation replaced it
    assert exported["keys"][1]["retired_at"] is None
    text = json.dumps(exported)  # what travels (JSON): registered from its text
    with control.uow() as uow:
        done = import_site_keys(
            uow, ADMIN, parse_site_keys(json.loads(text)), own_site_id=repl(control).site_id,
            reason="GSTT-PH's node keys, checked by phone with the site",
        )  # fmt: skip
    assert done.registered == [k for k, _, _ in mine] and done.already_held == []

    # held at the control as the site's public keys, never a private half; one audit row each
    with control.uow() as uow:
        held = {
            k.key_id: (k.site_id, bytes(k.public_key), bytes(k.private_key_encrypted))
            for k in uow.session.scalars(select(SiteKey).where(SiteKey.site_id == origin))
        }
    assert {k: held[k] for k, _, _ in mine} == {k: (s, p, b"") for k, s, p in mine}
    rows = [r for r in audit_rows(control, "ledger_key") if r.entity_id in held]
    assert [(r.entity_id, r.action, r.actor_id) for r in rows] == [
        (k, "create", "system:provisioning") for k, _, _ in mine
    ]
    assert all(r.reason == "GSTT-PH's node keys, checked by phone with the site" for r in rows)
    assert all(r.new and r.new["imported"] and r.new["site_id"] == origin for r in rows)
    # no certificate checked: the rows say the keys were taken on the word of who ran it
    assert all(r.new and r.new["trust"] == {"basis": "on_word", "by": ADMIN.user_id} for r in rows)

    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.unverified_keys == []
    assert status.signatures_verified == signed_entries(site)
    assert node_page_status(control, "GSTT-PH") == "Complete"
    with control.uow() as uow:
        result = repl(control).anchor(uow, system_actor("replication"))
    assert result["refused"] == {}
    body = result["anchored"][origin]
    assert body["unverified_keys"] == [] and body["allowed_unverified"] is False

    # the same import again changes nothing
    before = len(audit_rows(control, "ledger_key"))
    with control.uow() as uow:
        again = import_site_keys(
            uow, ADMIN, parse_site_keys(exported), own_site_id=repl(control).site_id, reason="again"
        )
    assert again.registered == [] and again.already_held == [k for k, _, _ in mine]
    assert len(audit_rows(control, "ledger_key")) == before


def test_the_cli_exports_imports_and_anchors_unverified_only_when_told(
    nodes: tuple[App, App], tmp_path: Path
) -> None:
    site, control = nodes
    some_work(site, 2)
    (key_id, _, public), *_ = site_keys(site)
    origin = received_at_control(site, control)

    refused = run(["node", "inbox", "anchor"], env=CONTROL, data_dir=folder(control))
    assert refused.returncode == 1
    assert f"not anchored {origin}" in refused.stdout and key_id in refused.stdout

    allowed = run(
        ["node", "inbox", "anchor", "--allow-unverified"], env=CONTROL, data_dir=folder(control)
    )
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "with signatures by keys this node does not hold, unchecked" in allowed.stdout
    (anchor,) = audit_rows(control, ANCHOR_ENTITY)
    assert anchor.entity_id == origin and anchor.new is not None
    assert anchor.new["unverified_keys"] == [key_id] and anchor.new["allowed_unverified"] is True
    assert anchor.reason and "--allow-unverified" in anchor.reason

    exported = run(["node", "keys", "export"], env=SITE, data_dir=folder(site))
    assert exported.returncode == 0, exported.stderr
    shown = json.loads(exported.stdout)
    assert [(k["key_id"], k["public_key"]) for k in shown["keys"]] == [(key_id, public.hex())]
    path = tmp_path / "gstt-keys.json"
    path.write_text(exported.stdout)
    # a plain export (no certificate binds it to the site): refused unless taken on word
    # (certified exports: test_key_certificates.py)
    plain = run(
        ["node", "keys", "import", str(path), "--reason", "site key"],
        env=CONTROL,
        data_dir=folder(control),
    )
    assert plain.returncode == 2 and "certificate_missing" in plain.stderr
    assert [r for r in audit_rows(control, "ledger_key") if r.entity_id == key_id] == []
    imported = run(
        ["node", "keys", "import", str(path), "--reason", "site key", "--trust-on-word", "--json"],
        env=CONTROL,
        data_dir=folder(control),
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert json.loads(imported.stdout) == {"registered": [key_id], "already_held": []}
    (row,) = [r for r in audit_rows(control, "ledger_key") if r.entity_id == key_id]
    assert row.actor_id.startswith("system:cli:")
    assert row.new is not None and row.new["trust"] == {"basis": "on_word", "by": row.actor_id}

    # the control's own site's keys are made there, never taken from a file
    own = tmp_path / "own.json"
    own.write_text(json.dumps(document(key_row("lk_own", repl(control).site_id, public))))
    at_control = run(
        ["node", "keys", "import", str(own), "--reason", "x", "--trust-on-word"],
        env=CONTROL,
        data_dir=folder(control),
    )
    assert at_control.returncode == 2 and "own_site_key" in at_control.stderr


def test_an_import_is_refused_whole_for_a_taken_key_id_or_the_own_site(
    nodes: tuple[App, App],
) -> None:
    _, control = nodes
    control_id = repl(control).site_id
    with control.uow() as uow:
        ids = {s.code: s.id for s in sites(uow.session)}
    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()

    def count() -> tuple[int, int]:
        with control.uow() as uow:
            keys = uow.session.scalar(select(func.count()).select_from(SiteKey)) or 0
        return int(keys), len(audit_rows(control, "ledger_key"))

    def attempt(*rows: dict[str, Any]) -> None:
        with control.uow() as uow:
            import_site_keys(
                uow, ADMIN, parse_site_keys(document(*rows)), own_site_id=control_id, reason="r"
            )

    attempt(key_row("lk_one", ids["GSTT-PH"], raw(k1)))
    start = count()

    # a key id already held as another key: refused, and the good key beside it is not kept
    with pytest.raises(Refused) as taken:
        attempt(
            key_row("lk_two", ids["GSTT-PH"], raw(k2)), key_row("lk_one", ids["GSTT-PH"], raw(k2))
        )
    assert taken.value.code == "key_id_taken" and taken.value.field == "key_id"
    assert "lk_one" in taken.value.message
    # the same key under another site's name: taken as well
    with pytest.raises(Refused) as other:
        attempt(key_row("lk_one", ids["MAN-PH"], raw(k1)))
    assert other.value.code == "key_id_taken"
    # two different keys under one id in the same import
    with pytest.raises(Refused):
        attempt(key_row("lk_3", ids["MAN-PH"], raw(k1)), key_row("lk_3", ids["MAN-PH"], raw(k2)))
    # a key of this node's own site
    with pytest.raises(Refused) as own:
        attempt(key_row("lk_4", control_id, raw(k2)))
    assert own.value.code == "own_site_key" and own.value.field == "site_id"
    # a site this network does not have
    with pytest.raises(NotFound) as nowhere:
        attempt(key_row("lk_5", "site_nowhere", raw(k2)))
    assert nowhere.value.field == "site_id"
    assert count() == start  # nothing half-written

    # malformed documents name the field
    bad: list[tuple[dict[str, Any], str]] = [
        ({"keys": []}, "format"),
        (document(key_row("lk_6", ids["MAN-PH"], b"\x01" * 31)), "keys[0].public_key"),
        (document(key_row("lk_6", ids["MAN-PH"], raw(k2), created_at="yesterday")),
         "keys[0].created_at"),
        (document(key_row("lk_6", ids["MAN-PH"], raw(k2), created_at="2026-12-07T09:00:00")),
         "keys[0].created_at"),
        (document(key_row("", ids["MAN-PH"], raw(k2))), "keys[0].key_id"),
        (document(key_row("x" * 33, ids["MAN-PH"], raw(k2))), "keys[0].key_id"),
    ]  # fmt: skip
    for doc, field in bad:
        with pytest.raises(ValidationFailed) as invalid:
            parse_site_keys(doc)
        assert invalid.value.field == field, (doc, invalid.value)
    with pytest.raises(ValidationFailed) as no_reason, control.uow() as uow:
        import_site_keys(uow, ADMIN, [], own_site_id=control_id, reason=" ")
    assert no_reason.value.field == "reason"
    assert count() == start
