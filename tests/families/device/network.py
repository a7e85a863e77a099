"""The device family's network on the seeded demo: the flowmeter's master file, an FDM printer
at the GSTT hospital pharmacy and a supervised one at a patient's home (a new site of kind
home), the home operator trained on the product, PETG filament lots at both sites; and the
FHIR prescription of a flowmeter (the fit as identifiers in the family's systems)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests import flow_helpers as fh

from nearfab.bootstrap import App
from nearfab.families.device.machines import (
    DEFAULT_PROCESS_PARAMETERS,
    FDM_PRINTER,
    SUPERVISED_PRINTER,
)
from nearfab.families.device.prescription import QMAX_SYSTEM, SIZE_SYSTEM

PRODUCT = "MF-UROFLOW"
# a GTIN-14 from GS1's example range 0950600013... with its check digit worked by hand (GS1
# General Specifications §7.9.1): digits 0 9 5 0 6 0 0 0 1 3 4 3 5 x weights 3 1 3 1 ...:
# 0+9+15+0+18+0+0+0+3+3+12+3+15 = 78 -> check digit 2
GTIN = "09506000134352"
SNOMED = "http://snomed.info/sct"
# a local code for the device (no SNOMED CT concept names a printed single-patient flowmeter)
DEVICE_CODE = {"system": SNOMED, "code": "999000111", "display": "Urine flowmeter"}
HOME = "HOME-0001"
PHARMACY = "GSTT-PH"
PHARMACY_PRINTER, HOME_PRINTER = "FDM 1", "Home FDM 1"
HOME_OPERATOR = "home-maker"
HOME_PASSWORD = "carer-chosen-password-17"
# the manufacturer's responsible person (UK MDR / EU MDR Art. 15) signs the release: at the
# control site (the network), and one at the pharmacy (that site only), both named on the
# master file, so a refusal of the second is its scope alone
RP, RP_PHARMACY = "resp-person", "resp-person-ph"
RP_PASSWORD = "responsible-chosen-password-23"  # chosen at first login (admin-set expires)


def password_of(username: str) -> str:
    """The password each of the device network's own accounts chose; the demo's otherwise."""
    return {HOME_OPERATOR: HOME_PASSWORD, RP: RP_PASSWORD, RP_PHARMACY: RP_PASSWORD}.get(
        username, fh.TEST_PASSWORD
    )


ENVELOPE: dict[str, Any] = {
    "qmax_ml_s": {"min": 10, "max": 50},
    "sizes": {
        "S": {"column_height_mm": 90, "inner_diameter_mm": 30},
        "M": {"column_height_mm": 130, "inner_diameter_mm": 40},
    },
    "orifice_mm": {"min": 2.0, "max": 10.0},
    "wall_mm": 2.0,
    "discharge_coefficient": 0.61,
    "flow_accuracy_pct": 5.0,
    "polymer": "PETG",
    "max_units": 4,
}

RECORD_STEPS = [
    {"code": "line_clearance", "title": "Printer and bench clear of the previous build",
     "manual": True, "critical": False, "entry": {}},
    {"code": "filament_loaded", "title": "Filament lot loaded on the printer",
     "manual": True, "critical": True, "entry": {"filament_lot": "text"}},
    {"code": "run_finished", "title": "Printing, leak and flow checks, coupon gauged (machine)",
     "manual": False, "critical": False, "entry": {}},
    {"code": "visual_inspection", "title": "Visual inspection: layers, bore, marks, no strings",
     "manual": True, "critical": True, "entry": {"units_rejected": "count"}},
]  # fmt: skip


def master_file(site_ids: list[str]) -> dict[str, Any]:
    return {
        "code": PRODUCT,
        "title": "Single-patient urine flowmeter (FDM, PETG)",
        "product_family": "device",
        "accepted_codes": [DEVICE_CODE],
        "design_envelope": ENVELOPE,
        "process_parameters": DEFAULT_PROCESS_PARAMETERS,
        "cqa_specs": {"leak_check": {"max_ml_min": 0.0}},
        "release_rule": {
            "mode": "rtrt",
            "tests": ["coupon_metrology", "leak_check", "flow_check"],
        },
        "material_code": "PETG-175-NAT",
        "shelf_life_days": 365,
        "storage": "Store dry at room temperature",
        "gtin": GTIN,
        "units_per_pack": 1,
        "allowed_site_ids": site_ids,
        "record_steps": RECORD_STEPS,
    }


def build(app: App) -> dict[str, Any]:
    """The network; returns plain ids."""
    qp, admin = fh.actor(app, "qp"), fh.actor(app, "admin")
    pharmacy = fh.site_id(app, PHARMACY)
    with app.uow() as uow:
        home = app.network.create_site(
            uow, admin, code=HOME, name="Patient home 0001", kind="home"
        ).id
    for status in ("approved", "active"):
        with app.uow() as uow:
            app.network.transition_site(
                uow, admin, home, status, reason="remote supervision agreed"
            )
    with app.uow() as uow:
        mf = app.master_files.draft(uow, qp, master_file([pharmacy, home]))
    with app.uow() as uow:
        app.master_files.approve(uow, qp, mf.id, password=fh.TEST_PASSWORD, meaning="QP approval")
    with app.uow() as uow:
        app.master_files.make_effective(uow, qp, mf.id)
    # the role granted by one control-site administrator, approved by the other (create_user)
    for username, site in ((RP, "CTRL"), (RP_PHARMACY, PHARMACY)):
        person = fh.create_user(app, username, ["responsible_person"], site)
        with app.uow() as uow:
            app.users.change_password(uow, username, fh.TEST_PASSWORD, RP_PASSWORD)
        with app.uow() as uow:
            request = app.master_files.assign_qp(
                uow, admin, PRODUCT, person.user_id, reason="the manufacturer's responsible person"
            )
        with app.uow() as uow:
            app.users.decide_request(
                uow, fh.actor(app, "admin-two"), request.id, approve=True, reason="named"
            )
    machines = {}
    for site, name, kind, serial in (
        (pharmacy, PHARMACY_PRINTER, FDM_PRINTER, "FDM-0001"),
        (home, HOME_PRINTER, SUPERVISED_PRINTER, "FDM-H-0001"),
    ):
        with app.uow() as uow:
            machine = app.network.register_machine(
                uow, admin, site_id=site, name=name, machine_type=kind,
                firmware="Marlin 2.1.2", serial_number=serial,
            )  # fmt: skip
            machines[name] = machine.id
        with app.uow() as uow:
            app.network.qualify_machine(uow, qp, machine.id, PRODUCT)
    operator = fh.create_user(app, HOME_OPERATOR, ["operator"], HOME)
    with app.uow() as uow:  # the patient's carer chooses their own password at first login
        app.users.change_password(uow, HOME_OPERATOR, fh.TEST_PASSWORD, HOME_PASSWORD)
    for user in (fh.actor(app, "operator").user_id, operator.user_id):
        with app.uow() as uow:
            app.network.record_training(uow, qp, user, PRODUCT)
    for site, receiver in ((pharmacy, fh.actor(app, "pharmacist")), (home, admin)):
        with app.uow() as uow:
            lot = app.materials.receive_lot(
                uow, receiver,
                lot_number=f"PETG-{site[-4:]}", material_code="PETG-175-NAT",
                description="PETG filament 1.75 mm, natural", site_id=site,
                supplier="Filament Ltd", expiry=app.clock.now().date() + timedelta(days=700),
                quantity_g=1000.0, product_family="device",
                attributes={"polymer": "PETG", "filament_diameter_mm": 1.75,
                            "biocompatibility": "ISO 10993-5/-10 cert FL-2026-044"},
            )  # fmt: skip
        with app.uow() as uow:
            app.materials.set_status(uow, qp, lot.id, "approved", reason="certificate reviewed")
    return {"home": home, "pharmacy": pharmacy, "machines": machines}


def bundle(qmax: Any = 25, size: Any = "M", rx: str = "rx-1", units: int = 1) -> dict[str, Any]:
    identifiers = [{"system": "https://example.org/prescriptions", "value": rx}]
    if qmax is not None:
        identifiers.append({"system": QMAX_SYSTEM, "value": str(qmax)})
    if size is not None:
        identifiers.append({"system": SIZE_SYSTEM, "value": size})
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:pat-1", "resource": {
                "resourceType": "Patient", "id": "pat-1", "birthDate": "1950-03-01",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number",
                                "value": "9434765919"}]}},
            {"fullUrl": f"urn:uuid:{rx}", "resource": {
                "resourceType": "MedicationRequest", "id": rx, "status": "active",
                "intent": "order", "subject": {"reference": "Patient/pat-1"},
                "identifier": identifiers,
                "medicationCodeableConcept": {"coding": [DEVICE_CODE]},
                "dosageInstruction": [{
                    "text": "measure each void for 3 days",
                    "doseAndRate": [{"doseQuantity": {
                        "value": 1, "unit": "each", "system": "http://unitsofmeasure.org",
                        "code": "1"}}]}],
                "dispenseRequest": {"quantity": {"value": units, "unit": "each"}}}},
        ],
    }  # fmt: skip


def submit(app: App, body: dict[str, Any]) -> Any:
    with app.uow() as uow:
        [order] = app.orders.submit(uow, fh.actor(app, "clinician"), body)
        uow.session.expunge(order)
        return order


def web_login(app: App, username: str) -> Any:
    """A browser logged in as one of the device network's accounts (its own password)."""
    from fastapi.testclient import TestClient

    from nearfab.web.server import create_web_app

    browser = TestClient(create_web_app(app))
    answer = browser.post(
        "/login",
        data={
            "username": username,
            "password": password_of(username),
            "csrf_token": fh.csrf(browser.get("/login").text),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303 and "/login" not in answer.headers["location"], answer.text
    return browser


def release(app: App, batch_id: str, *, reason: str | None = None, signer: str = RP) -> None:
    """The device build's release, signed by the responsible person (fh.release signs as the
    QP, the medicines' signatory)."""
    fh.prepare_release(app, batch_id)
    with app.uow() as uow:
        app.quality.decide(
            uow, fh.actor(app, signer), batch_id, decision="release",
            password=password_of(signer), meaning="responsible person release", reason=reason,
        )  # fmt: skip


def home_job(app: App, rx: str) -> str:
    """A flowmeter's job planned at the patient's home (the pharmacy's printer down)."""
    with app.uow() as uow:
        app.network.set_machine_status(
            uow, fh.actor(app, "admin"), fh.machine_id(app, PHARMACY_PRINTER),
            "maintenance", reason="nozzle swap",
        )  # fmt: skip
    return fh.schedule(app, submit(app, bundle(20, "S", rx=rx)).id)


def approve_home_build(app: App, job_id: str, signer: str = RP) -> Any:
    """The home build's approval, e-signed by the control site's responsible person: its
    signed ticket."""
    with app.uow() as uow:
        return app.production.approve_build(
            uow, fh.actor(app, signer), job_id, password=password_of(signer), username=signer
        )


def sign_home_record(app: App, batch_id: str) -> None:
    """The home build's manual steps signed by the home operator (their own password), each
    critical entry verified remotely by the control site's responsible person."""
    operator, verifier = fh.actor(app, HOME_OPERATOR), fh.actor(app, "qp")
    with app.uow() as uow:
        batch = app.production.get(uow, batch_id)
        lot = batch.material_lot_number
        states = app.production.step_states(uow, batch)
    entries = {"filament_loaded": {"filament_lot": lot}, "visual_inspection": {"units_rejected": 0}}
    for state in states:
        if not state.manual:
            continue
        with app.uow() as uow:
            app.quality.records.sign_step(
                uow, operator, batch_id, state.code, entry=entries.get(state.code, {}),
                password=HOME_PASSWORD,
            )  # fmt: skip
        if state.critical:
            with app.uow() as uow:
                app.quality.records.verify_step(
                    uow, verifier, batch_id, state.code, password=fh.TEST_PASSWORD
                )
