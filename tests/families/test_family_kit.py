"""A product family that lives only in this test goes from prescription to dispense with no
change to the core (issue 15, DESIGN.md "The family kit").

`oral_liquid` makes a personalised oral solution: the prescription's dose is a volume (mL), a
filling machine fills one bottle per dose of the course, the batch record keeps the filled
volumes, release checks each against the target, and the pack label speaks of millilitres.
Nothing in `nearfab` knows any of these words: the family reaches the core only through the
registry and the Protocols in orders/kit.py, production/kit.py, quality/kit.py,
custody/kit.py and simulation/kit.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any, ClassVar

import numpy as np
import pytest
from tests import flow_helpers as fh
from tests.custody import chain_helpers as ch

from nearfab.bootstrap import App
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.custody.gs1 import UnitIdentifier, make_identifier, new_serial, validate_gtin
from nearfab.network import Machine
from nearfab.orders import DesignRequest
from nearfab.orders.kit import DoseIn, NoProductCodes
from nearfab.production.kit import MeasurementSeries, MetricSpec, TwinSetup, check_fault_kind
from nearfab.production.machines import (
    Fault,
    RunResult,
    TelemetryReading,
    UnitMeasurement,
    ticket_number,
)
from nearfab.production.tickets import SignedTicket, verify_ticket
from nearfab.quality.kit import Check, ReleaseEvidence, ReleaseResults

FAMILY, MACHINE, ML = "oral_liquid", "liquid_filler", "mL"
PRODUCT = "MF-TEST-OL"
SNOMED = "http://snomed.info/sct"
TOLERANCE_PCT = 5.0


class Prescription(NoProductCodes):
    def accept_dose(self, dose: DoseIn) -> Quantity:
        if dose.kind != "volume" or dose.per_kg or dose.read_as != ML:
            raise ValidationFailed(f"an oral liquid is dosed in {ML}", field=dose.field)
        return Quantity(dose.value, ML)

    def units_for_course(self, stated: int | None, *, field: str) -> int:
        if stated is None:
            raise ValidationFailed("say how many doses the course needs", field=field)
        return stated


class Filler:
    """A filling machine's twin: one bottle per unit, filled to the target within 1 %."""

    firmware = "filler 1.0"

    def __init__(self, machine: Machine, setup: TwinSetup) -> None:
        self.machine_id, self._setup = machine.id, setup
        self._rng = np.random.default_rng(setup.seed)
        self.faults: tuple[Fault, ...] = ()

    def inject_fault(self, fault: Fault) -> None:
        self.faults += (fault,)

    def clear_faults(self) -> None:
        self.faults = ()

    def execute(self, ticket: SignedTicket) -> RunResult:
        clock = self._setup.clock
        verify_ticket(
            ticket, self._setup.control_public_key_pem, machine_id=self.machine_id, now=clock.now()
        )
        design = ticket.payload["design"]
        target = ticket_number(design.get("fill_ml"), "design.fill_ml")
        short = sum(f.severity for f in self.faults)  # a leaking valve under-fills
        started, units, telemetry = clock.now(), [], []
        for index in range(int(design["units"])):
            clock.sleep(self._setup.seconds_per_unit)
            fill = target * (1 - short) * (1 + 0.01 * float(self._rng.standard_normal()) / 3)
            units.append(UnitMeasurement(index, clock.now(), {"fill_ml": round(fill, 3)}))
            telemetry.append(TelemetryReading(clock.now(), "line_pressure_kpa", 101.0, "kPa"))
        return RunResult(
            self.machine_id, self.firmware, ticket.ticket_hash, started, clock.now(),
            tuple(units), tuple(telemetry), ("ticket verified", f"filled {len(units)} bottles"),
        )  # fmt: skip


