"""Scheduling: plan orders onto machines across the network (EDD + CP-SAT), with replanning."""

from nearfab.scheduling.enums import JobStatus, PlanTrigger, Priority
from nearfab.scheduling.events import PlanChanged, replan_handler
from nearfab.scheduling.logic import Candidate, earliest_finish
from nearfab.scheduling.models import (
    Job,
    MachineDowntime,
    OperatorShift,
    OrderPlanning,
    PlanVersion,
    TransportTime,
)
from nearfab.scheduling.services import Eligibility, Planner, PlanningSettings, SchedulingService
from nearfab.scheduling.services.patients import require_patient

__all__ = [
    "Candidate",
    "Eligibility",
    "Job",
    "JobStatus",
    "MachineDowntime",
    "OperatorShift",
    "OrderPlanning",
    "PlanChanged",
    "PlanTrigger",
    "PlanVersion",
    "Planner",
    "PlanningSettings",
    "Priority",
    "SchedulingService",
    "TransportTime",
    "earliest_finish",
    "replan_handler",
    "require_patient",
]
