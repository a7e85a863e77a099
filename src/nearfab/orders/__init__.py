"""Orders: FHIR prescriptions in, pseudonymised patients, orders and their lifecycle."""

from nearfab.orders.doseadjust import DoseAdjustment, check_dose_rule
from nearfab.orders.enums import OrderStatus
from nearfab.orders.fhir import FhirInputError, PrescriptionIn, parse_prescriptions
from nearfab.orders.handover import (
    HANDOVER_WAITS,
    RELEASE_FORMAT,
    TRANSFER_FORMAT,
    cancellation_body,
    check_transferable,
    handover_body,
    move_copy,
    release_body,
    transfer_body,
    transferred_handover,
)
from nearfab.orders.identification import PatientMatch, PresentedIdentifiers
from nearfab.orders.identifiers import IdentifierKind
from nearfab.orders.models import (
    Order,
    Patient,
    PatientIdentifierHash,
    PatientIdentity,
    Prescription,
)
from nearfab.orders.schemas import PatientMatchOut
from nearfab.orders.services import Designer, DesignRequest, OrderService
from nearfab.orders.vault import IdentityVault

__all__ = [
    "HANDOVER_WAITS",
    "RELEASE_FORMAT",
    "TRANSFER_FORMAT",
    "DesignRequest",
    "Designer",
    "DoseAdjustment",
    "FhirInputError",
    "IdentifierKind",
    "IdentityVault",
    "Order",
    "OrderService",
    "OrderStatus",
    "Patient",
    "PatientIdentifierHash",
    "PatientIdentity",
    "PatientMatch",
    "PatientMatchOut",
    "Prescription",
    "PrescriptionIn",
    "PresentedIdentifiers",
    "cancellation_body",
    "check_dose_rule",
    "check_transferable",
    "handover_body",
    "move_copy",
    "parse_prescriptions",
    "release_body",
    "transfer_body",
    "transferred_handover",
]
