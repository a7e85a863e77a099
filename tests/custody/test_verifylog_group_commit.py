"""The verification log's group commit (custody/services/verifylog.py): the writer waits up
to `interval_s` for rows to share a commit, writes at once when `early_rows` are queued, and
after a failed write waits its whole back-off however many rows are queued (no retry loop
against a failing database). Every row submitted is written once. Both databases."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.custody.services.verifylog import VerificationLog
from nearfab.identity import AuditEntry


def _seeded_only(app: App) -> None:
    """The seeded demo network: the audit chain these rows join."""


world = fh.world_fixture(_seeded_only)


@pytest.fixture
def seeded(world: fh.Built) -> App:
    app: App = world.app
    return app


def _row(app: App, i: int) -> dict[str, Any]:
    return {
        "at": app.clock.now(),
        "actor_id": "system:scanner",
        "actor_name": "scanner",
        "action": "verify",
        "entity_type": "unit",
        "entity_id": f"group-{i}",
        "old": None,
        "new": {"status": "ok"},
        "reason": None,
        "site_id": None,
    }


def _logged(app: App) -> int:
    with app.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.entity_id.like("group-%"))
            ).scalar_one()
        )


def _eventually(predicate: Any, seconds: float = 20.0) -> bool:
    """Whether `predicate` holds within `seconds` (polled: the writer is a thread)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


def test_a_commits_worth_of_rows_is_written_without_waiting_out_the_interval(
    seeded: App,
) -> None:
    """With an interval far longer than the test, fewer rows than `early_rows` wait (only a
    flush writes them); the row that makes `early_rows` has the writer commit them all, in
    one transaction."""
    vlog = VerificationLog(interval_s=3600.0, early_rows=5)
    commits = [0]
    real_write = vlog._write_batch

    def counted() -> int:
        commits[0] += 1
        return real_write()

    vlog._write_batch = counted  # type: ignore[method-assign]
    for i in range(4):
        vlog.submit(seeded.engine, _row(seeded, i))
    time.sleep(0.3)  # the writer has had its chance to (wrongly) write them
    assert _logged(seeded) == 0 and vlog.queued == 4
    vlog.submit(seeded.engine, _row(seeded, 4))
    assert _eventually(lambda: _logged(seeded) == 5)
    assert commits[0] == 1 and vlog.queued == 0
    assert vlog.flush() == 0  # nothing written twice


def test_rows_share_a_commit_when_they_arrive_within_the_interval(seeded: App) -> None:
    """Rows submitted one after another while the writer waits are written together (a
    commit costs the same for one row or ten), without any flush."""
    vlog = VerificationLog(interval_s=0.5, early_rows=1000)
    sizes: list[int] = []
    real_write = vlog._write_batch

    def counted() -> int:
        written = real_write()
        sizes.append(written)
        return written

    vlog._write_batch = counted  # type: ignore[method-assign]
    for i in range(10):
        vlog.submit(seeded.engine, _row(seeded, i))
    assert _eventually(lambda: _logged(seeded) == 10)
    assert sizes == [10]


def test_after_a_failed_write_the_writer_waits_its_back_off_however_many_rows_wait(
    seeded: App,
) -> None:
    """More than `early_rows` queued and the database refusing: one attempt, then the
    back-off (the interval times 26 after one failure), not a write attempt per wake-up; the
    rows stay queued and a flush writes them once the database answers again."""
    vlog = VerificationLog(interval_s=60.0, early_rows=3)
    attempts = [0]
    failing = threading.Event()
    failing.set()
    real_write = vlog._write_batch

    def flaky() -> int:
        attempts[0] += 1
        if failing.is_set():
            vlog._failures += 1
            raise RuntimeError("database gone")
        return real_write()

    vlog._write_batch = flaky  # type: ignore[method-assign]
    for i in range(3):
        vlog.submit(seeded.engine, _row(seeded, i))
    assert _eventually(lambda: attempts[0] >= 1)
    for i in range(3, 8):  # more rows while the writer backs off: each could wake it
        vlog.submit(seeded.engine, _row(seeded, i))
    time.sleep(0.3)  # a writer that ignored its back-off would have retried many times
    assert attempts[0] == 1
    assert vlog.queued == 8 and _logged(seeded) == 0
    failing.clear()
    vlog._failures = 0
    assert vlog.flush() == 8
    assert _logged(seeded) == 8
