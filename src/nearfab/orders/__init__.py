"""Orders: FHIR prescriptions in, pseudonymised patients, orders and their lifecycle."""

from nearfab.orders.enums import OrderStatus
from nearfab.orders.fhir import FhirInputError, PrescriptionIn, parse_prescriptions
from nearfab.orders.models import Order, Patient, PatientIdentity, Prescription
from nearfab.orders.services import Designer, DesignRequest, OrderService
from nearfab.orders.vault import IdentityVault

__all__ = [
    "DesignRequest",
    "Designer",
    "FhirInputError",
    "IdentityVault",
    "Order",
    "OrderService",
    "OrderStatus",
    "Patient",
    "PatientIdentity",
    "Prescription",
    "PrescriptionIn",
    "parse_prescriptions",
]
