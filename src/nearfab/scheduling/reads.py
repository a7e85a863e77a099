"""What other domains may read of scheduling's tables."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from nearfab.common.errors import NotFound
from nearfab.scheduling.models import Job


def job(session: Session, job_id: str) -> Job:
    """A job by id; NotFound naming `job_id` (as scheduling's own look-up)."""
    found = session.get(Job, job_id)
    if found is None:
        raise NotFound(f"no job {job_id!r}", field="job_id")
    return found


def jobs_by_id(session: Session, ids: Iterable[str]) -> dict[str, Job]:
    """The jobs with these ids, in one statement; an unknown id is simply absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(wanted)))}
