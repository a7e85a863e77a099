"""The bioprint product family: islet-like micro-tissues bioprinted from a donor's pancreatic
islets for a recipient with type 1 diabetes, made for a transplant centre (issue 16).

Built only through the family kit (docs/families.md, docs/bioprint.md):

- prescription: IEQ per kg of recipient body weight (at least 5,000 IEQ/kg), the weight, and
  the donor's DIN (ISBT 128) as a MedicationRequest identifier: the transplant centre has
  allocated the donor pancreas to this recipient before it orders;
- design (design.py): bioink volume, constructs, islet tissue drawn, print time, shelf life;
- collection (designs.registry.Collection, scheduling.kit.CollectionKit): the donor's islet
  isolation is the starting material. It reaches the bioprinter within the envelope's
  `isolation_to_print_h`; its receipt is recorded with the DIN scanned off its container (it
  must be the prescription's: identity_mismatch otherwise), and no print starts before. The
  transplant slot is booked `release_h + transport_h` after the print ends, within the shelf
  life (design.check_shelf_life): this is how scheduling binds the print to the slot;
- lot choice (scheduling.kit.LotChoiceKit): only the order's donor's isolation is drawn;
- machines, release, labels, simulation: one module each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.common.errors import Refused
from nearfab.designs.registry import Collection
from nearfab.families.bioprint.design import TISSUE_G_PER_ML, Envelope, design_product
from nearfab.families.bioprint.labels import BioprintLabels
from nearfab.families.bioprint.machines import EXTRUSION_BIOPRINTER, BioprintMachines
from nearfab.families.bioprint.prescription import IEQ, KG, BioprintPrescription
from nearfab.families.bioprint.release import BioprintRelease
from nearfab.families.bioprint.simulation import BioprintSimulation
from nearfab.families.isbt128 import Isbt128Invalid, collection_din, parse_din
from nearfab.orders import DesignRequest
from nearfab.orders.form import ExtraField, PrescriptionForm

# the FHIR identifier system of an ISBT 128 DIN (HL7 NamingSystem iccbba-din), as cell_therapy
DIN_SYSTEM = "http://hl7.org/fhir/NamingSystem/iccbba-din"


def din_field(value: str, _envelope: Mapping[str, Any]) -> str:
    """The form's donor DIN: one that parses with its check character (Isbt128Invalid names
    what is wrong), sent as typed, as a transplant centre's FHIR would."""
    parse_din(value)
    return value.strip()


class BioprintFamily:
    name: str = "bioprint"
    machine_types: tuple[str, ...] = (EXTRUSION_BIOPRINTER,)

    def __init__(self) -> None:
        self.prescription = BioprintPrescription()
        self.machines = BioprintMachines()
        self.release = BioprintRelease()
        self.labels = BioprintLabels()
        self.simulation = BioprintSimulation()
        self.prescription_form = PrescriptionForm(
            dose_units=(("{IEQ}/kg", "IEQ/kg of recipient body weight"),),
            body_weight=True,
            course=False,
            # the donor's DIN as a MedicationRequest identifier, as the API's FHIR sends it,
            # its keyboard entry check character checked on the form (ISBT 128 ST-001 A.1)
            extra=(
                ExtraField(
                    "donor_din",
                    "Donor DIN (ISBT 128, with its check character)",
                    DIN_SYSTEM,
                    placeholder="G1234 17 654321 [A]",
                    check=din_field,
                ),
            ),
        )

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        Envelope.from_dict(envelope)

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        if request.dose.unit != IEQ:
            raise Refused(
                f"dose {request.dose}: islet micro-tissues are designed from a dose in {IEQ}",
                field="dose",
                code="dose_unit",
            )
        weight = request.weight
        if weight is None or weight.unit != KG:
            raise Refused(
                "islet micro-tissues are designed for the recipient's body weight in kg",
                field="body_weight_kg",
                code="body_weight",
            )
        if request.units != 1:
            raise Refused(
                f"islet micro-tissues are made for one transplant, not {request.units}",
                field="units",
                code="outside_envelope",
            )
        din = None
        for joined in request.identifiers:
            system, _, value = joined.partition("|")
            if system == DIN_SYSTEM:
                try:
                    din = self.labels.din(value).scanned()
                except Isbt128Invalid as exc:
                    raise Refused(
                        f"the prescription's donor DIN is not one: {exc.message}",
                        field="identifier",
                        code="isbt128_invalid",
                    ) from exc
                break
        if din is None:
            raise Refused(
                "an islet transplant is made from an allocated donor: the prescription must"
                f" name the donor's DIN (a MedicationRequest identifier in {DIN_SYSTEM})",
                field="identifier",
                code="donor_din_missing",
            )
        envelope = Envelope.from_dict(request.master_file.design_envelope)
        design = design_product(request.dose.value, weight.value, envelope)
        design["din"] = din
        return design, None

    def material_needed_g(self, design: Mapping[str, Any]) -> float:
        """The islet tissue the print draws from the donor's isolation lot (1 g per mL)."""
        return round(float(design.get("islet_tissue_ml", 0.0)) * TISSUE_G_PER_ML, 6)

    def duration_s(self, design: Mapping[str, Any]) -> float:
        return float(design.get("constructs", 0)) * float(design.get("print_s_per_construct", 0))

    def collection(self, design: Mapping[str, Any]) -> Collection:
        """The donor's islet isolation reaches the printer within `isolation_to_print_h`;
        the transplant is `release_h + transport_h` after the print ends (module docstring)."""
        return Collection(
            to_start_s=float(design.get("isolation_to_print_h", 0.0)) * 3600.0,
            to_administration_s=(
                float(design.get("release_h", 0.0)) + float(design.get("transport_h", 0.0))
            )
            * 3600.0,
        )

    # --- scheduling.kit.CollectionKit ---

    def pre_collection_records(self, design: Mapping[str, Any]) -> tuple[str, ...]:
        """The recipient's informed consent to the transplant, signed before the isolation
        is received for this order."""
        return ("consent",)

    def collection_identifier(
        self, design: Mapping[str, Any], presented: str, *, first: bool
    ) -> str:
        """The DIN on the isolation's container: the prescription's donor (always: a new
        isolation for this order is a new allocation, and a new prescription)."""
        return collection_din(self.labels.chain_identifier(design), presented, field="identifier")

    # --- scheduling.kit.LotChoiceKit ---

    def accepts_lot(self, design: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
        """Only the order's donor's islet isolation makes its micro-tissues: a lot of another
        donor (another DIN) is never drawn, whatever its expiry."""
        want = design.get("din")
        if attributes.get("kind") != "islet_isolation" or not want or not attributes.get("din"):
            return False
        try:
            return parse_din(str(attributes["din"])).din == parse_din(str(want)).din
        except Isbt128Invalid:
            return False
