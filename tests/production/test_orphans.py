"""Issue 12 item 10: after a crash, a batch handed to its machine whose machine never reports
must not block the machine for ever. Each handed-over batch holds a lease, renewed by machine
reports; the runner's sweep closes a batch whose lease ran out (failed, machine freed, a
deviation opened for a person, audited, one transaction). `nearfab batches abandon` closes one
by hand with a required reason. SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from tests import cli_helpers
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused
from nearfab.identity import AuditEntry, system_actor
from nearfab.production.services import DEFAULT_LEASE
from nearfab.quality import Deviation

seeded = fh.seeded
LEASE_S = DEFAULT_LEASE.total_seconds()


def _crashed_mid_run(app: App) -> str:
    """A batch started and handed to its machine by a worker that was then killed: no result
    will ever be recorded, and nothing in this process remembers it."""
    batch_id = fh.start(app, fh.ticketed_job(app))
    fh.sign_before_start(app, batch_id)  # the steps its machine waited for
    with app.uow() as uow:
        app.production.hand_over(uow, system_actor("site-agent"), batch_id)
    return batch_id


def _machine_status(app: App, batch_id: str) -> str:
    with app.uow() as uow:
        batch = app.production.get(uow, batch_id)
        return app.network.get_machine(uow, batch.machine_id).status


def _deviations(app: App, batch_id: str) -> list[Deviation]:
    with app.uow() as uow:
        rows = list(uow.session.scalars(select(Deviation).where(Deviation.batch_id == batch_id)))
        for row in rows:
            uow.session.expunge(row)
        return rows


def test_the_sweep_frees_the_machine_of_an_orphaned_batch_and_opens_a_deviation(
    seeded: App, clock: ManualClock
) -> None:
    batch_id = _crashed_mid_run(seeded)
    assert _machine_status(seeded, batch_id) == "busy"
    # within the lease the batch waits for its machine
    clock.advance(LEASE_S - 60)
    summary = fh.run(seeded)
    assert summary.batches_orphaned == []
    assert "waiting for the machine's report" in summary.blocked[batch_id]
    with seeded.uow() as uow, pytest.raises(Refused) as early:
        seeded.production.abandon_orphan(uow, system_actor("runner"), batch_id)
    assert early.value.code == "not_orphaned"
    assert _deviations(seeded, batch_id) == []
    # the lease runs out with no report: the next sweep closes it
    clock.advance(120)
    summary = fh.run(seeded)
    assert summary.batches_orphaned == [batch_id]
    record = fh.batch(seeded, batch_id)
    assert record.status == "failed"
    assert record.failure_reason is not None and record.failure_reason.startswith("orphaned")
    assert fh.order_status(seeded, record.order_id) == "failed"
    assert _machine_status(seeded, batch_id) == "available"
    (dev,) = _deviations(seeded, batch_id)
    assert (dev.kind, dev.status) == ("orphaned_batch", "open")  # for a person to close
    with seeded.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry).where(AuditEntry.entity_id.in_([dev.id, batch_id]))
        ).all()
    audited = {(r.entity_type, r.action) for r in rows}
    assert ("deviation", "create") in audited
    assert any(r.entity_type == "batch" and (r.new or {}).get("status") == "failed" for r in rows)
    # the same transaction: the deviation and the batch's failure carry one moment
    failed = next(r for r in rows if r.entity_type == "batch" and (r.new or {}).get("status"))
    opened = next(r for r in rows if r.entity_id == dev.id)
    assert failed.at == opened.at
    # a second sweep finds nothing more; the freed machine makes the next order
    assert fh.run(seeded).batches_orphaned == []
    fh.submit(seeded)
    made = fh.run(seeded)
    assert len(made.batches_completed) == 1


def test_machine_reports_renew_the_lease(seeded: App, clock: ManualClock) -> None:
    batch_id = _crashed_mid_run(seeded)
    with seeded.uow() as uow:
        machine_id = seeded.production.get(uow, batch_id).machine_id
    for _ in range(3):  # a long run whose machine keeps reporting
        clock.advance(LEASE_S * 0.8)
        with seeded.uow() as uow:
            assert seeded.production.machine_report(uow, machine_id) is not None
            uow.commit()
        assert fh.run(seeded).batches_orphaned == []
    assert fh.batch(seeded, batch_id).status == "in_progress"
    clock.advance(LEASE_S + 1)  # then it goes silent
    assert fh.run(seeded).batches_orphaned == [batch_id]


def test_a_batch_the_machine_never_got_is_not_an_orphan(seeded: App, clock: ManualClock) -> None:
    """Started but not handed over (the worker died before it): the runner hands it over and
    runs it; the lease is only for batches a machine holds."""
    batch_id = fh.start(seeded, fh.ticketed_job(seeded))
    clock.advance(LEASE_S * 3)
    summary = fh.run(seeded)
    assert summary.batches_orphaned == []
    assert batch_id in summary.batches_completed


def test_the_cli_abandons_a_batch_with_a_required_reason(seeded: App, clock: ManualClock) -> None:
    batch_id = _crashed_mid_run(seeded)
    env = {"NEARFAB_DATABASE_URL": seeded.engine.url.render_as_string(hide_password=False)}
    data_dir = seeded.settings.data_dir
    missing = cli_helpers.run(["batches", "abandon", batch_id], env=env, data_dir=data_dir)
    assert missing.returncode == 2 and "--reason" in missing.stderr + missing.stdout
    blank = cli_helpers.run(
        ["batches", "abandon", batch_id, "--reason", "  ", "--json"], env=env, data_dir=data_dir
    )
    assert blank.returncode == 2
    assert json.loads(blank.stdout)["error"]["field"] == "reason"
    assert fh.batch(seeded, batch_id).status == "in_progress"  # nothing half-done
    done = cli_helpers.run(
        ["batches", "abandon", batch_id, "--reason", "site agent killed mid-run", "--json"],
        env=env,
        data_dir=data_dir,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "failed"
    assert out["failure_reason"] == "abandoned: site agent killed mid-run"
    assert _machine_status(seeded, batch_id) == "available"
    (dev,) = _deviations(seeded, batch_id)
    assert dev.kind == "abandoned_batch" and "site agent killed mid-run" in dev.description
    with seeded.uow() as uow:
        rows = uow.session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "batch", AuditEntry.entity_id == batch_id
            )
        ).all()
    closing = [r for r in rows if (r.new or {}).get("status") == "failed"]
    assert closing and closing[-1].actor_name.startswith("nearfab CLI")
    assert "site agent killed mid-run" in (closing[-1].reason or "")
    again = cli_helpers.run(
        ["batches", "abandon", batch_id, "--reason", "twice", "--json"],
        env=env,
        data_dir=data_dir,
    )
    assert again.returncode == 2
    assert json.loads(again.stdout)["error"]["code"] == "not_in_progress"


def test_the_api_abandon_route_opens_a_deviation(seeded: App) -> None:
    from fastapi.testclient import TestClient

    from nearfab.web.server import create_web_app

    batch_id = _crashed_mid_run(seeded)
    client = TestClient(create_web_app(seeded))
    token = client.post(
        "/api/v1/auth/token", json={"username": "qp", "password": fh.TEST_PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    blank = client.post(
        f"/api/v1/batches/{batch_id}/abandon", json={"reason": " "}, headers=headers
    )
    assert blank.status_code == 422 and blank.json()["error"]["field"] == "reason"
    done = client.post(
        f"/api/v1/batches/{batch_id}/abandon",
        json={"reason": "machine destroyed in a fire"},
        headers=headers,
    )
    assert done.status_code == 200, done.text
    assert fh.batch(seeded, batch_id).status == "failed"
    assert [d.kind for d in _deviations(seeded, batch_id)] == ["abandoned_batch"]
