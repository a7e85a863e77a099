"""Prescriptions carrying the identifiers a hospital knows a patient by (issue 20): an NHS
number, a hospital number typed MR, a wristband GSRN, a birth date, and the MedicationRequest's
prescription ID, built on the demo Bundle (`flow_helpers.bundle`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date
from typing import Any

from tests import flow_helpers as fh

from nearfab.bootstrap import App

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
MRN_SYSTEM = "https://fhir.gstt.example/Id/hospital-number"
GSRN_SYSTEM = "https://www.gs1.org/gsrn"
EPS_SYSTEM = "https://fhir.nhs.uk/Id/prescription-order-number"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(frozen=True)
class Person:
    nhs_number: str
    mrn: str
    gsrn: str
    birth_date: date
    prescription_id: str
    name: str


# published valid test NHS numbers (modulus 11 worked in tests/orders/test_patient_identifiers.py)
# and GSRNs whose GS1 mod-10 check digits are worked there too
ALICE = Person(
    "9434765919",
    "K123456",
    "950110153000000014",
    date(2017, 3, 14),
    "A7B86F-ZX1234-11111M",
    "Alice Testpatient",
)
BOB = Person(
    "9434765870",
    "K654321",
    "123456789012345675",
    date(2016, 11, 2),
    "B1C2D3-ZX9876-22222N",
    "Bob Testpatient",
)


def bundle_for(app: App, person: Person, *, typed_mrn: bool = True, **order: Any) -> dict[str, Any]:
    doc = copy.deepcopy(fh.bundle(app, birth_date=person.birth_date, **order))
    patient = doc["entry"][0]["resource"]
    mrn: dict[str, Any] = {"system": MRN_SYSTEM, "value": person.mrn}
    if typed_mrn:
        mrn["type"] = {"coding": [{"system": V2_0203, "code": "MR"}]}
    patient["identifier"] = [
        {"system": NHS_SYSTEM, "value": person.nhs_number},
        mrn,
        {"system": GSRN_SYSTEM, "value": person.gsrn},
    ]
    given, family = person.name.split(" ")
    patient["name"] = [{"family": family, "given": [given]}]
    rx = doc["entry"][1]["resource"]
    rx["identifier"] = [{"system": EPS_SYSTEM, "value": person.prescription_id}]
    return doc


def submit_for(app: App, person: Person, **kw: Any) -> str:
    """The clinician sends the person's prescription; the designed order's id."""
    with app.uow() as uow:
        orders = app.orders.submit(uow, fh.actor(app, "clinician"), bundle_for(app, person, **kw))
        assert len(orders) == 1 and orders[0].status == "designed", orders[0].stop_reason
        return orders[0].id


def require_birth_date(app: App, site_code: str, required: bool = True, **kw: Any) -> None:
    with app.uow() as uow:
        site_id = app.network.get_site(uow, site_code).id
    with app.uow() as uow:
        app.network.set_patient_identification(
            uow,
            fh.actor(app, "admin"),
            site_id,
            birth_date_required=required,
            reason="positive patient identification policy of the trust",
            **kw,
        )
