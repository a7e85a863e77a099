"""Demo network: sites, printers, lots, approved master files, one user per role, and a
generator of synthetic FHIR prescriptions. Used by `nearfab init --demo` and `nearfab demo`."""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from nearfab.bootstrap import App
from nearfab.families.cell_therapy.family import DIN_SYSTEM
from nearfab.families.cell_therapy.machines import CELL_MICRO_FACTORY, DEFAULT_PROCESS_PARAMETERS
from nearfab.families.solid_dose.codes import product_codings
from nearfab.identity import AuditAction, AuditEntry, Role, User, actor_of, audit, system_actor
from nearfab.network import SiteStatus
from nearfab.orders.identifiers import nhs_check_digit

SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"

HYDROCORTISONE = "MF-HC-PRINTLET"
CAR_T = "MF-CART-CMF"  # the demo's cell product, made in a micro-factory at GSTT-PH
AUTOPILOT = "qp-autopilot"
PROPRANOLOL = "MF-PROP-PRINTLET"

PROCESS_PARAMETERS = {
    "nozzle_temperature_c": {"target": 180.0, "low": 175.0, "high": 185.0, "unit": "°C"},
    "extrusion_pressure_kpa": {"target": 450.0, "low": 390.0, "high": 510.0, "unit": "kPa"},
    "print_speed_mm_s": {"target": 20.0, "low": 18.0, "high": 22.0, "unit": "mm/s"},
    "chamber_humidity_pct": {"target": 35.0, "low": 20.0, "high": 50.0, "unit": "%RH"},
}
RELEASE_RULE = {
    "mode": "rtrt",
    "tests": ["ph_eur_2_9_40", "ph_eur_2_9_5", "unit_mass"],
    "max_units_outside_tolerance": 0,
}
CQA_SPECS = {
    "unit_mass": {"tolerance_pct": 7.5, "method": "in-line balance, every unit"},
    "content_uniformity": {"method": "Ph. Eur. 2.9.40 by mass variation", "l1": 15.0},
    "mass_uniformity": {"method": "Ph. Eur. 2.9.5"},
}

# the batch-record steps of the demo products, in order: a line clearance and the filament
# loaded (a critical entry a second person verifies) before the machine prints, then a visual
# inspection of the made printlets
RECORD_STEPS = [
    {
        "code": "line_clearance",
        "title": "Line clearance: printer, bench and balance free of the previous product",
        "manual": True,
        "critical": False,
        "entry": {},
    },
    {
        "code": "filament_loaded",
        "title": "Filament lot and mass loaded on the printer",
        "manual": True,
        "critical": True,
        "entry": {"filament_lot": "text", "mass_loaded_g": "g"},
    },
    {
        "code": "run_finished",
        "title": "Printing with in-line weighing of every unit (machine)",
        "manual": False,
        "critical": False,
        "entry": {},
    },
    {
        "code": "visual_inspection",
        "title": "Visual inspection of the printlets (shape, colour, defects)",
        "manual": True,
        "critical": False,
        "entry": {"units_rejected": "count"},
    },
]

