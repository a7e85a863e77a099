"""Any record exported with its audit trail and signatures (EU GMP Annex 11 §8, 21 CFR
11.10(b)): JSON (the complete electronic copy) and PDF (human-readable, changed fields marked,
Annex 11 §8.2), through the API, the CLI and the review screens; site-scoped. Runs on SQLite
and PostgreSQL."""

from __future__ import annotations

import base64
import json
import re
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from tests import flow_helpers as fh
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.common.errors import Forbidden
from nearfab.materials import MaterialLot
from nearfab.production import BatchRecord
from nearfab.quality import ReleaseReview
from nearfab.recordexport import export_record
from nearfab.web.server import create_web_app

seeded = fh.seeded


# --- reading a PDF's text (no PDF library in the environment: decode its content streams) ----
def _unescape(s: bytes) -> str:
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i]
        if c == 0x5C and i + 1 < len(s):  # backslash
            n = s[i + 1]
            if 0x30 <= n <= 0x37:
                digits = re.match(rb"[0-7]{1,3}", s[i + 1 : i + 4])
                assert digits is not None
                out.append(int(digits.group(), 8))
                i += 1 + len(digits.group())
                continue
            out.append({ord("n"): 10, ord("r"): 13, ord("t"): 9}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return out.decode("cp1252", errors="replace")


def pdf_text(data: bytes) -> str:
    """The text shown on the pages: every string drawn by Tj / TJ, in order, words spaced."""
    assert data.startswith(b"%PDF-")
    shown: list[str] = []
    for header, body in re.findall(rb"<<(.*?)>>\s*stream\r?\n(.*?)endstream", data, re.S):
        if b"ASCII85Decode" in header:
            body = base64.a85decode(body.strip().removesuffix(b"~>"), adobe=False)
        if b"FlateDecode" in header:
            body = zlib.decompress(body)
        for lit in re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", body, re.S):
            shown.append(_unescape(lit))
        for arr in re.findall(rb"\[(.*?)\]\s*TJ", body, re.S):
            shown.append("".join(_unescape(x) for x in re.findall(rb"\(((?:[^()\\]|\\.)*)\)", arr)))
    return re.sub(r"\s+", " ", " ".join(shown))


# --- a world with a released batch, a lot put on hold -----------------------------------------
def token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _build_world(seeded: App) -> dict[str, str]:
    batch_id = fh.make_batch(seeded)
    fh.release(seeded, batch_id, reason="all checks passed")
    qp = fh.actor(seeded, "qp")
    with seeded.uow() as uow:
        lot = uow.session.scalars(
            select(MaterialLot)
            .where(
                MaterialLot.status == "approved",
                MaterialLot.site_id == fh.site_id(seeded, "GSTT-PH"),
            )
            .order_by(MaterialLot.id)
        ).first()
        assert lot is not None
        lot_id = lot.id
    with seeded.uow() as uow:
        seeded.materials.set_status(uow, qp, lot_id, "on_hold", reason="supplier complaint 42")
    with seeded.uow() as uow:
        batch = uow.session.get(BatchRecord, batch_id)
        assert batch is not None
        review = uow.session.scalar(select(ReleaseReview).where(ReleaseReview.batch_id == batch_id))
        assert review is not None
        ids = {
            "batch": batch_id,
            "order": batch.order_id,
            "release_review": review.id,
            "material_lot": lot_id,
            "master_file": batch.master_file_id,
        }
    return ids


built_world = fh.world_fixture(_build_world)  # built once per backend and worker, copied


@pytest.fixture
def world(built_world: fh.Built) -> dict[str, Any]:
    app = built_world.app
    return {"app": app, "client": TestClient(create_web_app(app)), "ids": built_world.data}


def export(w: dict[str, Any], kind: str, fmt: str, user: str = "auditor") -> Any:
    client: TestClient = w["client"]
    r = client.get(
        f"/api/v1/records/{kind}/{w['ids'][kind]}/export",
        params={"format": fmt},
        headers=token(client, user),
    )
    assert r.status_code == 200, r.text
    assert f"{kind}-{w['ids'][kind]}.{fmt}" in r.headers["content-disposition"]
    return r.json() if fmt == "json" else r.content


def db_rows(app: App, kind: str, ident: str) -> list[dict[str, Any]]:
    with app.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT seq, row_hash, action, reason FROM audit_entries "
                "WHERE entity_type = :t AND entity_id = :i ORDER BY seq"
            ),
            {"t": kind, "i": ident},
        ).mappings()
        return [dict(r) for r in found]