class Machines:
    machine_types = (MACHINE,)
    fault_kinds = ("valve_leak",)
    metrics: ClassVar = {
        "line_pressure_kpa": MetricSpec("line_pressure_kpa", "kPa", 101.0, 95.0, 110.0)
    }

    def check_fault(self, fault: Fault) -> None:
        check_fault_kind(FAMILY, self.fault_kinds, fault)

    def twin(self, machine: Machine, setup: TwinSetup) -> Filler:
        return Filler(machine, setup)

    def connect(self, machine: Machine) -> None:
        return None

    def design_summary(self, design: Mapping[str, Any]) -> str:
        return f"{design['units']} bottles of {design['fill_ml']} {ML}"

    def measurement_document(self, outcome: RunResult) -> dict[str, Any]:
        return {"fill_volumes_ml": [u.values["fill_ml"] for u in outcome.units]}

    def check_measurements(self, document: Any) -> dict[str, Any]:
        if not isinstance(document, Mapping) or "fill_volumes_ml" not in document:
            raise ValidationFailed("no filled volumes", field="measurements.fill_volumes_ml")
        return dict(document)

    def units_made(self, document: Mapping[str, Any]) -> int:
        return len(document["fill_volumes_ml"])

    def measurement_series(
        self, document: Mapping[str, Any] | None, design: Mapping[str, Any], specs: Any
    ) -> MeasurementSeries | None:
        if not document:
            return None
        values = tuple(document["fill_volumes_ml"])
        return MeasurementSeries(values, design["fill_ml"], TOLERANCE_PCT, "fill volume", ML)