# -- the cell therapy product (family cell_therapy, docs/cell-therapy.md) -------------------------
# a demo product code (not a real SNOMED CT concept: no cell product is in the demo's code data)
CAR_T_CODE = {"system": SNOMED, "code": "999000301", "display": "Autologous CAR-T cells (demo)"}
CELL_SITE, CELL_MACHINE, CELL_MEDIUM = "GSTT-PH", "GSTT micro-factory 1", "TCELL-MED-1"
# the worked example of docs/cell-therapy.md: 2e6 viable cells/kg for 70 kg is 1.4e8 cells,
# grown in 7 days from 1e7 seeded cells, one 70 mL bag, 900 mL of medium
CELL_ENVELOPE: dict[str, Any] = {
    "dose_per_kg": {"min": 1.0e6, "max": 5.0e6},
    "body_weight_kg": {"min": 10, "max": 150},
    "max_total_cells": 5.0e8,
    "seed_cells": 1.0e7,
    "culture_volume_ml": 200,
    "max_density_cells_per_ml": 1.0e7,
    "doubling_time_h": 36,
    "doubling_time_cv": 0.25,
    "process_yield": 0.8,
    "expansion_days": {"min": 5, "max": 12},
    "viability_min": 0.7,
    "cells_per_ml_max": 2.0e6,
    "bag_volume_ml": {"min": 10, "max": 100},
    "medium_ml_per_day": 100,
}
# how the sites are held to one another (docs/comparability.md): a site's units within ±3 % of
# target of the rest of the network's (TOST at α 0.05), and a Cpk of at least 1.33
COMPARABILITY: dict[str, Any] = {
    "margins": {"measurement_pct": 3.0},
    "alpha": 0.05,
    "min_cpk": 1.33,
}
# release from the micro-factory's in-process counts (dose per kg, viability) with sterility
# pending at release (followed up). The demo keeps the rule short so that a cell batch made
# live reaches the QP without a laboratory; a master file that also lists identity_purity,
# endotoxin and mycoplasma waits for the laboratory's entered results (nearfab batches
# lab-result), as tests/quality/test_lab_results*.py show
CELL_RELEASE_RULE: dict[str, Any] = {
    "mode": "rtrt",
    "tests": ["viable_cell_dose", "viability", "sterility"],
    "in_process": ["viable_cell_dose", "viability"],
}
CELL_CQA_SPECS: dict[str, Any] = {
    "dose": {"min_pct": 80, "max_pct": 120},
    "viability": {"min": 0.7},
    "growth_trajectory": {"tolerance_pct": 50},
}
CELL_RECORD_STEPS = [
    {
        "code": "line_clearance",
        "title": "Line clearance: micro-factory, cabinet and kit free of any other patient's cells",
        "manual": True,
        "critical": False,
        "entry": {},
    },
    {
        "code": "collection_received",
        "title": "Patient's collection received: its DIN checked against the order",
        "manual": True,
        "critical": True,
        "entry": {"chain_of_identity": "text"},
    },
    {
        "code": "run_finished",
        "title": "Expansion, harvest and fill of the infusion bags (micro-factory)",
        "manual": False,
        "critical": False,
        "entry": {},
    },
    {
        "code": "bags_inspected",
        "title": "Infusion bags inspected and placed in controlled-rate freezing",
        "manual": True,
        "critical": False,
        "entry": {"bags_rejected": "count"},
    },
]
CELL_LOTS = [  # (material, description, attributes)
    (
        CELL_MEDIUM,
        "Serum-free T-cell expansion medium",
        {"kind": "medium", "grade": "gmp", "sterility_certificate": "CoA-TCM-2041"},
    ),
    (
        "TCELL-ACT-1",
        "Anti-CD3/CD28 activation reagent",
        {"kind": "activation_beads", "grade": "gmp", "sterility_certificate": "CoA-ACT-118"},
    ),
]

