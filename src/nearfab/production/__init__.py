"""Production: the production gate, signed job tickets, machines, electronic batch records."""

from nearfab.production.enums import BatchStatus
from nearfab.production.events import BatchCompleted, BatchFailed
from nearfab.production.fleet import MachineFleet
from nearfab.production.kit import MachineKit, MeasurementSeries, MetricSpec, TwinSetup
from nearfab.production.machines import (
    Fault,
    MachineAdapter,
    RunResult,
    Setpoint,
    SimulatedMachine,
    TelemetryReading,
    TelemetrySink,
    UnitMeasurement,
)
from nearfab.production.models import BatchRecord, BatchStep, StepSignoff
from nearfab.production.services import (
    ProductionService,
    StepState,
    approval_meaning,
    check_entry,
)
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
    "MachineKit",
    "MeasurementSeries",
    "MetricSpec",
    "ProductionService",
    "RunResult",
    "Setpoint",
    "SignedTicket",
    "SimulatedMachine",
    "StepSignoff",
    "StepState",
    "TelemetryReading",
    "TelemetrySink",
    "TicketRejected",
    "TicketSigner",
    "TwinSetup",
    "UnitMeasurement",
    "approval_meaning",
    "check_entry",
    "verify_ticket",
]
