"""Scheduling use cases (package: jobs in `core`, the network plan in `planning`)."""

from nearfab.scheduling.services.core import Eligibility, Planner, SchedulingService
from nearfab.scheduling.services.instance import PlanningSettings
from nearfab.scheduling.services.planning import infer_trigger

__all__ = ["Eligibility", "Planner", "PlanningSettings", "SchedulingService", "infer_trigger"]
