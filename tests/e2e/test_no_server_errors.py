"""Every GET route of the API, called as a QP with made-up and real identifiers, answers
without a server error (5xx): a cheap net under every read path the schema exposes."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.web.server import create_web_app

seeded = fh.seeded


def token(client: TestClient, username: str) -> dict[str, str]:
    answer = client.post(
        "/api/v1/auth/token", json={"username": username, "password": fh.TEST_PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: values.get(m.group(1), "nope"), path)


def test_no_get_route_answers_5xx(seeded: App) -> None:
    batch_id = fh.make_batch(seeded)
    batch = fh.batch(seeded, batch_id)
    fh.release(seeded, batch_id)
    client = TestClient(create_web_app(seeded))
    schema: dict[str, Any] = client.get("/api/v1/openapi.json").json()
    real = {
        "batch_id": batch_id,
        "order_id": batch.order_id,
        "run": batch.job_id,
        "machine_id": batch.machine_id,
        "site_id": batch.site_id,
        "lot": batch.material_lot_number,
        "code": batch.master_file_code,
        "version": str(batch.master_file_version),
        "number": "1",
    }
    headers = {**token(client, "qp")}
    called = 0
    for path, ops in schema["paths"].items():
        if "get" not in ops:
            continue
        params = ops["get"].get("parameters", [])
        query = {
            p["name"]: real.get(p["name"], "x")
            for p in params
            if p["in"] == "query" and p.get("required")
        }
        for values in (real, {}):
            url = fill(path, values)
            answer = client.get(url, params=query, headers=headers)
            called += 1
            assert answer.status_code < 500, f"GET {url} {query}: {answer.status_code}"
    assert called > 40  # the schema really lists the routes
