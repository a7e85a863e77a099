"""Job lifecycle."""

from enum import StrEnum


class JobStatus(StrEnum):
    PLANNED = "planned"
    TICKET_ISSUED = "ticket_issued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PLANNED: frozenset({JobStatus.TICKET_ISSUED, JobStatus.CANCELLED}),
    JobStatus.TICKET_ISSUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

OPEN_JOB_STATUSES = (JobStatus.PLANNED, JobStatus.TICKET_ISSUED, JobStatus.RUNNING)
