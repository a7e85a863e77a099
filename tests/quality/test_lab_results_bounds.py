"""Laboratory results attacked with input no laboratory sends: an integer too large for a
float (math.isfinite raised OverflowError: a 500), a NUL byte in the method (PostgreSQL refuses
NUL in text: a 500 at the flush), a NUL or very long batch id in the URL. Each is a 422 or 404
naming what is wrong, the refusal audited on the batch where there is one, no row kept."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.quality import lab_helpers as lab
from tests.quality.release_helpers import token

from nearfab.bootstrap import App
from nearfab.identity import AuditEntry
from nearfab.quality.models import LabResult
from nearfab.web.server import create_web_app

# a test asking for `batch`: a copy of `lab.lab_batch`'s world (built once per backend and worker)
seeded = fh.seeded_or_world({"batch": lab.lab_batch})


@pytest.fixture
def batch(seeded: App, request: pytest.FixtureRequest) -> str:
    """`lab.lab_batch`'s cell batch, on the test's own copy of its world."""
    batch_id: str = fh.built_data(request)
    return batch_id


def _count(app: App, model: Any) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def test_unbounded_input_is_refused_naming_the_field(seeded: App, batch: str) -> None:
    api = TestClient(create_web_app(seeded), raise_server_exceptions=False)
    headers = token(seeded, "pharmacist")
    url = f"/api/v1/batches/{batch}/lab-results"

    def post(results: Any, method: str = lab.METHOD, at: str = url) -> Any:
        body = {
            "results": results,
            "method": method,
            "username": "pharmacist",
            "password": fh.TEST_PASSWORD,
        }
        return api.post(at, json=body, headers=headers)

    with seeded.uow() as uow:
        audits = uow.session.scalar(select(func.max(AuditEntry.seq))) or 0
    for results, method, field in [
        ({"viable_cells": 10**400}, lab.METHOD, "lab_results.viable_cells"),
        ({"markers": {"CD3+": 10**400}}, lab.METHOD, "lab_results.markers.CD3+"),
        ({"mycoplasma": "negative"}, "qPCR\x00kit", "method"),
        ({"mycoplasma": "negative"}, "qPCR\nkit", "method"),
    ]:
        r = post(results, method)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field, r.text
    assert _count(seeded, LabResult) == 0
    with seeded.uow() as uow:
        rows = uow.session.scalars(select(AuditEntry).where(AuditEntry.seq > audits)).all()
        refused = [(r.action, r.entity_id, (r.new or {}).get("field")) for r in rows]
    # the NUL is refused at the API's door (api/limits.py: no PostgreSQL text holds it), the
    # line break by the service: audited on the batch
    fields = ["lab_results.viable_cells", "lab_results.markers.CD3+", "method"]
    assert refused == [("refuse", batch, f) for f in fields], refused  # each refusal on record
    for bad in (f"{batch}%00", "b" * 5000):
        r = post({"mycoplasma": "negative"}, at=f"/api/v1/batches/{bad}/lab-results")
        assert r.status_code in (404, 422), r.text
    assert _count(seeded, LabResult) == 0
