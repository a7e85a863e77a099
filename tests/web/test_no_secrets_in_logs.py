"""No password, TOTP code or bearer token reaches a log record or the audit trail: a failed
login, a login, an API call with the token and an e-signature are run with every logger at
DEBUG, and every record (and every audit row) is searched for the secrets."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.identity import AuditEntry
from nearfab.web.server import create_web_app

seeded = fh.seeded


def test_11_300_no_secret_in_any_log_record_or_audit_row(
    seeded: App, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "Wrong-Password-Secret-77"
    batch_id = fh.make_batch(seeded)
    client = TestClient(create_web_app(seeded))
    with caplog.at_level(logging.DEBUG):
        bad = client.post("/api/v1/auth/token", json={"username": "qp", "password": wrong})
        assert bad.status_code == 401
        good = client.post(
            "/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD}
        )
        assert good.status_code == 200, good.text
        token = good.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/me", headers=headers).status_code == 200
        signed = client.post(
            f"/api/v1/batches/{batch_id}/decision",
            json={
                "decision": "reject",
                "username": "qp",
                "password": fh.TEST_PASSWORD,
                "meaning": "QP rejection of batch",
                "reason": "secrets test",
            },
            headers=headers,
        )
        assert signed.status_code in (200, 409), signed.text
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {getattr(r, 'exc_text', '') or ''}"
        for r in caplog.records
    )
    assert caplog.records, "the run should have logged something to search"
    for secret in (wrong, fh.TEST_PASSWORD, token):
        assert secret not in logged
    with seeded.uow() as uow:
        rows = list(uow.session.scalars(select(AuditEntry)))
    trail = json.dumps(
        [[r.actor_name, r.action, r.entity_id, r.old, r.new, r.reason] for r in rows],
        default=str,
    )
    assert any(r.action in ("login", "login_failed") for r in rows)
    for secret in (wrong, fh.TEST_PASSWORD, token):
        assert secret not in trail