USERS = [
    ("admin", "Ada Admin", [Role.ADMIN], None),
    # the second network administrator: qp and admin grants need one to request and another
    # to approve (separation of duties, docs/accounts-and-signatures.md)
    ("admin-two", "Bea Second-Admin", [Role.ADMIN], "CTRL"),
    ("qp", "Quentin Parr (QP)", [Role.QP], "CTRL"),
    # the demo's automatic signer: its own account, so no person's signature is ever applied
    # by software (21 CFR 11.200); never create it outside a demo
    (AUTOPILOT, "QP autopilot (demo only, not a person)", [Role.QP], "CTRL"),
    ("planner", "Priya Planner", [Role.PLANNER], "CTRL"),
    ("auditor", "Aud Itor", [Role.AUDITOR], "CTRL"),
    ("pharmacist", "Phil Harmon", [Role.PHARMACIST], "GSTT-PH"),
    ("clinician", "Dr Clare Nice", [Role.CLINICIAN], "GSTT-PH"),
    ("operator", "Olu Operator", [Role.OPERATOR], "GSTT-PH"),
    ("operator-man", "Mani Operator", [Role.OPERATOR], "MAN-PH"),
    ("operator-mob", "Mo Operator", [Role.OPERATOR], "MOB-1"),
]
SITES = [
    ("CTRL", "nearfab Control Site (licence holder)", "control"),
    ("GSTT-PH", "St Thomas' Hospital Pharmacy", "hospital_pharmacy"),
    ("MAN-PH", "Manchester Children's Hospital Pharmacy", "hospital_pharmacy"),
    ("MOB-1", "Mobile Unit 1", "mobile"),
]
MACHINES = [
    ("GSTT-PH", "GSTT printer A", "PR-0001"),
    ("GSTT-PH", "GSTT printer B", "PR-0002"),
    ("MAN-PH", "MAN printer A", "PR-0003"),
    ("MOB-1", "Mobile printer", "PR-0004"),
]
CELL_MACHINES = [(CELL_SITE, CELL_MACHINE, "CMF-DEMO-01")]


# the demo's automated operators by site: the demo's software signs batch steps under them
AUTOMATED_OPERATORS = {
    "GSTT-PH": "operator-auto",
    "MAN-PH": "operator-man-auto",
    "MOB-1": "operator-mob-auto",
}
AUTOMATED_OPERATOR_NAME = "Demo operator (automated)"


@dataclass(frozen=True)
class DemoSeed:
    password: str
    generated: bool
    usernames: list[str]


def is_seeded(app: App) -> bool:
    """True once a demo seed ran to its end (its last act is an audit row saying so)."""
    with app.uow() as uow:
        marker = select(AuditEntry).where(
            AuditEntry.entity_type == "platform", AuditEntry.entity_id == "demo-seed"
        )
        return uow.session.scalar(marker.limit(1)) is not None


