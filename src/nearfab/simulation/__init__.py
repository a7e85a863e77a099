"""Simulation: the network simulator, cost model, validation suite and scale-out planner."""

from nearfab.simulation.errors import ScenarioInvalid
from nearfab.simulation.logic.engine import ReplicationResult, simulate
from nearfab.simulation.logic.planner import Plan, UnitType, plan_scale_out
from nearfab.simulation.logic.spec import ScenarioSpec
from nearfab.simulation.logic.validation import Check
from nearfab.simulation.schemas import ScenarioIn, dump_scenario, load_scenario, parse_scenario
from nearfab.simulation.services import (
    compare,
    export_scenario,
    run_replications,
    run_scenario,
    summarise,
    validate,
)

__all__ = [
    "Check",
    "Plan",
    "ReplicationResult",
    "ScenarioIn",
    "ScenarioInvalid",
    "ScenarioSpec",
    "UnitType",
    "compare",
    "dump_scenario",
    "export_scenario",
    "load_scenario",
    "parse_scenario",
    "plan_scale_out",
    "run_replications",
    "run_scenario",
    "simulate",
    "summarise",
    "validate",
]