# --- JSON: the electronic copy ----------------------------------------------------------------
@pytest.mark.parametrize(
    "kind", ["batch", "order", "master_file", "material_lot", "release_review"]
)
def test_annex11_s8_1_json_copy_has_content_trail_and_signatures(
    world: dict[str, Any], kind: str
) -> None:
    app: App = world["app"]
    doc = export(world, kind, "json")
    ident = world["ids"][kind]
    assert (doc["entity_type"], doc["entity_id"]) == (kind, ident)
    assert doc["content"]["id"] == ident
    assert doc["exported_by"]["name"] == "Aud Itor" and doc["exported_at"].endswith("+00:00")
    want = db_rows(app, kind, ident)
    assert want, f"{kind} has an audit trail"
    got = [
        {"seq": e["seq"], "row_hash": e["row_hash"], "action": e["action"], "reason": e["reason"]}
        for e in doc["audit_trail"]
    ]
    assert got == want
    assert all(e["at"].endswith("+00:00") for e in doc["audit_trail"])
    if kind in ("batch", "master_file", "release_review"):
        assert doc["signatures"], f"{kind} carries a signature"
    for sig in doc["signatures"]:
        assert sig["printed_name"] and sig["meaning"] and sig["signed_at"].endswith("+00:00")
        assert re.fullmatch(r"[0-9a-f]{64}", sig["record_hash"])
        assert sig["valid_for_current_content"] is True


def test_11_10_b_secrets_are_never_exported(world: dict[str, Any]) -> None:
    app: App = world["app"]
    qp = fh.actor(app, "qp")
    client: TestClient = world["client"]
    r = client.get(
        f"/api/v1/records/user/{qp.user_id}/export",
        params={"format": "json"},
        headers=token(client, "admin"),
    )
    assert r.status_code == 200, r.text
    assert "password_hash" not in r.json()["content"] and "argon2" not in r.text


def test_11_10_b_export_says_when_a_signature_no_longer_matches_the_record(
    world: dict[str, Any],
) -> None:
    app: App = world["app"]
    fh.edit(app, BatchRecord, world["ids"]["batch"], material_used_g=999.0)
    doc = export(world, "batch", "json")
    qp_sigs = [s for s in doc["signatures"] if s["record_type"] == "batch"]
    assert qp_sigs and qp_sigs[-1]["valid_for_current_content"] is False
    pdf = pdf_text(export(world, "batch", "pdf"))
    assert "NO: record changed after signing" in pdf


def test_annex11_s8_2_changed_fields_are_marked_with_who_when_why_and_old_value(
    world: dict[str, Any],
) -> None:
    doc = export(world, "material_lot", "json")
    (change,) = [c for c in doc["changed_fields"]["status"] if c["new"] == "on_hold"]
    assert change["old"] == "approved" and change["reason"] == "supplier complaint 42"
    assert change["by"] == "Quentin Parr (QP)" and change["at"].endswith("+00:00")
    pdf = pdf_text(export(world, "material_lot", "pdf"))
    assert "status [CHANGED]" in pdf
    assert "by Quentin Parr (QP): was approved, now on_hold; why: supplier complaint 42" in pdf
    assert "lot_number" in pdf and "lot_number [CHANGED]" not in pdf  # never changed: unmarked


def test_11_50_pdf_shows_the_signature_manifestation(world: dict[str, Any]) -> None:
    app: App = world["app"]
    with app.engine.connect() as conn:
        sig = conn.execute(
            text(
                "SELECT signer_name, meaning, signed_at FROM signatures "
                "WHERE record_type = 'batch' AND record_id = :b"
            ),
            {"b": world["ids"]["batch"]},
        ).one()
    pdf = pdf_text(export(world, "batch", "pdf"))
    assert "Electronic signatures" in pdf
    assert sig.signer_name in pdf and sig.meaning in pdf
    assert " UTC" in pdf and "yes" in pdf
    assert "Audit trail" in pdf and "all checks passed" in pdf