def seed(app: App, password: str | None = None) -> DemoSeed:
    """Create the demo network. Refuses to run twice, or on a database that holds anything."""
    if is_seeded(app):
        raise RuntimeError("this database already holds the demo network")
    with app.uow() as uow:
        if uow.session.scalar(select(User).limit(1)) is not None:
            raise RuntimeError(
                "this database already holds users (perhaps a demo seed that stopped half-way);"
                " use a new --data-dir"
            )
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    boot = system_actor("demo-seed")
    site_ids: dict[str, str] = {}
    for code, name, kind in SITES:
        with app.uow() as uow:
            site = app.network.create_site(uow, boot, code=code, name=name, kind=kind)
        site_ids[code] = site.id
        for target, why in (
            (SiteStatus.APPROVED, "site approval inspection passed"),
            (SiteStatus.ACTIVE, "site opened"),
        ):
            with app.uow() as uow:
                app.network.transition_site(uow, boot, site.id, target, reason=why)
    users = _seed_users(app, boot, password, site_ids)
    with app.uow() as uow:
        qp = actor_of(users["qp"], uow.session)
        admin = actor_of(users["admin"], uow.session)
        approver = actor_of(users["admin-two"], uow.session)
    producing = [site_ids["GSTT-PH"], site_ids["MAN-PH"], site_ids["MOB-1"]]
    master_files = [hydrocortisone_master_file(producing), propranolol_master_file(producing[:2])]
    for data in master_files:
        with app.uow() as uow:
            mf = app.master_files.draft(uow, qp, data)
        with app.uow() as uow:
            app.master_files.approve(
                uow, qp, mf.id, password=password, meaning="QP approval of master file"
            )
        with app.uow() as uow:
            app.master_files.make_effective(uow, qp, mf.id)
        for certifier in ("qp", AUTOPILOT):  # who may certify its batches
            with app.uow() as uow:
                request = app.master_files.assign_qp(
                    uow,
                    admin,
                    data["code"],
                    users[certifier].id,
                    reason="QP named on the manufacturing licence for this product",
                )
            with app.uow() as uow:  # a second administrator approves (separation of duties)
                app.users.decide_request(
                    uow, approver, request.id, approve=True, reason="licence checked"
                )
    for site_code, name, serial in MACHINES:
        with app.uow() as uow:
            machine = app.network.register_machine(
                uow,
                admin,
                site_id=site_ids[site_code],
                name=name,
                machine_type="tablet_printer",
                firmware="fw 2.4.1",
                serial_number=serial,
            )
        for data in master_files:
            if site_ids[site_code] in data["allowed_site_ids"]:
                with app.uow() as uow:
                    app.network.qualify_machine(uow, qp, machine.id, data["code"])
    for username in ("operator", "operator-man", "operator-mob"):
        for data in master_files:
            with app.uow() as uow:
                app.network.record_training(uow, qp, users[username].id, data["code"])
    today = app.clock.now().date()
    # each site receives its own lots (site scoping): the pharmacist, or the site's operator
    receivers = {"GSTT-PH": "pharmacist", "MAN-PH": "operator-man", "MOB-1": "operator-mob"}
    for site_code in ("GSTT-PH", "MAN-PH", "MOB-1"):
        with app.uow() as uow:
            receiver = actor_of(users[receivers[site_code]], uow.session)
        for material, loading, desc in (
            ("HC-FIL-2.5", 0.025, "Hydrocortisone 2.5 % w/w HPMC filament"),
            ("PROP-FIL-10", 0.10, "Propranolol 10 % w/w filament"),
        ):
            with app.uow() as uow:
                lot = app.materials.receive_lot(
                    uow,
                    receiver,
                    lot_number=f"{material}-{site_code}-001",
                    material_code=material,
                    description=desc,
                    site_id=site_ids[site_code],
                    supplier="Filament Pharma Ltd",
                    expiry=today + timedelta(days=365),
                    quantity_g=500.0,
                    attributes={"drug_loading": loading},
                    assay_pct=99.6,
                )
            with app.uow() as uow:
                app.materials.set_status(
                    uow, qp, lot.id, "approved", reason="certificate of analysis reviewed"
                )
    _seed_cell_therapy(app, users, site_ids, password)
    with app.uow() as uow:  # the marker that the whole network is there
        audit(
            uow,
            boot,
            AuditAction.CREATE,
            "platform",
            "demo-seed",
            new={
                "sites": len(SITES),
                "machines": len(MACHINES) + len(CELL_MACHINES),
                "users": len(users),
            },
        )
        uow.commit()
    return DemoSeed(password=password, generated=generated, usernames=list(users))


def _seed_cell_therapy(
    app: App, users: dict[str, User], site_ids: dict[str, str], password: str
) -> None:
    """The cell therapy product at GSTT-PH: its master file (the QP alone certifies its batches:
    the demo autopilot never releases a cell product), a qualified micro-factory, the site's
    operator trained, and approved lots of medium and activation reagent."""
    with app.uow() as uow:
        qp = actor_of(users["qp"], uow.session)
        admin = actor_of(users["admin"], uow.session)
        approver = actor_of(users["admin-two"], uow.session)
        receiver = actor_of(users["pharmacist"], uow.session)
    site = site_ids[CELL_SITE]
    with app.uow() as uow:
        mf = app.master_files.draft(uow, qp, car_t_master_file([site]))
    with app.uow() as uow:
        app.master_files.approve(uow, qp, mf.id, password=password, meaning="QP approval")
    with app.uow() as uow:
        app.master_files.make_effective(uow, qp, mf.id)
    with app.uow() as uow:
        request = app.master_files.assign_qp(
            uow, admin, CAR_T, users["qp"].id, reason="QP named on the licence for this product"
        )
    with app.uow() as uow:
        app.users.decide_request(uow, approver, request.id, approve=True, reason="licence checked")
    for site_code, name, serial in CELL_MACHINES:
        with app.uow() as uow:
            machine = app.network.register_machine(
                uow,
                admin,
                site_id=site_ids[site_code],
                name=name,
                machine_type=CELL_MICRO_FACTORY,
                firmware="cmf 1.0",
                serial_number=serial,
            )
        with app.uow() as uow:
            app.network.qualify_machine(uow, qp, machine.id, CAR_T)
    with app.uow() as uow:
        app.network.record_training(uow, qp, users["operator"].id, CAR_T)
    today = app.clock.now().date()
    for material, desc, attributes in CELL_LOTS:
        with app.uow() as uow:
            lot = app.materials.receive_lot(
                uow,
                receiver,
                lot_number=f"{material}-{CELL_SITE}-001",
                material_code=material,
                description=desc,
                site_id=site,
                supplier="Cell Media Ltd",
                expiry=today + timedelta(days=180),
                quantity_g=10_000.0,
                attributes=attributes,
                product_family="cell_therapy",
            )
        with app.uow() as uow:
            app.materials.set_status(
                uow, qp, lot.id, "approved", reason="certificate of analysis reviewed"
            )