class Release:
    tests: ClassVar = {"fill_volume": "Fill volume of every bottle"}

    def check_rule(self, rule: Mapping[str, Any]) -> None:
        return None

    def evaluate(
        self, tests: Sequence[str], evidence: ReleaseEvidence, rule: Mapping[str, Any]
    ) -> ReleaseResults:
        target = float(evidence.design["fill_ml"])
        fills = evidence.measurements["fill_volumes_ml"]
        outside = [v for v in fills if abs(v - target) > target * TOLERANCE_PCT / 100]
        detail = f"{len(outside)} of {len(fills)} bottles outside ±{TOLERANCE_PCT:g} %"
        return ReleaseResults((Check("fill_volume", not outside, detail),))

    def lot_attributes(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(attributes.get("concentration_mg_per_ml"), int | float):
            raise ValidationFailed("give the concentration", field="attributes.concentration")
        return dict(attributes)


class Labels:
    identity_scheme = "gs1"

    def product_code(self, code: str) -> str:
        return validate_gtin(code)

    def new_identity(self, product_code: str, lot: str, expiry: date) -> UnitIdentifier:
        return make_identifier(product_code, new_serial(), lot, expiry)

    def product_name(self, medication: str, dose: Quantity) -> str:
        return f"{medication} oral solution, {dose} doses"

    def dose_text(self, dose: Quantity, per_day: float | None, index: int, quantity: int) -> str:
        return f"{dose} by mouth; pack {index}, {self.pack_contents(quantity)}"

    def pack_contents(self, quantity: int) -> str:
        return f"{quantity} bottles"


class Simulation:
    def design(self, envelope: Mapping[str, Any], prescription: Mapping[str, Any]) -> dict:
        return {"fill_ml": prescription["dose_ml"], "units": prescription["units"]}

    def failure_probability(self, design: Mapping[str, Any]) -> float | None:
        return None

    def prescription_of(self, order: Any) -> dict[str, Any] | None:
        return {"dose_ml": order.dose.value, "units": order.units}


class OralLiquid:
    name, machine_types = FAMILY, (MACHINE,)

    def __init__(self) -> None:
        self.prescription, self.machines, self.release = Prescription(), Machines(), Release()
        self.labels, self.simulation = Labels(), Simulation()

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        if set(envelope) != {"fill_ml"}:
            raise ValidationFailed("the envelope is fill_ml: {min, max}", field="fill_ml")

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        limits = request.master_file.design_envelope["fill_ml"]
        if not limits["min"] <= request.dose.value <= limits["max"]:
            raise Refused(f"{request.dose} is outside the validated envelope", field="dose")
        return {"fill_ml": request.dose.value, "units": request.units}, None

    def material_needed_g(self, design: Mapping[str, Any]) -> float:
        return float(design["fill_ml"]) * int(design["units"]) * 1.02  # 1 g/mL, 2 % priming

    def duration_s(self, design: Mapping[str, Any]) -> float:
        return 20.0 * int(design["units"])


# -- the network that makes it: one filler at the demo's GSTT pharmacy ------------------------


def _master_file(site_id: str) -> dict[str, Any]:
    return {
        "code": PRODUCT,
        "title": "Test oral solution",
        "product_family": FAMILY,
        "accepted_codes": [{"system": SNOMED, "code": "999000001", "display": "Testamine"}],
        "design_envelope": {"fill_ml": {"min": 1.0, "max": 10.0}},
        "process_parameters": {"line_pressure_kpa": Machines.metrics["line_pressure_kpa"]
                               .parameter()},
        "cqa_specs": {"fill_volume": {"tolerance_pct": TOLERANCE_PCT}},
        "release_rule": {"mode": "rtrt", "tests": ["fill_volume"]},
        "material_code": "TEST-SOL-1",
        "shelf_life_days": 28,
        "storage": "Store in a refrigerator",
        "gtin": "09506000134369",
        "units_per_pack": 7,
        "allowed_site_ids": [site_id],
        "record_steps": [
            {"code": "line_clearance", "title": "Line clearance", "manual": True,
             "critical": False, "entry": {}},
            {"code": "run_finished", "title": "Filling (machine)", "manual": False,
             "critical": False, "entry": {}},
        ],
    }  # fmt: skip


def _network(app: App) -> None:
    app.families.register(OralLiquid())
    site = fh.site_id(app, "GSTT-PH")
    qp, admin = fh.actor(app, "qp"), fh.actor(app, "admin")
    with app.uow() as uow:
        mf = app.master_files.draft(uow, qp, _master_file(site))
    with app.uow() as uow:
        app.master_files.approve(uow, qp, mf.id, password=fh.TEST_PASSWORD, meaning="QP approval")
    with app.uow() as uow:
        app.master_files.make_effective(uow, qp, mf.id)
    with app.uow() as uow:
        request = app.master_files.assign_qp(
            uow, admin, PRODUCT, fh.actor(app, "qp").user_id, reason="named on the licence"
        )
    with app.uow() as uow:
        app.users.decide_request(
            uow, fh.actor(app, "admin-two"), request.id, approve=True, reason="licence checked"
        )
    with app.uow() as uow:
        machine = app.network.register_machine(
            uow, admin, site_id=site, name="Filler 1", machine_type=MACHINE,
            firmware="filler 1.0", serial_number="FL-0001",
        )  # fmt: skip
    with app.uow() as uow:
        app.network.qualify_machine(uow, qp, machine.id, PRODUCT)
    with app.uow() as uow:
        app.network.record_training(uow, qp, fh.actor(app, "operator").user_id, PRODUCT)
    with app.uow() as uow:
        lot = app.materials.receive_lot(
            uow, fh.actor(app, "pharmacist"), lot_number="TEST-SOL-1-001",
            material_code="TEST-SOL-1", description="Testamine 1 mg/mL base solution",
            site_id=site, supplier="Test Ltd", expiry=app.clock.now().date() + timedelta(days=90),
            quantity_g=2000.0, attributes={"concentration_mg_per_ml": 1.0}, assay_pct=100.0,
            product_family=FAMILY,
        )  # fmt: skip
    with app.uow() as uow:
        app.materials.set_status(uow, qp, lot.id, "approved", reason="certificate reviewed")


def _bundle(dose_ml: float, doses: int) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:pat-1", "resource": {
                "resourceType": "Patient", "id": "pat-1", "birthDate": "1980-01-01",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number",
                                "value": "9434765919"}]}},
            {"fullUrl": "urn:uuid:rx-1", "resource": {
                "resourceType": "MedicationRequest", "id": "rx-1", "status": "active",
                "intent": "order", "subject": {"reference": "Patient/pat-1"},
                "medicationCodeableConcept": {"coding": [
                    {"system": SNOMED, "code": "999000001", "display": "Testamine"}]},
                "dosageInstruction": [{
                    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {
                        "value": dose_ml, "unit": "mL", "system": "http://unitsofmeasure.org",
                        "code": "mL"}}]}],
                "dispenseRequest": {"expectedSupplyDuration": {
                    "value": doses, "unit": "days", "system": "http://unitsofmeasure.org",
                    "code": "d"}}}},
        ],
    }  # fmt: skip


