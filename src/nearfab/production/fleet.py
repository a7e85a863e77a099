"""The machines the platform can drive: adapters by machine id (simulated twins built on demand)."""

from __future__ import annotations

import zlib
from collections.abc import Callable

from nearfab.common.clock import Clock
from nearfab.common.errors import Refused
from nearfab.network import Machine
from nearfab.production.machines import (
    Fault,
    MachineAdapter,
    SimulatedTabletPrinter,
    TelemetrySink,
)

# builds the telemetry connection of a simulated machine (wired in bootstrap: production cannot
# see the telemetry domain, which sits above it)
SinkFactory = Callable[[Machine], TelemetrySink | None]


class MachineFleet:
    def __init__(
        self,
        clock: Clock,
        control_public_key_pem: str,
        *,
        seconds_per_unit: float = 60.0,
        sample_every_s: float = 10.0,
        time_scale: float = 1.0,
        telemetry: SinkFactory | None = None,
    ) -> None:
        """`time_scale` > 1 makes simulated printers work that many times faster than a real
        one, on the platform's own clock, so every timestamp stays true (demo: 60)."""
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self._clock = clock
        self._public_key = control_public_key_pem
        self._seconds_per_unit = seconds_per_unit / time_scale
        self._sample_every_s = sample_every_s / time_scale
        self._adapters: dict[str, MachineAdapter] = {}
        self.telemetry = telemetry

    def register(self, machine_id: str, adapter: MachineAdapter) -> None:
        """Attach a real machine's adapter (e.g. an MQTT gateway client)."""
        self._adapters[machine_id] = adapter

    def adapter_for(self, machine: Machine) -> MachineAdapter:
        adapter = self._adapters.get(machine.id)
        if adapter is not None:
            return adapter
        if machine.adapter != "simulated" or machine.machine_type != "tablet_printer":
            raise Refused(
                f"no adapter is connected for machine {machine.name}",
                field="machine",
                code="machine_offline",
            )
        twin = SimulatedTabletPrinter(
            machine.id,
            firmware=machine.firmware,
            control_public_key_pem=self._public_key,
            clock=self._clock,
            # from the serial number: the same twin behaves the same in every database
            seed=zlib.crc32((machine.serial_number or machine.id).encode()),
            seconds_per_unit=self._seconds_per_unit,
            sample_every_s=self._sample_every_s,
            telemetry=self.telemetry(machine) if self.telemetry else None,
        )
        self._adapters[machine.id] = twin
        return twin

    def inject_fault(self, machine: Machine, fault: Fault) -> None:
        adapter = self.adapter_for(machine)
        if not isinstance(adapter, SimulatedTabletPrinter):
            raise Refused(
                "faults can only be injected into simulated machines",
                field="machine",
                code="not_simulated",
            )
        adapter.inject_fault(fault)

    def clear_faults(self, machine: Machine) -> None:
        adapter = self._adapters.get(machine.id)
        if isinstance(adapter, SimulatedTabletPrinter):
            adapter.clear_faults()
