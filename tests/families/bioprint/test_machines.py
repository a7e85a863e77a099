"""bioprint's machines part: the extrusion bioprinter's twin, its in-process monitoring and the
batch record's measurement document.

A run with `noise=False` follows the twin's model exactly: each construct holds target ÷
constructs IEQ and survives at the base viability (0.92) at the target pressure. A nozzle clog
of 1 kPa per construct from construct 10 raises the pressure at construct k to 30 + (k − 9) kPa:
above the 45 kPa CPP limit from k = 25 (46 kPa), so constructs 25-41 (17 of 42) print out of
range, 4 samples each = 68 readings; each loses 0.006 per kPa over the 30 kPa target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.families.bioprint.test_design import request

from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.families.bioprint.family import BioprintFamily
from nearfab.families.bioprint.machines import BioprintMachines, SimulatedExtrusionBioprinter
from nearfab.network import Machine
from nearfab.production import MachineKit, TicketSigner, TwinSetup
from nearfab.production.logic import summarise_telemetry
from nearfab.production.machines import Fault, RunResult
from nearfab.production.tickets import SignedTicket, TicketRejected

START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
SIGNER = TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex("44" * 32)))
KIT = BioprintMachines()
DESIGN, _ = BioprintFamily().design(request())  # 420,000 IEQ in 42 constructs


def ticket(design: dict[str, Any] | None = None, **overrides: Any) -> SignedTicket:
    payload: dict[str, Any] = {
        "ticket_id": "T-BP-1",
        "job_id": "job_bp_1",
        "machine_id": "bp-01",
        "expires_at": (START + timedelta(hours=6)).isoformat(),
        "design": DESIGN if design is None else design,
    }
    payload.update(overrides)
    return SIGNER.sign(payload)


def twin(**kwargs: Any) -> SimulatedExtrusionBioprinter:
    kwargs.setdefault("noise", False)
    return SimulatedExtrusionBioprinter(
        "bp-01",
        firmware="bp 2.1",
        control_public_key_pem=SIGNER.public_key_pem,
        clock=ManualClock(START),
        seed=5,
        seconds_per_construct=90.0,
        **kwargs,
    )


def cpp_excursions(result: RunResult) -> list[str]:
    _, excursions = summarise_telemetry(
        ((r.metric, r.value) for r in result.telemetry),
        {name: spec.parameter() for name, spec in KIT.metrics.items() if spec.cpp},
    )
    return excursions


def test_the_kit_declares_its_cpps_and_faults() -> None:
    kit: MachineKit = KIT
    cpps = {name for name, spec in kit.metrics.items() if spec.cpp}
    assert cpps == {"pressure_kpa", "nozzle_temp_c", "bed_temp_c", "uv_dose_mj_cm2"}
    assert set(kit.metrics) - cpps == {"construct_viability_pct"}
    assert kit.fault_kinds == ("nozzle_clog", "uv_overdose", "bed_warm")
    with pytest.raises(ValidationFailed) as caught:
        kit.check_fault(Fault("contamination"))
    assert caught.value.field == "fault.kind"


def test_a_clean_print_by_hand() -> None:
    result = twin().execute(ticket())
    assert len(result.units) == 42
    # 420,000 IEQ ÷ 42 = 10,000 IEQ a construct; 42 × 90 s of the clock
    assert {round(u.values["ieq"]) for u in result.units} == {10_000}
    assert result.finished_at - result.started_at == timedelta(seconds=42 * 90)
    assert cpp_excursions(result) == []
    document = KIT.check_measurements(KIT.measurement_document(result))
    assert document["constructs"] == 42 and KIT.units_made(document) == 42
    assert document["ieq_printed"] == 420_000
    assert document["viability"] == pytest.approx(0.92)
    assert document["uv_dose_mean_mj_cm2"] == pytest.approx(300.0)
    # 4 samples × 3 metrics + a UV dose + a viability per construct
    assert len(result.telemetry) == 42 * (4 * 3 + 2)


def test_a_clogging_nozzle_leaves_the_pressure_range_and_costs_viability() -> None:
    result = twin(faults=[Fault("nozzle_clog", 1.0, from_unit=10)]).execute(ticket())
    (excursion,) = cpp_excursions(result)
    assert excursion.startswith("pressure_kpa: 68 of 168 readings outside")
    last = result.units[-1].values["viability"]
    # construct 41: 30 + 32 = 62 kPa, 32 kPa over target: 0.92 − 0.006 × 32 = 0.728
    assert last == pytest.approx(0.728)


def test_a_uv_overdose_is_a_cpp_excursion() -> None:
    result = twin(faults=[Fault("uv_overdose", 0.6)]).execute(ticket())
    # 300 × 1.6 = 480 mJ/cm² > 450: every construct; viability 0.92 − 0.0008 × 30 = 0.896
    (excursion,) = cpp_excursions(result)
    assert excursion.startswith("uv_dose_mj_cm2: 42 of 42 readings outside")
    assert result.units[0].values["viability"] == pytest.approx(0.896)


def test_tickets_are_verified_as_a_real_printer_must() -> None:
    printer = twin()
    good = ticket()
    printer.execute(good)
    with pytest.raises(TicketRejected) as replay:
        printer.execute(good)
    assert replay.value.code == "ticket_replayed"
    with pytest.raises(TicketRejected):
        twin().execute(ticket(machine_id="bp-99"))
    with pytest.raises(TicketRejected) as bad:
        twin().execute(ticket({**DESIGN, "constructs": 0}))
    assert bad.value.field == "design.constructs"


def test_the_twin_is_built_only_for_its_machine_type() -> None:
    setup = TwinSetup(
        control_public_key_pem=SIGNER.public_key_pem,
        clock=ManualClock(START),
        seed=1,
        seconds_per_unit=60.0,
        sample_every_s=10.0,
    )

    def row(machine_type: str) -> Machine:
        return Machine(
            id="m1",
            site_id="s1",
            name="bp",
            machine_type=machine_type,
            firmware="bp 2.1",
            serial_number="BP-1",
            adapter="simulated",
            status="available",
        )

    assert isinstance(KIT.twin(row("extrusion_bioprinter"), setup), SimulatedExtrusionBioprinter)
    with pytest.raises(Refused) as caught:
        KIT.twin(row("fdm_printer"), setup)
    assert caught.value.field == "machine_type"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": 1}, "measurements.colour"),
        ({"viability": 1.5}, "measurements.viability"),
        ({"viability_per_construct": []}, "measurements.viability_per_construct"),
        ({"qc": "none"}, "measurements.qc"),
    ],
)
def test_a_stored_document_is_checked_naming_the_key(change: dict[str, Any], field: str) -> None:
    document = KIT.measurement_document(twin().execute(ticket()))
    with pytest.raises(ValidationFailed) as caught:
        KIT.check_measurements({**document, **change})
    assert caught.value.field == field
