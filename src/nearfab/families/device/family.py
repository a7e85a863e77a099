"""The device product family: a single-patient-use urine flowmeter printed by fused deposition
modelling at a hospital pharmacy or at the patient's home, under the manufacturer's control
(docs/device.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.designs.registry import Collection
from nearfab.families.device.geometry import (
    Envelope,
    design_flowmeter,
    material_g,
    print_time_s,
)
from nearfab.families.device.labels import DeviceLabels
from nearfab.families.device.machines import FDM_PRINTER, SUPERVISED_PRINTER, DeviceMachines
from nearfab.families.device.prescription import FORM, DevicePrescription, fit_of
from nearfab.families.device.release import DeviceRelease
from nearfab.families.device.simulation import DeviceSimulation
from nearfab.orders import DesignRequest


class DeviceFamily:
    name: str = "device"
    machine_types: tuple[str, ...] = (FDM_PRINTER, SUPERVISED_PRINTER)

    def __init__(self) -> None:
        self.prescription = DevicePrescription()
        self.machines = DeviceMachines()
        self.release = DeviceRelease()
        self.labels = DeviceLabels()
        self.simulation = DeviceSimulation()
        self.prescription_form = FORM

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        Envelope.from_dict(envelope)

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        """The patient's flowmeter from the fit the prescription states; Refused (the order
        stops) outside the envelope."""
        qmax, size = fit_of(request.identifiers)
        envelope = Envelope.from_dict(request.master_file.design_envelope)
        design = design_flowmeter(qmax_ml_s=qmax, size=size, units=request.units, envelope=envelope)
        return design, None

    def material_needed_g(self, design: Mapping[str, Any]) -> float:
        return material_g(design)

    def duration_s(self, design: Mapping[str, Any]) -> float:
        return print_time_s(design)

    def collection(self, design: Mapping[str, Any]) -> Collection | None:
        """Printed from stock filament: nothing is collected from the patient."""
        return None
