"""The cell_therapy product family: autologous cell therapy expanded in a closed automated
micro-factory next to the patient (issue 15 part 2). Not registered until every part is real."""

from __future__ import annotations

from nearfab.families.cell_therapy.labels import CellTherapyLabels
from nearfab.families.cell_therapy.machines import CellTherapyMachines
from nearfab.families.cell_therapy.prescription import CellTherapyPrescription
from nearfab.families.cell_therapy.release import CellTherapyRelease
from nearfab.families.cell_therapy.simulation import CellTherapySimulation


class CellTherapyFamily:
    name: str = "cell_therapy"
    machine_types: tuple[str, ...] = ("cell_micro_factory",)

    def __init__(self) -> None:
        # one object per part of the kit; each implements the Protocol in <domain>/kit.py
        self.prescription = CellTherapyPrescription()
        self.machines = CellTherapyMachines()
        self.release = CellTherapyRelease()
        self.labels = CellTherapyLabels()
        self.simulation = CellTherapySimulation()

    # check_envelope, design, material_needed_g, duration_s: the design part (issue 15)