# --- who may export -----------------------------------------------------------------------------
def test_annex11_s8_export_is_site_scoped_and_role_checked(world: dict[str, Any]) -> None:
    app: App = world["app"]
    client: TestClient = world["client"]
    url = f"/api/v1/records/batch/{world['ids']['batch']}/export"
    assert client.get(url, headers=token(client, "pharmacist")).status_code == 200  # GSTT-PH
    # a pharmacist of another site
    pharmacist = fh.actor(app, "pharmacist")
    elsewhere = replace(pharmacist, user_id="usr_other", site_id=fh.site_id(app, "MAN-PH"))
    for kind in ("batch", "order", "material_lot", "release_review"):
        with pytest.raises(Forbidden) as caught, app.uow() as uow:
            export_record(app, uow, elsewhere, kind, world["ids"][kind], "json")
        assert caught.value.code == "other_site"
    with app.uow() as uow:  # a master file belongs to the network, not to a site
        export_record(app, uow, elsewhere, "master_file", world["ids"]["master_file"], "json")
    assert client.get(url, headers=token(client, "operator")).status_code == 403
    assert client.get(url).status_code == 401
    missing = client.get("/api/v1/records/batch/nope/export", headers=token(client, "auditor"))
    assert missing.status_code == 404
    bad = client.get(url, params={"format": "xls"}, headers=token(client, "auditor"))
    assert bad.status_code == 422


def test_api_record_trail_and_site_review(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    h = token(client, "auditor")
    ident = world["ids"]["material_lot"]
    r = client.get(f"/api/v1/records/material_lot/{ident}/audit", headers=h)
    assert r.status_code == 200
    trail = r.json()["audit_trail"]
    assert trail[-1]["old"] == {"status": "approved"} and trail[-1]["new"]["status"] == "on_hold"
    r = client.get(
        "/api/v1/audit",
        params={"entity_type": "material_lot", "entity_id": ident, "limit": 1},
        headers=h,
    )
    assert r.status_code == 200
    page = r.json()
    assert page["total"] == len(trail) and len(page["items"]) == 1
    assert page["items"][0]["seq"] == trail[-1]["seq"]  # newest first
    v = client.get("/api/v1/audit/verify", headers=h)
    assert v.status_code == 200 and v.json()["ok"] is True
    assert client.get("/api/v1/audit/verify", headers=token(client, "operator")).status_code == 403


# --- the CLI -----------------------------------------------------------------------------------
def test_cli_exports_json_and_pdf(world: dict[str, Any], tmp_path: Path) -> None:
    app: App = world["app"]
    env = {"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()}
    base = ["--data-dir", str(app.settings.data_dir), "audit", "export"]
    runner = CliRunner()
    out_json, out_pdf = tmp_path / "batch.json", tmp_path / "batch.pdf"
    batch_id = world["ids"]["batch"]
    r = runner.invoke(cli, [*base, "batch", batch_id, "--out", str(out_json)], env=env)
    assert r.exit_code == 0, r.output
    doc = json.loads(out_json.read_text())
    assert doc["entity_id"] == batch_id and doc["signatures"]
    args = [*base, "batch", batch_id, "--format", "pdf", "--out", str(out_pdf)]
    r = runner.invoke(cli, args, env=env)
    assert r.exit_code == 0, r.output
    assert doc["signatures"][0]["printed_name"] in pdf_text(out_pdf.read_bytes())
    r = runner.invoke(cli, [*base, "batch", "nope", "--out", str(tmp_path / "x")], env=env)
    assert r.exit_code == 2
    # `nearfab audit TYPE ID` is still the record's trail
    r = runner.invoke(
        cli,
        ["--data-dir", str(app.settings.data_dir), "audit", "batch", batch_id, "--json"],
        env=env,
    )
    assert r.exit_code == 0, r.output
    assert [e["seq"] for e in json.loads(r.stdout)] == [
        e["seq"] for e in db_rows(app, "batch", batch_id)
    ]
