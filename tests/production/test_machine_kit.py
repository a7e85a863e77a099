"""The production part of the family kit: the fleet builds twins and checks faults through the
family that runs a machine's type (production knows no family), and the batch record keeps the
family's measurement document (migration 0017 moved the per-unit evidence into it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text

from nearfab.bootstrap import App
from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.designs import FamilyRegistry
from nearfab.families.solid_dose import SolidDoseFamily
from nearfab.families.solid_dose.machines import SimulatedTabletPrinter, SolidDoseMachines
from nearfab.materials import MaterialLot
from nearfab.migrations import alembic_config, upgrade
from nearfab.network import Machine
from nearfab.production import (
    BatchRecord,
    Fault,
    MachineFleet,
    MachineKit,
    MetricSpec,
    RunResult,
    SignedTicket,
    TicketSigner,
    TwinSetup,
    UnitMeasurement,
)
from nearfab.production.kit import check_fault_kind, check_machine_type
from nearfab.web.server import create_web_app

from .. import flow_helpers as fh
from ..conftest import TEST_PASSWORD

# -- a second family, a few lines, only in this test ----------------------------------------


@dataclass
class MixerTwin:
    machine_id: str
    firmware: str
    _faults: list[Fault] = field(default_factory=list)

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def inject_fault(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def execute(self, ticket: SignedTicket) -> RunResult:
        raise NotImplementedError


class MixerMachines:
    machine_types: tuple[str, ...] = ("test_mixer",)
    fault_kinds: tuple[str, ...] = ("jam",)
    metrics: Mapping[str, MetricSpec] = {"speed_rpm": MetricSpec("speed_rpm", "rpm", 60, 50, 70)}

    def check_fault(self, fault: Fault) -> None:
        check_fault_kind("mixing", self.fault_kinds, fault)

    def twin(self, machine: Machine, setup: TwinSetup) -> MixerTwin:
        check_machine_type("mixing", self.machine_types, machine)
        return MixerTwin(machine.id, machine.firmware)

    def connect(self, machine: Machine) -> None:
        return None

    def design_summary(self, design: Mapping[str, Any]) -> str:
        return f"{design.get('units')} portions"

    def measurement_document(self, outcome: RunResult) -> dict[str, Any]:
        return {"portions": len(outcome.units)}

    def check_measurements(self, document: Any) -> dict[str, Any]:
        return dict(document)

    def units_made(self, document: Mapping[str, Any]) -> int:
        return int(document["portions"])

    def measurement_series(self, document: Any, design: Any, cqa_specs: Any) -> None:
        return None


class MixingFamily:
    name = "mixing"
    machine_types = ("test_mixer",)
    prescription = release = labels = simulation = None

    def __init__(self) -> None:
        self.machines = MixerMachines()


class PaperworkFamily:
    """A family that runs no machines (its machines part is None)."""

    name = "paperwork"
    machine_types: tuple[str, ...] = ()
    prescription = machines = release = labels = simulation = None


def _machine(machine_type: str, name: str, adapter: str = "simulated") -> Machine:
    return Machine(
        id=f"mch_{name}",
        site_id="site_1",
        name=name,
        machine_type=machine_type,
        firmware="fw 1",
        serial_number=f"SN-{name}",
        adapter=adapter,
        status="available",
    )


@pytest.fixture
def fleet() -> MachineFleet:
    families = FamilyRegistry()
    families.register(SolidDoseFamily())
    families.register(PaperworkFamily())  # type: ignore[arg-type]
    families.register(MixingFamily())  # type: ignore[arg-type]
    signer = TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex("22" * 32)))
    return MachineFleet(ManualClock(), signer.public_key_pem, families)


def test_the_kits_satisfy_the_protocol() -> None:
    kits: list[MachineKit] = [SolidDoseMachines(), MixerMachines()]
    assert [k.machine_types for k in kits] == [("tablet_printer",), ("test_mixer",)]


def test_the_fleet_builds_each_machine_s_twin_through_its_family(fleet: MachineFleet) -> None:
    printer = fleet.adapter_for(_machine("tablet_printer", "printer"))
    mixer = fleet.adapter_for(_machine("test_mixer", "mixer"))
    assert isinstance(printer, SimulatedTabletPrinter)
    assert isinstance(mixer, MixerTwin)
    # a type no registered family runs has no twin: the machine is offline
    with pytest.raises(Refused) as caught:
        fleet.adapter_for(_machine("bioreactor", "reactor"))
    assert caught.value.code == "machine_offline"


def test_a_fault_kind_the_machine_s_family_does_not_have_is_refused(fleet: MachineFleet) -> None:
    mixer = _machine("test_mixer", "mixer")
    # nozzle_clog is a solid_dose fault: a mixer cannot suffer it
    with pytest.raises(ValidationFailed) as caught:
        fleet.inject_fault(mixer, Fault("nozzle_clog", 0.3))
    assert caught.value.field == "fault.kind"
    assert "nozzle_clog" in caught.value.message and "(kinds: jam)" in caught.value.message
    # and the other way round: a jam is no tablet printer's fault
    printer = _machine("tablet_printer", "printer")
    with pytest.raises(ValidationFailed) as caught:
        fleet.inject_fault(printer, Fault("jam"))
    assert caught.value.field == "fault.kind"
    assert "nozzle_clog, temperature_drift, humidity_excursion" in caught.value.message
    # nothing was injected; the family's own kinds are
    fleet.inject_fault(mixer, Fault("jam", 1.0, from_unit=2))
    twin = fleet.adapter_for(mixer)
    assert isinstance(twin, MixerTwin) and twin.faults == (Fault("jam", 1.0, from_unit=2),)
    fleet.clear_faults(mixer)
    assert twin.faults == ()


def test_a_family_refuses_a_twin_for_a_machine_type_it_does_not_run() -> None:
    setup = TwinSetup(
        control_public_key_pem="",
        clock=ManualClock(),
        seed=1,
        seconds_per_unit=60,
        sample_every_s=10,
    )
    with pytest.raises(Refused) as caught:
        SolidDoseMachines().twin(_machine("test_mixer", "mixer"), setup)
    assert caught.value.field == "machine_type"
    assert "'test_mixer'" in caught.value.message and "tablet_printer" in caught.value.message


def test_solid_dose_s_measurement_document() -> None:
    kit = SolidDoseMachines()
    at = datetime(2026, 1, 5, tzinfo=UTC)
    outcome = RunResult(
        machine_id="m",
        firmware="f",
        ticket_hash="h",
        started_at=at,
        finished_at=at,
        units=tuple(
            UnitMeasurement(i, at, {"mass_mg": m}) for i, m in enumerate([49.51234, 50.0, 51.2])
        ),
        telemetry=(),
        events=(),
    )
    document = kit.measurement_document(outcome)
    assert document == {"unit_masses_mg": [49.5123, 50.0, 51.2]}  # rounded to 0.1 µg
    assert kit.check_measurements(document) == document
    assert kit.units_made(document) == 3
    for bad, where in (
        ({"unit_masses_mg": [50.0, -1.0]}, "measurements.unit_masses_mg[1]"),
        ({"unit_masses_mg": [50.0, True]}, "measurements.unit_masses_mg[1]"),
        ({"unit_masses_mg": "50"}, "measurements.unit_masses_mg"),
        ({"cells": [1]}, "measurements.cells"),
        ([50.0], "measurements"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            kit.check_measurements(bad)
        assert caught.value.field == where
    # the chart: tolerance from the master file's unit-mass specification, 7.5 % without one
    series = kit.measurement_series(document, {"target_mass_mg": 50.0}, {})
    assert series is not None
    assert (series.values, series.target, series.tolerance_pct) == (
        (49.5123, 50.0, 51.2),
        50.0,
        7.5,
    )
    assert (series.label, series.unit) == ("mass", "mg")
    spec = {"unit_mass": {"tolerance_pct": 5.0}}
    assert kit.measurement_series(document, {"target_mass_mg": 50.0}, spec).tolerance_pct == 5.0  # type: ignore[union-attr]
    assert kit.measurement_series(None, {"target_mass_mg": 50.0}, spec) is None


# -- migration 0017 ---------------------------------------------------------------------------


def _url(app: App) -> str:
    return app.engine.url.render_as_string(hide_password=False)


def _without_lots_the_old_schema_cannot_hold(app: App) -> None:
    """Before 0018 a lot kept a drug loading: the demo's cell-therapy lots (medium, reagent)
    have none, and 0018's downgrade refuses them (tests/materials/test_material_migration.py).
    Going below it, these tests leave them out."""
    with app.uow() as uow:
        for lot in uow.session.scalars(select(MaterialLot)):
            if "drug_loading" not in (lot.attributes or {}):
                uow.session.delete(lot)
        uow.commit()


def test_migration_0017_moves_unit_masses_into_the_document_and_back(seeded: App) -> None:
    masses = [49.5, 50.25, 51.0]  # a batch's in-line weights, as the machine reported them
    with_masses = fh.start(seeded, fh.ticketed_job(seeded))
    without = fh.start(seeded, fh.ticketed_job(seeded))  # still running: nothing measured
    fh.edit(seeded, BatchRecord, with_masses, measurements={"unit_masses_mg": masses}, units_made=3)
    # the signed content keeps the key the per-unit evidence had before the document existed
    content = fh.batch(seeded, with_masses).content()
    assert content["unit_masses_mg"] == masses and "measurements" not in content
    _without_lots_the_old_schema_cannot_hold(seeded)
    url = _url(seeded)
    seeded.engine.dispose()

    command.downgrade(alembic_config(url), "0016")
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, unit_masses_mg FROM batch_records")).all())
        columns = conn.execute(text("SELECT * FROM batch_records")).keys()
    engine.dispose()
    assert "measurements" not in columns and "units_made" not in columns
    stored = rows[with_masses]
    assert (stored if isinstance(stored, list) else json.loads(stored)) == masses
    assert rows[without] is None or rows[without] == "null"

    upgrade(url)
    assert fh.batch(seeded, with_masses).measurements == {"unit_masses_mg": masses}
    assert fh.batch(seeded, with_masses).units_made == 3
    assert fh.batch(seeded, with_masses).content() == content
    assert fh.batch(seeded, without).measurements is None
    assert fh.batch(seeded, without).units_made is None


def test_migration_0017_downgrade_stops_at_another_family_s_document(seeded: App) -> None:
    batch_id = fh.start(seeded, fh.ticketed_job(seeded))
    fh.edit(seeded, BatchRecord, batch_id, measurements={"viable_cells": [1.0e8]}, units_made=1)
    _without_lots_the_old_schema_cannot_hold(seeded)
    url = _url(seeded)
    seeded.engine.dispose()
    with pytest.raises(RuntimeError, match=batch_id):
        command.downgrade(alembic_config(url), "0016")
    upgrade(url)  # still at head (or back to it): the document is where it was
    assert fh.batch(seeded, batch_id).measurements == {"viable_cells": [1.0e8]}


def test_the_api_checks_a_fault_kind_against_the_machine_s_family(seeded: App) -> None:
    client = TestClient(create_web_app(seeded))
    token = client.post(
        "/api/v1/auth/token", json={"username": "admin", "password": TEST_PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/machines/{fh.machine_id(seeded, 'GSTT printer A')}/faults"
    r = client.post(url, json={"kind": "jam", "severity": 0.5}, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "fault.kind"
    assert "'jam'" in error["message"]
    assert "nozzle_clog, temperature_drift, humidity_excursion" in error["message"]
    r = client.post(url, json={"kind": "nozzle_clog", "severity": 0.5}, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["fault"] == "nozzle_clog severity 0.50 from unit 0"


def test_the_batch_page_charts_the_family_s_measurement(seeded: App) -> None:
    batch_id = fh.start(seeded, fh.ticketed_job(seeded))  # 2 mg hydrocortisone, 21 units
    fh.finish(seeded, batch_id)
    masses = (fh.batch(seeded, batch_id).measurements or {})["unit_masses_mg"]
    page = fh.web_login(seeded, "qp").get(f"/batches/{batch_id}").text
    # 2 mg at 2.5 % w/w drug loading: 2 / 0.025 = 80 mg a unit; the demo's unit-mass
    # specification is ±7.5 %
    assert "21 × 2 mg, target 80.00 mg (cylinder Ø" in page
    assert "Unit measurements: mass (mg)</h2>" in page
    assert "mass (mg) per unit — target 80.0 mg ± 7.5 %" in page
    assert "21 units measured in line; green band: target ±7.5 % (unit-mass specification)" in page
    # one dot per unit, each titled with its mass
    assert page.count("<circle ") == 21
    assert f"<title>unit 1: {masses[0]:.2f} mg</title>" in page
