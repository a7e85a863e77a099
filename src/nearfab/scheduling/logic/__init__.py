"""Pure planning rules (no I/O): the planning model, EDD greedy, CP-SAT, explanations."""

from nearfab.scheduling.logic.candidate import Candidate, earliest_finish
from nearfab.scheduling.logic.cpsat import CpResult, solve_cp_sat
from nearfab.scheduling.logic.explain import REASONS, Explanation, diff_plans, explain
from nearfab.scheduling.logic.greedy import edd, rebuild
from nearfab.scheduling.logic.model import (
    ROUTINE_WEIGHT,
    URGENT_WEIGHT,
    Exclusion,
    Instance,
    Option,
    Placement,
    PlanJob,
    PlanMachine,
    Range,
    Schedule,
    Score,
    allowed_starts,
    evaluate,
    intersect,
    normalise,
    subtract,
)
from nearfab.scheduling.logic.solve import SolveResult, lower_bound, solve

__all__ = [
    "REASONS",
    "ROUTINE_WEIGHT",
    "URGENT_WEIGHT",
    "Candidate",
    "CpResult",
    "Exclusion",
    "Explanation",
    "Instance",
    "Option",
    "Placement",
    "PlanJob",
    "PlanMachine",
    "Range",
    "Schedule",
    "Score",
    "SolveResult",
    "allowed_starts",
    "diff_plans",
    "earliest_finish",
    "edd",
    "evaluate",
    "explain",
    "intersect",
    "lower_bound",
    "normalise",
    "rebuild",
    "solve",
    "solve_cp_sat",
    "subtract",
]