def _seed_users(app: App, boot: Any, password: str, site_ids: dict[str, str]) -> dict[str, User]:
    """The demo's accounts. The two network administrators come first, through the audited
    bootstrap path (a system component may grant admin only while the network has fewer than
    two); every other qp or admin grant is then requested by one administrator and approved by
    the other, as in production."""
    users: dict[str, User] = {}
    admin_names = {u[0] for u in USERS if Role.ADMIN in u[2]}
    ordered = [u for u in USERS if u[0] in admin_names] + [
        u for u in USERS if u[0] not in admin_names
    ]
    for username, full_name, roles, home in ordered:
        needs_approval = username not in admin_names and Role.QP in roles
        with app.uow() as uow:
            creator = actor_of(users["admin"], uow.session) if needs_approval else boot
            users[username] = app.users.create_user(
                uow,
                creator,
                username=username,
                full_name=full_name,
                roles=roles,
                password=password,
                home_site_id=site_ids.get(home) if home else None,
                temporary=False,
            )
        if needs_approval:
            with app.uow() as uow:
                approver = actor_of(users["admin-two"], uow.session)
                pending = app.users.pending_for(uow, users[username].id)
            for request in pending:
                with app.uow() as uow:
                    app.users.decide_request(
                        uow, approver, request.id, approve=True, reason="demo QP appointed"
                    )
            with app.uow() as uow:
                users[username] = app.users.get(uow, users[username].id)
    return {u[0]: users[u[0]] for u in USERS}


def hydrocortisone_master_file(site_ids: list[str]) -> dict[str, Any]:
    return {
        "code": HYDROCORTISONE,
        "title": "Hydrocortisone printlets for children",
        "product_family": "solid_dose",
        "accepted_codes": [
            {"system": SNOMED, "code": "396458002", "display": "Hydrocortisone"},
            {"system": RXNORM, "code": "5492", "display": "hydrocortisone"},
        ],
        "design_envelope": {
            "dose_mg": {"min": 0.5, "max": 10.0},
            "drug_loading": 0.025,
            "density_mg_per_mm3": 1.25,
            "diameters_mm": [4, 5, 6, 8, 10, 12],
            "height_mm": {"min": 1.0, "max": 7.0},
            "patient_groups": ["infant", "child", "adolescent", "adult"],
            "max_diameter_mm_by_group": {"infant": 6, "child": 8},
            "units": {"min": 1, "max": 200},
        },
        "process_parameters": PROCESS_PARAMETERS,
        "cqa_specs": CQA_SPECS,
        "comparability": COMPARABILITY,
        "release_rule": RELEASE_RULE,
        "material_code": "HC-FIL-2.5",
        "shelf_life_days": 90,
        "storage": "Store below 25 °C in the original container. Keep dry.",
        "gtin": "09506000134352",
        "units_per_pack": 30,
        "allowed_site_ids": site_ids,
        "record_steps": RECORD_STEPS,
    }


