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


class Priority(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"


class PlanTrigger(StrEnum):
    """Why a plan version was made."""

    MANUAL = "manual"
    NEW_ORDER = "new_order"
    URGENT_ORDER = "urgent_order"
    MACHINE_FAILURE = "machine_failure"
    MATERIAL_RECALL = "material_recall"
    SITE_PAUSE = "site_pause"
    INPUTS_CHANGED = "inputs_changed"
    COLLECTION_CHANGED = "collection_changed"  # a collection date recorded (slipped)
    RUN_FAILED = "run_failed"  # a failed run: a new slot for a new collection


class CollectionStatus(StrEnum):
    """A collection appointment (starting material from the patient for one run)."""

    REQUESTED = "requested"  # a date is recorded, no machine slot booked yet
    BOOKED = "booked"  # booked against a machine slot
    RUN_FAILED = "run_failed"  # its run failed: a new collection is needed
    CANCELLED = "cancelled"


OPEN_COLLECTION_STATUSES = (CollectionStatus.REQUESTED, CollectionStatus.BOOKED)
