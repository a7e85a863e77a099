"""Production: the production gate, signed job tickets, machines, electronic batch records."""

from nearfab.production.enums import BatchStatus
from nearfab.production.events import BatchCompleted, BatchFailed
from nearfab.production.fleet import MachineFleet
from nearfab.production.machines import (
    Fault,
    MachineAdapter,
    RunResult,
    SimulatedTabletPrinter,
    TelemetryReading,
    TelemetrySink,
    UnitMeasurement,
)
from nearfab.production.models import BatchRecord, BatchStep, StepSignoff
from nearfab.production.services import ProductionService, StepState, check_entry
from nearfab.production.tickets import SignedTicket, TicketRejected, TicketSigner, verify_ticket

__all__ = [
    "BatchCompleted",
    "BatchFailed",
    "BatchRecord",
    "BatchStatus",
    "BatchStep",
    "Fault",
    "MachineAdapter",
    "MachineFleet",
    "ProductionService",
    "RunResult",
    "SignedTicket",
    "SimulatedTabletPrinter",
    "StepSignoff",
    "StepState",
    "TelemetryReading",
    "TelemetrySink",
    "TicketRejected",
    "TicketSigner",
    "UnitMeasurement",
    "check_entry",
    "verify_ticket",
]