def propranolol_master_file(site_ids: list[str]) -> dict[str, Any]:
    return {
        "code": PROPRANOLOL,
        "title": "Propranolol printlets",
        "product_family": "solid_dose",
        "accepted_codes": [
            {"system": SNOMED, "code": "372772003", "display": "Propranolol"},
            {"system": RXNORM, "code": "8787", "display": "propranolol"},
            # the products it makes, by product code (RxNorm SCD; dm+d VMP and AMP), from the
            # shipped code data (families/solid_dose/codes and its README)
            *product_codings("propranolol hydrochloride"),
            *product_codings("propranolol"),
        ],
        "design_envelope": {
            "dose_mg": {"min": 1.0, "max": 40.0},
            "drug_loading": 0.10,
            "density_mg_per_mm3": 1.25,
            "diameters_mm": [4, 5, 6, 8, 10, 12],
            "height_mm": {"min": 1.0, "max": 7.0},
            "patient_groups": ["child", "adolescent", "adult"],
            "max_diameter_mm_by_group": {"child": 8},
            "units": {"min": 1, "max": 200},
        },
        "process_parameters": PROCESS_PARAMETERS,
        "cqa_specs": CQA_SPECS,
        "comparability": COMPARABILITY,
        "release_rule": RELEASE_RULE,
        "material_code": "PROP-FIL-10",
        "shelf_life_days": 60,
        "storage": "Store below 25 °C. Protect from light.",
        "gtin": "09506000134369",
        "units_per_pack": 28,
        "allowed_site_ids": site_ids,
        "record_steps": RECORD_STEPS,
    }


def car_t_master_file(site_ids: list[str]) -> dict[str, Any]:
    """The demo's cell product: autologous CAR-T cells expanded in a closed micro-factory."""
    return {
        "code": CAR_T,
        "title": "Autologous CAR-T cells, expanded in a closed micro-factory",
        "product_family": "cell_therapy",
        "accepted_codes": [CAR_T_CODE],
        "design_envelope": CELL_ENVELOPE,
        "process_parameters": DEFAULT_PROCESS_PARAMETERS,  # the micro-factory's CPPs
        "cqa_specs": CELL_CQA_SPECS,
        "release_rule": CELL_RELEASE_RULE,
        "material_code": CELL_MEDIUM,
        "shelf_life_days": 365,
        "storage": "Store at or below -150 °C in the vapour phase of liquid nitrogen",
        "gtin": "09506000134376",
        "units_per_pack": 4,
        "allowed_site_ids": site_ids,
        "record_steps": CELL_RECORD_STEPS,
    }


def complete_record(
    app: App,
    batch_id: str,
    password: str,
    *,
    verifier: str | None = None,
    performer: str | None = None,
    before_start: bool = False,
) -> list[str]:
    """Sign the batch's pending manual steps in order as `performer` (a username; default: the
    batch's operator on duty), with plausible entries, and verify each critical entry as a
    second person (`verifier`, or the site's pharmacist, or the QP autopilot). `before_start`:
    only the steps before the master file's first machine step (the machine waits for them).
    For the demo and tests only: in use, each person signs for themselves; the demo's
    automated signing names accounts that say so (`automated_operator`). Returns the codes
    signed or verified; stops at the first refusal (raised)."""
    with app.uow() as uow:
        batch = app.production.get(uow, batch_id)
        who = app.users.by_username(uow, performer) if performer else None
        if performer and who is None:
            raise RuntimeError(f"the demo network has no account {performer!r}")
        operator = actor_of(who or app.users.get(uow, batch.operator_id), uow.session)
        second = _second_person(app, uow, batch.site_id, verifier)
        lot, used_g = batch.material_lot_number, batch.material_used_g
        din = (batch.design or {}).get("din")
        states = app.production.step_states(uow, batch)
    done: list[str] = []
    for state in states:
        if not state.manual:
            if before_start:
                break
            continue
        if state.signoff is None:
            values = {
                name: _entry_value(name, kind, lot, used_g, din)
                for name, kind in state.entry_fields.items()
            }
            with app.uow() as uow:
                app.quality.records.sign_step(
                    uow, operator, batch_id, state.code, entry=values, password=password
                )
            done.append(state.code)
        if state.critical and (state.signoff is None or state.signoff.verified_by is None):
            with app.uow() as uow:
                app.quality.records.verify_step(
                    uow, second, batch_id, state.code, password=password
                )
            done.append(f"{state.code}:verified")
    return done


