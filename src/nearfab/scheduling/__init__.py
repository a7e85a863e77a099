"""Scheduling: plan each order's job on an eligible machine (first version: earliest finish)."""

from nearfab.scheduling.enums import JobStatus
from nearfab.scheduling.logic import Candidate, earliest_finish
from nearfab.scheduling.models import Job
from nearfab.scheduling.services import Eligibility, Planner, SchedulingService

__all__ = [
    "Candidate",
    "Eligibility",
    "Job",
    "JobStatus",
    "Planner",
    "SchedulingService",
    "earliest_finish",
]