def _submit(app: App, dose_ml: float, doses: int = 7) -> Any:
    with app.uow() as uow:
        [order] = app.orders.submit(uow, fh.actor(app, "clinician"), _bundle(dose_ml, doses))
        uow.session.expunge(order)
        return order


def test_a_family_registered_in_a_test_goes_from_prescription_to_dispense(seeded: App) -> None:
    _network(seeded)
    order = _submit(seeded, 5.0)
    assert (order.status, order.dose_value, order.dose_unit) == ("designed", 5.0, ML)
    assert order.design == {"fill_ml": 5.0, "units": 7}
    job_id = fh.ticketed_job(seeded, order.id)
    batch_id = fh.start(seeded, job_id)
    fh.finish(seeded, batch_id)
    record = fh.batch(seeded, batch_id)
    # 7 bottles, each within 1 % of 5 mL (3 SD of the twin's 0.33 % scatter)
    assert record.units_made == 7
    assert all(abs(v - 5.0) <= 0.05 for v in record.measurements["fill_volumes_ml"])
    fh.release(seeded, batch_id)
    assert fh.batch(seeded, batch_id).status == "released"
    [pack] = ch.units(seeded, batch_id)  # 7 bottles, 7 a pack: one pack
    assert pack.quantity == 7
    with seeded.uow() as uow:
        [label] = seeded.custody.labels(uow, batch_id)
    assert label.product_name == "Testamine oral solution, 5 mL doses"
    assert "5 mL by mouth; pack 1, 7 bottles" in label.dose_text
    result = ch.dispense(seeded, pack)
    assert result.unit.status == "dispensed"


def test_the_family_refuses_what_it_does_not_make(seeded: App) -> None:
    _network(seeded)
    # outside the validated envelope (1-10 mL): the order stops, naming why
    order = _submit(seeded, 12.0)
    assert order.status == "stopped"
    assert "outside the validated envelope" in (order.stop_reason or "")
    with pytest.raises(ValidationFailed) as refused:
        bundle = _bundle(5.0, 7)
        dose = bundle["entry"][1]["resource"]["dosageInstruction"][0]["doseAndRate"][0]
        dose["doseQuantity"].update(unit="mg", code="mg")
        with seeded.uow() as uow:
            seeded.orders.submit(uow, fh.actor(seeded, "clinician"), bundle)
    assert "dosed in mL" in refused.value.message
    assert refused.value.field.endswith("doseQuantity")


def test_an_incomplete_family_is_refused_when_registered(seeded: App) -> None:
    class NoLabels(OralLiquid):
        def __init__(self) -> None:
            super().__init__()
            del self.labels

    class HalfRelease(OralLiquid):
        def __init__(self) -> None:
            super().__init__()
            self.release = Prescription()  # the wrong part where release goes

    with pytest.raises(TypeError, match=r"'oral_liquid' is incomplete: part 'labels'"):
        seeded.families.register(NoLabels())
    with pytest.raises(TypeError, match=r"release: check_rule, evaluate, lot_attributes, tests"):
        seeded.families.register(HalfRelease())
    assert FAMILY not in seeded.families.names()
    seeded.families.register(OralLiquid())  # the whole family is taken
    assert FAMILY in seeded.families.names()