def automated_operator(app: App, site_id: str, master_file_code: str, password: str) -> str:
    """The username of the site's automated operator ("Demo operator (automated)"), made by
    the demo's seeding component and trained on `master_file_code` when missing: the demo's
    software signs a batch's manual steps under it, never under a person's account. Named
    after the site's person (AUTOMATED_OPERATORS), so that the runner, which puts the site's
    first trained operator by username on duty, keeps the person on duty."""
    boot = system_actor("demo-seed")
    with app.uow() as uow:
        code = app.network.get_site(uow, site_id).code
        username = AUTOMATED_OPERATORS.get(code, f"operator-{code.lower()}-auto")
        user = app.users.by_username(uow, username)
        user_id = user.id if user is not None else None
        trained = user_id is not None and app.network.is_trained(uow, user_id, master_file_code)
    if user_id is None:
        with app.uow() as uow:
            user_id = app.users.create_user(
                uow,
                boot,
                username=username,
                full_name=AUTOMATED_OPERATOR_NAME,
                roles=[Role.OPERATOR],
                password=password,
                home_site_id=site_id,
                temporary=False,
            ).id
    if not trained:
        with app.uow() as uow:
            app.network.record_training(uow, boot, user_id, master_file_code)
    return username


def _second_person(app: App, uow: Any, site_id: str, username: str | None) -> Any:
    if username is None:
        pharmacists = [
            u
            for u in uow.session.scalars(select(User).where(User.home_site_id == site_id))
            if Role.PHARMACIST.value in u.roles and u.active
        ]
        user = pharmacists[0] if pharmacists else app.users.by_username(uow, AUTOPILOT)
    else:
        user = app.users.by_username(uow, username)
    if user is None:
        raise RuntimeError("no second person to verify the batch's critical entries")
    return actor_of(user, uow.session)


def _entry_value(name: str, kind: str, lot: str, used_g: float, din: str | None) -> object:
    if name == "filament_lot":
        return lot
    if name == "chain_of_identity" and din:
        return din  # the collection's DIN, read off its bag
    if name == "mass_loaded_g":
        return round(used_g + 5.0, 1)  # what was drawn for the batch, plus the purge
    return "checked" if kind == "text" else 0


def demo_nhs_number(n: int) -> str:
    """A synthetic NHS number that passes the modulus-11 check (NHS Data Dictionary): 9 then
    eight digits of `n`, the next one up when those nine admit no check digit, then the check
    digit. Numbers starting with 9 are outside the range issued to patients."""
    nine = 900_000_000 + n % 10**8
    while (check := nhs_check_digit(str(nine))) is None:
        nine = 900_000_000 + (nine + 1) % 10**8
    return f"{nine}{check}"


