"""Who decides that signatures need a TOTP code, and how: a site's or a master file's signing
policy is set through the API or the CLI by an admin or QP, with a reason, audited; from then
on a QP release at that site, or of that product, without a code is refused (21 CFR 11.200)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from tests import flow_helpers as fh
from typer.testing import CliRunner

from nearfab.bootstrap import App
from nearfab.cli.main import app as cli
from nearfab.common.errors import Refused, Unauthenticated
from nearfab.identity import audit_trail
from nearfab.web.server import create_web_app

seeded = fh.seeded


def _bearer(client: TestClient, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _release(app: App, batch_id: str) -> None:
    with app.uow() as uow:
        app.quality.decide(
            uow,
            fh.actor(app, "qp"),
            batch_id,
            decision="release",
            password=fh.TEST_PASSWORD,
            meaning="QP certification",
            username="qp",
        )


def test_11_200_site_signing_policy_through_the_api_demands_totp(seeded: App) -> None:
    batch_id = fh.make_batch(seeded)
    site_id = fh.batch(seeded, batch_id).site_id
    client = TestClient(create_web_app(seeded))
    url = f"/api/v1/sites/{site_id}/signing-policy"
    body = {"totp_for_signing": True, "reason": "high-risk products at this site"}
    assert client.post(url, json=body, headers=_bearer(client, "pharmacist")).status_code == 403
    empty = client.post(url, json={**body, "reason": " "}, headers=_bearer(client, "admin"))
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "reason"
    r = client.post(url, json=body, headers=_bearer(client, "admin"))
    assert r.status_code == 200 and r.json()["totp_for_signing"] is True
    with seeded.uow() as uow:
        rows = [e for e in audit_trail(uow, "site", site_id) if e.action == "update"]
    assert rows[-1].old == {"totp_for_signing": False}
    assert rows[-1].new == {"totp_for_signing": True}
    assert rows[-1].reason == body["reason"]
    with pytest.raises((Unauthenticated, Refused)) as refused:
        _release(seeded, batch_id)
    assert refused.value.code in ("totp_required", "totp_not_enrolled")
    assert fh.batch(seeded, batch_id).status != "released"


def test_11_200_master_file_signing_policy_from_the_cli_demands_totp(
    seeded: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = fh.make_batch(seeded)
    code = fh.batch(seeded, batch_id).master_file_code
    monkeypatch.setenv(
        "NEARFAB_DATABASE_URL", str(seeded.engine.url.render_as_string(hide_password=False))
    )
    monkeypatch.setenv("NEARFAB_PASSWORD_MAX_AGE_DAYS", "3650")  # the CLI runs on the real clock
    runner = CliRunner()
    base = ["--data-dir", str(seeded.settings.data_dir)]
    qp = ["--user", "qp", "--password", fh.TEST_PASSWORD]
    args = ["users", "signing-policy", "--master-file", code, "--totp", "--reason", "policy"]
    res = runner.invoke(cli, [*base, *args, "--user", "operator", "--password", "x", "--json"])
    assert res.exit_code == 2  # not an admin or QP (and a wrong password): refused
    res = runner.invoke(cli, [*base, *args, *qp, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["totp_for_signing"] is True
    with pytest.raises((Unauthenticated, Refused)) as refused:
        _release(seeded, batch_id)
    assert refused.value.code in ("totp_required", "totp_not_enrolled")
    off = ["users", "signing-policy", "--master-file", code, "--no-totp", "--reason", "back"]
    assert runner.invoke(cli, [*base, *off, *qp, "--json"]).exit_code == 0
    _release(seeded, batch_id)
    assert fh.batch(seeded, batch_id).status == "released"
