"""What scheduling reads of other domains and publishes of its own (issue 15 part 3): the reads
with a rule of their own. An unknown key is NotFound naming its field, as the owner's service
says it; a batch of keys is one statement, never one per key (statement counts, issue 18)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.common.errors import NotFound
from nearfab.scheduling import MachineDowntime
from nearfab.scheduling import reads as scheduling_reads

seeded = fh.seeded


@contextmanager
def counted(app: App) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_c: Any, _cur: Any, sql: str, *_a: Any) -> None:
        statements.append(sql)

    event.listen(app.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(app.engine, "before_cursor_execute", count)


def test_downtime_on_an_unknown_machine_is_not_found_naming_machine_id(seeded: App) -> None:
    planning = seeded.scheduling.planning
    assert planning is not None
    before = fh.count(seeded, MachineDowntime)
    now = seeded.clock.now()
    with seeded.uow() as uow, pytest.raises(NotFound) as caught:
        planning.add_downtime(
            uow, fh.actor(seeded, "planner"), "mch_nope", now, now + timedelta(hours=1),
            reason="calibration",
        )  # fmt: skip
    assert caught.value.field == "machine_id"
    assert "mch_nope" in str(caught.value)
    assert fh.count(seeded, MachineDowntime) == before  # nothing booked


def test_a_job_is_read_by_id_and_an_unknown_one_is_not_found_naming_job_id(seeded: App) -> None:
    job_id = fh.schedule(seeded, fh.submit(seeded))
    with seeded.uow() as uow:
        assert scheduling_reads.job(uow.session, job_id).id == job_id
        with pytest.raises(NotFound) as caught:
            scheduling_reads.job(uow.session, "job_nope")
    assert caught.value.field == "job_id"
    assert "job_nope" in str(caught.value)


def test_jobs_by_id_reads_a_batch_of_jobs_in_one_statement(seeded: App) -> None:
    # two orders, two jobs (one per order); an unknown id is left out, not an error
    first = fh.schedule(seeded, fh.submit(seeded, dose_mg=2.0))
    second = fh.schedule(seeded, fh.submit(seeded, dose_mg=5.0, days=14))
    with seeded.uow() as uow, counted(seeded) as statements:
        found = scheduling_reads.jobs_by_id(uow.session, [first, second, "job_nope", first])
    assert sorted(found) == sorted([first, second])
    assert len(statements) == 1, statements
    with seeded.uow() as uow, counted(seeded) as statements:
        assert scheduling_reads.jobs_by_id(uow.session, []) == {}
    assert statements == []  # no keys: no statement at all