def prescription_bundle(
    rng: random.Random,
    *,
    today: date,
    medication: str = "hydrocortisone",
    dose_mg: float | None = None,
    days: int | None = None,
    birth_date: date | None = None,
) -> dict[str, Any]:
    """A synthetic FHIR R4 Bundle: a Patient (with birth date) and one MedicationRequest."""
    n = rng.randrange(10**8, 10**9)
    patient_id = f"pat-{n}"
    if medication == "hydrocortisone":
        codings = [
            {"system": SNOMED, "code": "396458002", "display": "Hydrocortisone"},
            {"system": RXNORM, "code": "5492", "display": "hydrocortisone"},
        ]
        dose = dose_mg if dose_mg is not None else rng.choice([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0])
        per_day = 3
    else:
        codings = [
            {"system": SNOMED, "code": "372772003", "display": "Propranolol"},
            {"system": RXNORM, "code": "8787", "display": "propranolol"},
        ]
        dose = dose_mg if dose_mg is not None else rng.choice([2.0, 5.0, 10.0, 20.0])
        per_day = 2
    days = days if days is not None else rng.choice([5, 7, 10, 14])
    age_days = rng.randrange(3 * 365, 11 * 365)
    born = birth_date or (today - timedelta(days=age_days))
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{patient_id}",
                "resource": {
                    "resourceType": "Patient",
                    "id": patient_id,
                    "identifier": [{"system": NHS_NUMBER, "value": demo_nhs_number(n)}],
                    "name": [{"family": f"Testpatient{n % 1000}", "given": ["Demo"]}],
                    "birthDate": born.isoformat(),
                },
            },
            {
                "fullUrl": f"urn:uuid:rx-{n}",
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": f"rx-{n}",
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": {"coding": codings},
                    "subject": {"reference": f"Patient/{patient_id}"},
                    "requester": {
                        "reference": "Practitioner/demo-prescriber",
                        "display": "Dr Clare Nice",
                    },
                    "authoredOn": today.isoformat(),
                    "dosageInstruction": [
                        {
                            "text": f"{dose:g} mg {per_day} times a day",
                            "timing": {
                                "repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}
                            },
                            "doseAndRate": [
                                {
                                    "doseQuantity": {
                                        "value": dose,
                                        "unit": "mg",
                                        "system": "http://unitsofmeasure.org",
                                        "code": "mg",
                                    }
                                }
                            ],
                        }
                    ],
                    "dispenseRequest": {
                        "expectedSupplyDuration": {
                            "value": days,
                            "unit": "days",
                            "system": "http://unitsofmeasure.org",
                            "code": "d",
                        }
                    },
                },
            },
        ],
    }


def cell_therapy_bundle(
    rng: random.Random,
    *,
    today: date,
    dose_per_kg: float = 2.0e6,
    weight_kg: float = 70.0,
    dose_unit: str = "{cells}/kg",
    din: str | None = None,
) -> dict[str, Any]:
    """A synthetic FHIR R4 Bundle for the demo's cell product: a Patient, a MedicationRequest
    with a dose per kg of body weight (UCUM "{cells}/kg", one infusion) and the patient's body
    weight as an Observation (LOINC 29463-7); `din`: the ISBT 128 DIN of the patient's
    collection, as a MedicationRequest identifier (the label prints it)."""
    bundle = prescription_bundle(rng, today=today, birth_date=today - timedelta(days=40 * 365))
    patient, request = (entry["resource"] for entry in bundle["entry"])
    request["medicationCodeableConcept"] = {"coding": [CAR_T_CODE]}
    if din is not None:
        request["identifier"] = [{"system": DIN_SYSTEM, "value": din}]
    request.pop("dispenseRequest")
    instruction = request["dosageInstruction"][0]
    instruction.pop("timing")
    instruction["text"] = f"{dose_per_kg:g} viable CAR-T cells/kg, one infusion"
    instruction["doseAndRate"][0]["doseQuantity"] = {
        "value": dose_per_kg,
        "unit": dose_unit,
        "system": "http://unitsofmeasure.org",
        "code": dose_unit,
    }
    weight_id = f"weight-{patient['id']}"
    bundle["entry"].append(
        {
            "fullUrl": f"urn:uuid:{weight_id}",
            "resource": {
                "resourceType": "Observation",
                "id": weight_id,
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": f"Patient/{patient['id']}"},
                "valueQuantity": {
                    "value": weight_kg,
                    "unit": "kg",
                    "system": "http://unitsofmeasure.org",
                    "code": "kg",
                },
            },
        }
    )
    return bundle
