"""The bioprint product in the demo network (tests' `seeded` world): a master file at GSTT-PH,
an extrusion bioprinter qualified for it, the site's operator trained, the QP named, and
approved lots of a donor's islet isolation (with its DIN) and of bioink; and a FHIR bundle of
an islet prescription. Every step goes through the services the API and CLI call."""

from __future__ import annotations

import copy
import random
from datetime import timedelta
from typing import Any

from tests import flow_helpers as fh
from tests.conftest import TEST_PASSWORD

from nearfab.bootstrap import App
from nearfab.demo import cell_therapy_bundle
from nearfab.families.bioprint.family import DIN_SYSTEM
from nearfab.families.bioprint.machines import DEFAULT_PROCESS_PARAMETERS, EXTRUSION_BIOPRINTER
from nearfab.families.isbt128 import parse_din

SITE, MACHINE = "GSTT-PH", "GSTT bioprinter 1"
CODE = "MF-ISLET-BP"
ISLETS, BIOINK = "ISLET-ISO", "BIOINK-GA"
SNOMED = "http://snomed.info/sct"
# a test product code (not a real SNOMED CT concept)
ISLET_CODE = {"system": SNOMED, "code": "999000401", "display": "Bioprinted islets (test)"}
# ICCBBA ST-001 Appendix A: DIN G1234 17 654321, keyboard entry check character A
DIN = "=G12341765432100"
DIN_TYPED = "G1234 17 654321 [A]"
# ST-001 §7.5.1.1: A9998 18 123456 has K = N: another donor
OTHER_DIN = "A9998 18 123456 N"

ENVELOPE: dict[str, Any] = {
    "dose_per_kg": {"min": 5000, "max": 15000},
    "body_weight_kg": {"min": 30, "max": 120},
    "ieq_per_ml_bioink": 20000,
    "construct_volume_ml": 0.5,
    "max_constructs": 80,
    "print_s_per_construct": 90,
    "shelf_life_h": 12,
    "release_h": 3,
    "transport_h": 2,
    "isolation_to_print_h": 24,
}
RELEASE_RULE: dict[str, Any] = {
    "mode": "rtrt",
    "tests": ["donor_isolation", "ieq_dose", "viability", "potency", "sterility"],
    "in_process": ["ieq_dose", "viability"],
}
ISOLATION = {"kind": "islet_isolation", "din": DIN, "ieq": 600000, "purity": 0.6, "viability": 0.9}
BIOINK_LOT = {
    "kind": "bioink",
    "composition": "GelMA 5% + alginate 1%",
    "grade": "gmp",
    "sterility_certificate": "CoA-BI-0042",
}


def master_file(site_ids: list[str], **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "code": CODE,
        "title": "Bioprinted islet micro-tissues for transplant",
        "product_family": "bioprint",
        "accepted_codes": [ISLET_CODE],
        "design_envelope": copy.deepcopy(ENVELOPE),
        "process_parameters": copy.deepcopy(DEFAULT_PROCESS_PARAMETERS),
        "cqa_specs": {"dose": {"min_pct": 80, "max_pct": 120}, "viability": {"min": 0.7}},
        "release_rule": copy.deepcopy(RELEASE_RULE),
        "material_code": ISLETS,
        "shelf_life_days": 1,
        "storage": "Store at 15-25 °C",
        "gtin": "09506000134390",
        "units_per_pack": 100,
        "allowed_site_ids": site_ids,
    }
    data.update(changes)
    return data


def add_bioprint(app: App, isolation: dict[str, Any] | None = None) -> None:
    """The bioprint product at GSTT-PH (module docstring)."""
    _product(app)
    receive_lot(app, ISLETS, "Donor islet isolation", isolation or ISOLATION, 2.0, days=3)
    receive_lot(app, BIOINK, "GelMA-alginate bioink", BIOINK_LOT, 500.0, days=3)


def receive_lot(
    app: App,
    material: str,
    description: str,
    attributes: dict[str, Any],
    grams: float,
    *,
    days: int,
    number: str = "001",
) -> str:
    """A lot received at GSTT-PH (expiring in `days`) and approved by the QP; its id."""
    site = fh.site_id(app, SITE)
    with app.uow() as uow:
        lot = app.materials.receive_lot(
            uow,
            fh.actor(app, "pharmacist"),
            lot_number=f"{material}-{number}",
            material_code=material,
            description=description,
            site_id=site,
            supplier="Islet Isolation Unit",
            expiry=app.clock.now().date() + timedelta(days=days),
            quantity_g=grams,
            attributes=attributes,
            product_family="bioprint",
        )
    with app.uow() as uow:
        app.materials.set_status(
            uow, fh.actor(app, "qp"), lot.id, "approved", reason="isolation QC reviewed"
        )
    return str(lot.id)


def _product(app: App) -> None:
    qp, admin = fh.actor(app, "qp"), fh.actor(app, "admin")
    site = fh.site_id(app, SITE)
    with app.uow() as uow:
        mf = app.master_files.draft(uow, qp, master_file([site]))
    with app.uow() as uow:
        app.master_files.approve(uow, qp, mf.id, password=TEST_PASSWORD, meaning="QP approval")
    with app.uow() as uow:
        app.master_files.make_effective(uow, qp, mf.id)
    with app.uow() as uow:
        request = app.master_files.assign_qp(uow, admin, CODE, "qp", reason="QP on the licence")
    with app.uow() as uow:
        app.users.decide_request(
            uow, fh.actor(app, "admin-two"), request.id, approve=True, reason="licence checked"
        )
    with app.uow() as uow:
        machine = app.network.register_machine(
            uow,
            admin,
            site_id=site,
            name=MACHINE,
            machine_type=EXTRUSION_BIOPRINTER,
            firmware="bp 2.1",
            serial_number="BP-0001",
        )
    with app.uow() as uow:
        app.network.qualify_machine(uow, qp, machine.id, CODE)
    with app.uow() as uow:
        app.network.record_training(uow, qp, fh.actor(app, "operator").user_id, CODE)


def bundle(
    app: App,
    seed: int,
    *,
    dose_per_kg: float = 6000.0,
    weight_kg: float = 70.0,
    din: str | None = DIN,
) -> dict[str, Any]:
    """A FHIR bundle: the recipient, a MedicationRequest of IEQ/kg naming the donor's DIN,
    and the recipient's body weight (an Observation)."""
    made = cell_therapy_bundle(
        random.Random(seed),
        today=app.clock.now().date(),
        dose_per_kg=dose_per_kg,
        weight_kg=weight_kg,
        dose_unit="{IEQ}/kg",
    )
    request = made["entry"][1]["resource"]
    request["medicationCodeableConcept"] = {"coding": [ISLET_CODE]}
    request["dosageInstruction"][0]["text"] = f"{dose_per_kg:g} IEQ/kg, one transplant"
    if din is not None:
        request["identifier"] = [{"system": DIN_SYSTEM, "value": din}]
    return made


def din13(value: str) -> str:
    return parse_din(value).din
