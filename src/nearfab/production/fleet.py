"""The machines the platform can drive: adapters by machine id (digital twins built on demand by
the product family whose machine type the machine is, through the registry)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from nearfab.common.clock import Clock
from nearfab.common.errors import Refused
from nearfab.designs import FamilyRegistry
from nearfab.production.kit import MachineKit, TwinSetup
from nearfab.production.machines import (
    Fault,
    MachineAdapter,
    SimulatedMachine,
    TelemetrySink,
)

if TYPE_CHECKING:
    from nearfab.network import Machine

# builds the telemetry connection of a simulated machine (wired in bootstrap: production cannot
# see the telemetry domain, which sits above it)
SinkFactory = Callable[["Machine"], TelemetrySink | None]


class MachineFleet:
    def __init__(
        self,
        clock: Clock,
        control_public_key_pem: str,
        families: FamilyRegistry,
        *,
        seconds_per_unit: float = 60.0,
        sample_every_s: float = 10.0,
        time_scale: float = 1.0,
        telemetry: SinkFactory | None = None,
    ) -> None:
        """`time_scale` > 1 makes simulated machines work that many times faster than a real
        one, on the platform's own clock, so every timestamp stays true (demo: 60)."""
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._clock = clock
        self._public_key = control_public_key_pem
        self._families = families
        self._seconds_per_unit = seconds_per_unit / time_scale
        self._sample_every_s = sample_every_s / time_scale
        self._adapters: dict[str, MachineAdapter] = {}
        self._twins: dict[str, SimulatedMachine] = {}
        self.telemetry = telemetry

    def register(self, machine_id: str, adapter: MachineAdapter) -> None:
        """Attach a real machine's adapter (e.g. an MQTT gateway client)."""
        self._adapters[machine_id] = adapter
        self._twins.pop(machine_id, None)

    def kit_for(self, machine: Machine) -> MachineKit | None:
        """The machines part of the family that runs `machine`'s type (None: no family does)."""
        for family in self._families:
            kit: MachineKit | None = family.machines  # None: a family that runs no machines
            if kit is not None and machine.machine_type in kit.machine_types:
                return kit
        return None

    def adapter_for(self, machine: Machine) -> MachineAdapter:
        adapter = self._adapters.get(machine.id)
        if adapter is not None:
            return adapter
        kit = self.kit_for(machine)
        if kit is not None and machine.adapter != "simulated":
            adapter = kit.connect(machine)
            if adapter is not None:
                self._adapters[machine.id] = adapter
                return adapter
        if kit is None or machine.adapter != "simulated":
            raise Refused(
                f"no adapter is connected for machine {machine.name}",
                field="machine",
                code="machine_offline",
            )
        twin = kit.twin(
            machine,
            TwinSetup(
                control_public_key_pem=self._public_key,
                clock=self._clock,
                # from the serial number: the same twin behaves the same in every database
                seed=zlib.crc32((machine.serial_number or machine.id).encode()),
                seconds_per_unit=self._seconds_per_unit,
                sample_every_s=self._sample_every_s,
                telemetry=self.telemetry(machine) if self.telemetry else None,
            ),
        )
        self._adapters[machine.id] = twin
        self._twins[machine.id] = twin
        return twin

    def inject_fault(self, machine: Machine, fault: Fault) -> None:
        """Make a simulated machine suffer `fault`: a kind of its family's (ValidationFailed
        naming `fault.kind` and listing them otherwise)."""
        kit = self.kit_for(machine)
        if kit is not None:
            kit.check_fault(fault)
        self.adapter_for(machine)
        twin = self._twins.get(machine.id)
        if twin is None:
            raise Refused(
                "faults can only be injected into simulated machines",
                field="machine",
                code="not_simulated",
            )
        twin.inject_fault(fault)

    def clear_faults(self, machine: Machine) -> None:
        twin = self._twins.get(machine.id)
        if twin is not None:
            twin.clear_faults()
