"""What the production domain asks of a product family: `MachineKit`.

The domain owns the question; families under nearfab.families answer it, and the domain reaches
them only through the registry bootstrap wires in (DESIGN.md, "The family kit"):
`kit: MachineKit = families.get(name).machines`.

A family's machines part says which machine types it runs, their telemetry metrics with limits
(the critical process parameters among them), the faults its twins can suffer, how to build a
digital twin (or connect a real machine) for a machine row, and what the batch record keeps of a
run: the family's measurement document (validated by the family, stored as it is) and the count
of units made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from nearfab.common.clock import Clock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.production.machines import (
    Fault,
    MachineAdapter,
    RunResult,
    SimulatedMachine,
    TelemetrySink,
)

if TYPE_CHECKING:
    from nearfab.network import Machine


@dataclass(frozen=True)
class MetricSpec:
    """A telemetry metric of a family's machines with its default limits. `cpp`: a critical
    process parameter (its excursions go on the batch record)."""

    name: str
    unit: str
    target: float
    low: float
    high: float
    cpp: bool = True

    def parameter(self) -> dict[str, Any]:
        """The metric as a master file's process parameter (target, low, high, unit)."""
        return {"target": self.target, "low": self.low, "high": self.high, "unit": self.unit}


@dataclass(frozen=True)
class TwinSetup:
    """What the platform gives a family to build one digital twin."""

    control_public_key_pem: str
    clock: Clock
    seed: int  # the same machine row gives the same twin in every database
    seconds_per_unit: float
    sample_every_s: float
    telemetry: TelemetrySink | None = None


@dataclass(frozen=True)
class MeasurementSeries:
    """One per-unit measurement of a batch as a page charts it: the values against a target
    and a ±tolerance band, with the axis label and unit the family names."""

    values: tuple[float, ...]
    target: float
    tolerance_pct: float
    label: str  # what was measured, e.g. the quantity's name
    unit: str  # its unit, as people write it
    specification: str = ""  # the master file's specification it is judged against


class MachineKit(Protocol):
    """The `machines` part of a product family."""

    machine_types: tuple[str, ...]
    fault_kinds: tuple[str, ...]

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        """The telemetry metrics of the family's machines, by name, with default limits."""
        ...

    def check_fault(self, fault: Fault) -> None:
        """Raise ValidationFailed (field `fault.kind`, listing the family's kinds, or
        `fault.severity`) unless the family's twins can suffer `fault`."""
        ...

    def twin(self, machine: Machine, setup: TwinSetup) -> SimulatedMachine:
        """A digital twin of `machine`; Refused (field `machine_type`) for a type the family
        does not run."""
        ...

    def connect(self, machine: Machine) -> MachineAdapter | None:
        """The adapter of a real machine (not simulated), or None when the family connects none
        itself (a site gateway registers it with the fleet)."""
        ...

    def design_summary(self, design: Mapping[str, Any]) -> str:
        """What a ticket's design tells the machine to make, in a line for people."""
        ...

    def measurement_document(self, outcome: RunResult) -> dict[str, Any]:
        """What the batch record keeps of a finished run's unit measurements."""
        ...

    def check_measurements(self, document: Any) -> dict[str, Any]:
        """The stored document, validated; ValidationFailed naming the bad key."""
        ...

    def units_made(self, document: Mapping[str, Any]) -> int:
        """How many units the run the document describes made."""
        ...

    def measurement_series(
        self,
        document: Mapping[str, Any] | None,
        design: Mapping[str, Any],
        cqa_specs: Mapping[str, Any],
    ) -> MeasurementSeries | None:
        """The per-unit measurement a batch page charts, or None when there is nothing to show."""
        ...


def record_title(kit: MachineKit) -> str:
    """What the family calls the record of one run, for pages and exports: its optional
    `record_title` (e.g. the name ISO 13485 §4.2.5 gives a medical device's record); "Batch
    record" without it. The record itself is the core's batch record either way."""
    return str(getattr(kit, "record_title", None) or "Batch record")


def build_approver(kit: MachineKit, site_kind: str) -> str | None:
    """The role that must issue a job ticket for a machine at a site of `site_kind`: issuing it
    is the control site's approval of that build, and the ticket names who approved it
    (`build_approval`), so the machine can refuse a build nobody approved. The family's
    optional `build_approver(site_kind)`; None (whoever may issue tickets) without it."""
    ask = getattr(kit, "build_approver", None)
    if not callable(ask):
        return None
    answer = ask(site_kind)
    return None if answer is None else str(answer)


def metric_specs(
    parameters: Mapping[str, Mapping[str, Any]], *, cpp: bool = True
) -> dict[str, MetricSpec]:
    """The part of `MachineKit.metrics` each family writes alike: a metric per process
    parameter (`{name: {target, low, high, unit}}`), all critical unless `cpp` is False."""
    return {
        name: MetricSpec(
            name=name,
            unit=str(spec["unit"]),
            target=float(spec["target"]),
            low=float(spec["low"]),
            high=float(spec["high"]),
            cpp=cpp,
        )
        for name, spec in parameters.items()
    }


def check_document_keys(document: Any, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """The common start of `MachineKit.check_measurements`: the document is an object that has
    no key but `keys`. ValidationFailed naming the first unknown key."""
    if not isinstance(document, Mapping):
        raise ValidationFailed("measurements must be an object", field="measurements")
    unknown = sorted(set(document) - set(keys))
    if unknown:
        raise ValidationFailed(
            f"measurements has no key {unknown[0]!r} (keys: {', '.join(keys)})",
            field=f"measurements.{unknown[0]}",
        )
    return document


def check_fault_kind(family: str, kinds: tuple[str, ...], fault: Fault) -> None:
    """The common part of `MachineKit.check_fault`: the kind must be one of the family's."""
    if fault.kind not in kinds:
        raise ValidationFailed(
            f"unknown fault kind {fault.kind!r} for {family} machines "
            f"(kinds: {', '.join(kinds) or 'none'})",
            field="fault.kind",
        )


def check_machine_type(family: str, types: tuple[str, ...], machine: Machine) -> None:
    """The common part of `MachineKit.twin`: the machine must be of a type the family runs."""
    if machine.machine_type not in types:
        raise Refused(
            f"{family} has no twin for machine type {machine.machine_type!r} of machine "
            f"{machine.name} (types: {', '.join(types) or 'none'})",
            field="machine_type",
            code="unknown_machine_type",
        )
