"""The solid_dose product family: 3D-printed tablets ("printlets") made at hospital pharmacies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.common.errors import Refused
from nearfab.designs.registry import Collection
from nearfab.families.solid_dose.labels import SolidDoseLabels
from nearfab.families.solid_dose.logic import Envelope, design_tablet, patient_group
from nearfab.families.solid_dose.machines import SolidDoseMachines
from nearfab.families.solid_dose.prescription import MG, SolidDosePrescription
from nearfab.families.solid_dose.release import SolidDoseRelease
from nearfab.families.solid_dose.simulation import SolidDoseSimulation
from nearfab.orders import DesignRequest
from nearfab.orders.form import PrescriptionForm

# material drawn per tablet beyond its own mass: purge line, skirt and first-layer waste
WASTE_FACTOR = 1.15
SECONDS_PER_UNIT = 60.0


class SolidDoseFamily:
    name: str = "solid_dose"
    machine_types: tuple[str, ...] = ("tablet_printer",)

    def __init__(self) -> None:
        # one object per part of the kit; each implements the Protocol in <domain>/kit.py
        self.prescription = SolidDosePrescription()
        self.machines = SolidDoseMachines()
        self.release = SolidDoseRelease()
        self.labels = SolidDoseLabels()
        self.simulation = SolidDoseSimulation()
        # what the web prescription form offers (orders/form.py): a mass per dose, a course
        self.prescription_form = PrescriptionForm(
            dose_units=((MG, "mg"), ("ug", "µg"), ("g", "g")), body_weight=False, course=True
        )

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        Envelope.from_dict(envelope)

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        if request.dose.unit != MG:
            # the prescription part accepts doses in mg only: anything else is a caller's error
            raise Refused(
                f"dose {request.dose}: a tablet is designed from a dose in {MG}",
                field="dose",
                code="dose_unit",
            )
        envelope = Envelope.from_dict(request.master_file.design_envelope)
        group = patient_group(request.birth_date, request.on)
        design = design_tablet(
            dose_mg=request.dose.value, units=request.units, group=group, envelope=envelope
        )
        return design.to_dict(), group

    def material_needed_g(self, design: Mapping[str, Any]) -> float:
        mass_mg = float(design.get("target_mass_mg", 0.0)) * int(design.get("units", 0))
        return round(mass_mg * WASTE_FACTOR / 1000.0, 4)

    def duration_s(self, design: Mapping[str, Any]) -> float:
        return SECONDS_PER_UNIT * int(design.get("units", 0))

    def collection(self, design: Mapping[str, Any]) -> Collection | None:
        """Made from stock material: nothing is collected from the patient."""
        return None
