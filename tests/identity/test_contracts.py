"""One shape for what an inspector sees (issue 18 item 10): a signature (21 CFR 11.50: printed
name, date and time with zone, meaning; 11.70: what it binds) and an audit row (EU GMP Annex 11
§9, 21 CFR 11.10(e): who, what, when, old and new values, why) are the same keys and values on
the API, the batch record, the CLI `--json` and the JSON and PDF exports; one e-signature input.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from tests import flow_helpers as fh
from tests.identity.test_record_export import pdf_text
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.web.server import create_web_app

seeded = fh.seeded

# 21 CFR 11.50 (printed name, date and time, meaning) and 11.70 (the record and hashes it binds)
SIGNATURE_KEYS = {
    "id",
    "signer_id",
    "printed_name",
    "meaning",
    "signed_at",
    "signed_at_display",
    "time_zone",
    "record_type",
    "record_id",
    "record_hash",
    "signature_hash",
    "components",
    "valid_for_current_content",
}
# Annex 11 §9: who (id and name), what, when, the record, old and new value, why; and the chain
AUDIT_KEYS = {
    "id",
    "seq",
    "at",
    "actor_id",
    "actor",
    "action",
    "entity_type",
    "entity_id",
    "old",
    "new",
    "reason",
    "site_id",
    "prev_hash",
    "row_hash",
}
MEANING = "QP certification: batch released"  # what flow_helpers.release signs with


def _token(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _cli(app: App, *args: str) -> Any:
    env = {"NEARFAB_DATABASE_URL": app.settings.resolved_database_url()}
    base = ["--data-dir", str(app.settings.data_dir)]
    # the local system user (a named user's password ages by the real clock, the app's is fixed)
    r = CliRunner().invoke(cli, [*base, *args], env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _db_signatures(app: App, batch_id: str) -> list[dict[str, Any]]:
    with app.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT id, signer_id, signer_name, meaning, record_type, record_id, record_hash,"
                " signature_hash FROM signatures WHERE record_type = 'batch' AND record_id = :i"
                " ORDER BY signed_at"
            ),
            {"i": batch_id},
        ).mappings()
        return [dict(r) for r in found]


def _db_trail(app: App, batch_id: str) -> list[dict[str, Any]]:
    with app.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT id, seq, actor_id, actor_name, action, reason, prev_hash, row_hash"
                " FROM audit_entries WHERE entity_type = 'batch' AND entity_id = :i ORDER BY seq"
            ),
            {"i": batch_id},
        ).mappings()
        return [dict(r) for r in found]


def test_signature_and_audit_rows_are_the_same_everywhere(seeded: App, tmp_path: Path) -> None:
    app = seeded
    batch_id = fh.make_batch(app)
    fh.release(app, batch_id, reason="all checks passed")
    client = TestClient(create_web_app(app))
    auditor, qp = _token(client, "auditor"), _token(client, "qp")

    # the API: the record review, its JSON export, the batch record, the audit search
    api = client.get(f"/api/v1/records/batch/{batch_id}/audit", headers=auditor)
    assert api.status_code == 200, api.text
    record = api.json()
    r = client.get(
        f"/api/v1/records/batch/{batch_id}/export", params={"format": "json"}, headers=auditor
    )
    assert r.status_code == 200, r.text
    exported = r.json()
    r = client.get(f"/api/v1/batches/{batch_id}", headers=qp)
    assert r.status_code == 200, r.text
    batch_view = r.json()
    r = client.get(
        "/api/v1/audit",
        params={"entity_type": "batch", "entity_id": batch_id, "limit": 500},
        headers=auditor,
    )
    assert r.status_code == 200, r.text
    searched = sorted(r.json()["items"], key=lambda e: e["seq"])
    r = client.get(f"/api/v1/batches/{batch_id}/audit-trail", headers=auditor)
    assert r.status_code == 200, r.text
    batch_trail = [e for e in r.json()["rows"] if e["entity_type"] == "batch"]

    # the CLI: the record (--full --json), its trail (--json), the audit search, the export file
    cli_full = _cli(app, "audit", "show", "batch", batch_id, "--json", "--full")
    cli_trail = _cli(app, "audit", "batch", batch_id, "--json")
    listed = _cli(app, "audit", "list", "--type", "batch", "--limit", "500", "--json")
    cli_listed = sorted(
        (e for e in listed["items"] if e["entity_id"] == batch_id), key=lambda e: e["seq"]
    )
    out = tmp_path / "batch.json"
    _cli(app, "audit", "export", "batch", batch_id, "--out", str(out), "--json")
    cli_export = json.loads(out.read_text())

    # the signature: what the database holds, with the 11.50 manifestation, the same everywhere
    [want] = _db_signatures(app, batch_id)
    sigs = record["signatures"]
    [qp_sig] = [s for s in sigs if s["id"] == want["id"]]
    assert set(qp_sig) == SIGNATURE_KEYS
    assert qp_sig["printed_name"] == want["signer_name"] == "Quentin Parr (QP)"
    assert qp_sig["signer_id"] == want["signer_id"] == fh.actor(app, "qp").user_id
    assert qp_sig["meaning"] == want["meaning"] == MEANING
    assert (qp_sig["record_type"], qp_sig["record_id"]) == ("batch", batch_id)
    assert qp_sig["record_hash"] == want["record_hash"]
    assert qp_sig["signature_hash"] == want["signature_hash"]
    assert qp_sig["signed_at"].endswith("+00:00") and qp_sig["time_zone"] == "UTC"
    assert qp_sig["signed_at_display"].endswith(" UTC")
    assert qp_sig["valid_for_current_content"] is True  # released, nothing changed since
    for shown in (exported, cli_full, cli_export):
        assert shown["signatures"] == sigs
    assert batch_view["signatures"] == [s for s in sigs if s["record_type"] == "batch"]

    # the audit rows: what the database holds, the same keys and values everywhere
    trail = record["audit_trail"]
    db = _db_trail(app, batch_id)
    assert [(e["id"], e["seq"], e["row_hash"], e["prev_hash"]) for e in trail] == [
        (d["id"], d["seq"], d["row_hash"], d["prev_hash"]) for d in db
    ]
    assert [(e["actor_id"], e["actor"], e["action"], e["reason"]) for e in trail] == [
        (d["actor_id"], d["actor_name"], d["action"], d["reason"]) for d in db
    ]
    assert trail, "the released batch has no audit trail"
    assert all(set(e) == AUDIT_KEYS and e["at"].endswith("+00:00") for e in trail)
    for rows in (
        exported["audit_trail"],
        cli_full["audit_trail"],
        cli_export["audit_trail"],
        cli_trail,
        searched,
        cli_listed,
        batch_trail,
        batch_view["audit"],
    ):
        assert rows == trail

    # the human-readable copy shows the same signer (printed name and user id)
    r = client.get(
        f"/api/v1/records/batch/{batch_id}/export", params={"format": "pdf"}, headers=auditor
    )
    assert r.status_code == 200
    shown_pdf = pdf_text(r.content)
    assert "Quentin Parr (QP)" in shown_pdf and qp_sig["signer_id"] in shown_pdf

    # the record review page renders the same dicts: every signature and every row of the trail
    web = fh.web_login(app, "auditor")
    html = web.get(f"/audit/records/batch/{batch_id}").text
    section = re.search(r'<section class="card" id="signatures">(.*?)</section>', html, re.S)
    assert section is not None
    for s in sigs:
        for key in ("printed_name", "signer_id", "meaning", "record_id", "record_hash"):
            assert s[key] in section.group(1), key
    assert all(e["row_hash"] in html for e in trail)


# every route that takes an e-signature: the same four components, documented once
SIGNING_ROUTES = [
    ("/api/v1/batches/{batch_id}/decision", None),
    ("/api/v1/master-files/{mf_id}/approve", None),
    ("/api/v1/batches/{batch_id}/steps/{code}/sign", "performed by"),
    ("/api/v1/batches/{batch_id}/steps/{code}/verify", "verified by"),
    ("/api/v1/batches/{batch_id}/audit-trail-review", "audit trail reviewed"),
    ("/api/v1/monitoring/models/{model_id}/approve", "QP approval of monitoring model"),
]


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


@pytest.mark.parametrize("path,default_meaning", SIGNING_ROUTES)
def test_one_esignature_input(seeded: App, path: str, default_meaning: str | None) -> None:
    spec = create_web_app(seeded).openapi()
    assert path in spec["paths"], sorted(p for p in spec["paths"] if "approve" in p)
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = _resolve(spec, body)
    props = schema["properties"]
    # 21 CFR 11.200(a): password and user ID; a stated meaning (11.50); TOTP where demanded
    assert {"password", "meaning", "username", "totp"} <= set(props)
    assert "password" in schema["required"]
    if default_meaning is None:
        assert "meaning" in schema["required"]
    else:
        assert props["meaning"]["default"] == default_meaning
    # the same descriptions as ESignatureIn's: one definition, not copies
    base = spec["components"]["schemas"]["ESignatureIn"]["properties"]
    for name in ("password", "username", "totp"):
        assert props[name].get("description") == base[name]["description"]


def test_responses_document_signatures_and_audit_rows(seeded: App) -> None:
    spec = create_web_app(seeded).openapi()
    schemas = spec["components"]["schemas"]
    assert set(schemas["SignatureOut"]["properties"]) == SIGNATURE_KEYS
    assert set(schemas["AuditEntryOut"]["properties"]) == AUDIT_KEYS

    def response_schema(path: str) -> dict[str, Any]:
        ok = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        return _resolve(spec, ok["schema"])

    record = response_schema("/api/v1/records/{entity_type}/{entity_id}/audit")
    assert record["properties"]["signatures"]["items"]["$ref"].endswith("/SignatureOut")
    assert record["properties"]["audit_trail"]["items"]["$ref"].endswith("/AuditEntryOut")
    page = response_schema("/api/v1/audit")
    assert page["properties"]["items"]["items"]["$ref"].endswith("/AuditEntryOut")
    trail = response_schema("/api/v1/batches/{batch_id}/audit-trail")
    assert trail["properties"]["rows"]["items"]["$ref"].endswith("/AuditEntryOut")
