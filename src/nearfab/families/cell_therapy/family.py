"""The cell_therapy product family: autologous cell therapy expanded in a closed automated
micro-factory next to the patient (issue 15 part 2).

The design (logic/design.py) is made from the dose the prescription part accepted (viable cells
for this patient: dose per kg × body weight) and the body weight order intake passes with it,
inside the master file's design envelope. The machine time is the expected days of expansion
(the growth model's, in whole days); the material is the culture medium the run draws (taken as
1 g per mL).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.common.errors import Refused
from nearfab.designs.registry import Collection
from nearfab.families.cell_therapy.labels import CellTherapyLabels
from nearfab.families.cell_therapy.logic.chain import PRE_COLLECTION_RECORDS, collection_din
from nearfab.families.cell_therapy.logic.design import Envelope, design_product
from nearfab.families.cell_therapy.machines import CELL_MICRO_FACTORY, CellTherapyMachines
from nearfab.families.cell_therapy.prescription import CELLS, KG, CellTherapyPrescription
from nearfab.families.cell_therapy.release import CellTherapyRelease
from nearfab.families.cell_therapy.simulation import CellTherapySimulation
from nearfab.orders import DesignRequest
from nearfab.orders.form import PrescriptionForm

SECONDS_PER_DAY = 86_400.0
APHERESIS_TO_SEEDING_H = 24.0  # fresh apheresis product, shipped cold, seeded within 24 h
HARVEST_TO_INFUSION_H = 48.0  # formulation, cryopreservation, QC release, shipment
MEDIUM_G_PER_ML = 1.0  # culture medium is water-like: 1 mL weighs 1 g (1.00-1.01)
# the FHIR identifier system of an ISBT 128 DIN (HL7 extension device-din: "If the content is
# from an ICCBBA-encoded UDI, the URI to use for the system is ..."): a MedicationRequest
# identifier in this system names the patient's collection the product is made from
DIN_SYSTEM = "http://hl7.org/fhir/NamingSystem/iccbba-din"


class CellTherapyFamily:
    name: str = "cell_therapy"
    machine_types: tuple[str, ...] = (CELL_MICRO_FACTORY,)

    def __init__(self) -> None:
        # one object per part of the kit; each implements the Protocol in <domain>/kit.py
        self.prescription = CellTherapyPrescription()
        self.machines = CellTherapyMachines()
        self.release = CellTherapyRelease()
        self.labels = CellTherapyLabels()
        self.simulation = CellTherapySimulation()
        # what the web prescription form offers (orders/form.py): viable cells per kg of body
        # weight with the weight, one infusion
        self.prescription_form = PrescriptionForm(
            dose_units=(
                ("10*6{cells}/kg", "10⁶ viable cells/kg"),
                ("{cells}/kg", "viable cells/kg"),
            ),
            body_weight=True,
            course=False,
        )

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        Envelope.from_dict(envelope)

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        if request.dose.unit != CELLS:
            # the prescription part accepts viable cells only: anything else is a caller's error
            raise Refused(
                f"dose {request.dose}: a cell product is designed from a dose in viable cells "
                f"({CELLS})",
                field="dose",
                code="dose_unit",
            )
        weight = request.weight
        if weight is None or weight.unit != KG:
            raise Refused(
                "a cell product is designed for the patient's body weight in kg, and the "
                f"prescription gives {'none' if weight is None else weight}",
                field="body_weight_kg",
                code="body_weight",
            )
        if request.units != 1:
            raise Refused(
                f"a cell product is made for one infusion, not {request.units}",
                field="units",
                code="outside_envelope",
            )
        envelope = Envelope.from_dict(request.master_file.design_envelope)
        design = design_product(
            target_cells=request.dose.value, body_weight_kg=weight.value, envelope=envelope
        ).to_dict()
        for joined in request.identifiers:
            system, _, value = joined.partition("|")
            if system == DIN_SYSTEM:  # the label prints it (labels.label_details)
                design["din"] = self.labels.din(value).scanned()
                break
        return design, None

    def material_needed_g(self, design: Mapping[str, Any]) -> float:
        return round(float(design.get("medium_ml", 0.0)) * MEDIUM_G_PER_ML, 4)

    def duration_s(self, design: Mapping[str, Any]) -> float:
        return SECONDS_PER_DAY * int(design.get("expansion_days", 0))

    def collection(self, design: Mapping[str, Any]) -> Collection:
        """Autologous: the patient's cells are collected (apheresis) before the run. The fresh
        collection reaches the micro-factory and is seeded within a day; after harvest the
        product is formulated, cryopreserved, QC-tested and shipped for infusion two days later
        at the earliest (sterility may still be pending then: release follow-up)."""
        return Collection(
            to_start_s=APHERESIS_TO_SEEDING_H * 3600.0,
            to_administration_s=HARVEST_TO_INFUSION_H * 3600.0,
        )

    # --- scheduling.kit.CollectionKit: what is recorded before and at the collection ---

    def pre_collection_records(self, design: Mapping[str, Any]) -> tuple[str, ...]:
        """Recorded (e-signed by the clinician) before the apheresis: the patient's
        eligibility and informed consent."""
        return PRE_COLLECTION_RECORDS

    def collection_identifier(
        self, design: Mapping[str, Any], presented: str, *, first: bool
    ) -> str:
        """The DIN of the collection bag (scanned, or typed with its check character): at the
        order's first collection the prescription's DIN when it named one (another is
        refused); a new collection after a failed run is a new donation with a DIN of its own,
        bound now, as is any DIN when the prescription named none."""
        named = self.labels.chain_identifier(design) if first else None
        return collection_din(named, presented, field="identifier")
