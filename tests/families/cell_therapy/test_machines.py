"""cell_therapy's machines part (production.kit.MachineKit): the cell_micro_factory twin, its
telemetry, growth kinetics and faults, and the batch record's measurement document.

A run with `noise=False` follows the growth model exactly, so its numbers are checked against
hand calculations (design: 1e7 cells seeded in 200 mL, K = 2e9, Td = 36 h so r = ln 2 × 24/36 per
day and e^(-3r) = 1/4 exactly; harvest target 1.75e8, at least 5 and at most 12 days)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.families.cell_therapy.test_design import ENVELOPE  # the hand-calculated design

from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.designs import FamilyRegistry
from nearfab.families.cell_therapy.family import CellTherapyFamily
from nearfab.families.cell_therapy.logic.design import Envelope, design_product
from nearfab.families.cell_therapy.machines import (
    CellTherapyMachines,
    SimulatedCellMicroFactory,
)
from nearfab.network import Machine
from nearfab.production import MachineFleet, MachineKit, TicketSigner, TwinSetup
from nearfab.production.logic import summarise_telemetry
from nearfab.production.machines import Fault, MachineAdapter, RunResult, SimulatedMachine
from nearfab.production.tickets import SignedTicket, TicketRejected

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
SIGNER = TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex("33" * 32)))
KIT = CellTherapyMachines()


def a_design(**envelope: Any) -> dict[str, Any]:
    """2 × 10^6 cells/kg for 70 kg: 1.4e8 cells in one 70 mL bag, 1.75e8 to grow, 7 days."""
    env = Envelope.from_dict({**ENVELOPE, **envelope})
    return design_product(target_cells=1.4e8, body_weight_kg=70, envelope=env).to_dict()


def ticket(design: dict[str, Any] | None = None, **overrides: Any) -> SignedTicket:
    payload: dict[str, Any] = {
        "ticket_id": "T-CT-1",
        "job_id": "job_ct_1",
        "machine_id": "mf-01",
        "expires_at": (START + timedelta(days=1)).isoformat(),
        "design": design if design is not None else a_design(),
    }
    payload.update(overrides)
    return SIGNER.sign(payload)


def twin(clock: ManualClock | None = None, **kwargs: Any) -> SimulatedCellMicroFactory:
    kwargs.setdefault("noise", False)
    return SimulatedCellMicroFactory(
        "mf-01",
        firmware="cmf-sim 2.0",
        control_public_key_pem=SIGNER.public_key_pem,
        clock=clock or ManualClock(START),
        seed=11,
        **kwargs,
    )


def values(result: RunResult, metric: str) -> list[float]:
    return [r.value for r in result.telemetry if r.metric == metric]


def document(result: RunResult) -> dict[str, Any]:
    return KIT.check_measurements(KIT.measurement_document(result))


def machine(machine_type: str = "cell_micro_factory") -> Machine:
    return Machine(
        id="mch_cmf",
        site_id="site_1",
        name="cmf-1",
        machine_type=machine_type,
        firmware="cmf-sim 2.0",
        serial_number="SN-CMF-1",
        adapter="simulated",
        status="available",
    )


# -- the kit -----------------------------------------------------------------------------------


def test_the_kit_and_its_twin_satisfy_the_protocols() -> None:
    kit: MachineKit = KIT
    assert kit.machine_types == ("cell_micro_factory",)
    assert kit.fault_kinds == ("contamination", "slow_growth", "equipment_fault")
    adapter: MachineAdapter = twin()
    simulated: SimulatedMachine = twin()
    assert adapter.machine_id == simulated.machine_id == "mf-01"
    cpps = {name for name, spec in kit.metrics.items() if spec.cpp}
    assert cpps == {
        "temperature_c",
        "ph",
        "dissolved_oxygen_pct",
        "glucose_mmol_l",
        "lactate_mmol_l",
    }
    in_process = set(kit.metrics) - cpps
    assert in_process == {
        "cell_density_e6_per_ml",
        "daily_cell_density_e6_per_ml",
        "daily_viability_pct",
    }
    temperature = kit.metrics["temperature_c"]
    assert (temperature.target, temperature.low, temperature.high, temperature.unit) == (
        37.0,
        36.0,
        38.0,
        "°C",
    )
    assert temperature.parameter() == {"target": 37.0, "low": 36.0, "high": 38.0, "unit": "°C"}


def test_the_family_builds_a_twin_only_for_its_machine_type() -> None:
    setup = TwinSetup(
        control_public_key_pem=SIGNER.public_key_pem,
        clock=ManualClock(START),
        seed=3,
        seconds_per_unit=30,
        sample_every_s=10,
    )
    built = KIT.twin(machine(), setup)
    # a culture day is the fleet's unit of machine work: 30 s, sampled every 10 s
    assert (built.seconds_per_day, built.samples_per_day) == (30.0, 3)
    assert KIT.connect(machine()) is None
    with pytest.raises(Refused) as caught:
        KIT.twin(machine("tablet_printer"), setup)
    assert caught.value.field == "machine_type"


def test_the_fleet_reaches_the_twin_through_the_registry() -> None:
    families = FamilyRegistry()
    families.register(CellTherapyFamily())  # registered in this test only
    fleet = MachineFleet(ManualClock(START), SIGNER.public_key_pem, families)
    mf = machine()
    assert isinstance(fleet.adapter_for(mf), SimulatedCellMicroFactory)
    with pytest.raises(ValidationFailed) as caught:
        fleet.inject_fault(mf, Fault("nozzle_clog", 0.3))
    assert caught.value.field == "fault.kind"
    assert "(kinds: contamination, slow_growth, equipment_fault)" in caught.value.message
    fleet.inject_fault(mf, Fault("slow_growth", 0.4, from_unit=2))
    assert fleet.adapter_for(mf).faults == (Fault("slow_growth", 0.4, from_unit=2),)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fault", "field"),
    [
        (Fault("nozzle_clog"), "fault.kind"),
        (Fault("slow_growth", 1.0), "fault.severity"),
        (Fault("contamination", 0.0), "fault.severity"),
        (Fault("equipment_fault", 25.0), "fault.severity"),
    ],
)
def test_faults_the_twin_cannot_suffer_are_refused(fault: Fault, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        KIT.check_fault(fault)
    assert caught.value.field == field
    with pytest.raises(ValidationFailed):
        twin().inject_fault(fault)


# -- the ticket --------------------------------------------------------------------------------


def test_the_twin_checks_its_ticket_as_a_real_machine_must() -> None:
    factory = twin()
    with pytest.raises(TicketRejected):
        factory.execute(ticket(machine_id="mf-02"))  # another machine's
    altered = ticket()
    altered.payload["design"]["target_cells"] = 1e9
    with pytest.raises(TicketRejected):
        factory.execute(altered)
    good = ticket()
    factory.execute(good)
    with pytest.raises(TicketRejected) as caught:
        factory.execute(good)
    assert caught.value.code == "ticket_replayed"
    broken = a_design()
    del broken["seed_cells"]
    with pytest.raises(TicketRejected) as caught:
        twin().execute(ticket(broken))
    assert caught.value.field == "design.seed_cells"
    with pytest.raises(TicketRejected) as caught:
        twin().execute(ticket({**a_design(), "bags": 0}))
    assert caught.value.field == "design.bags"


# -- a healthy run, on the model ---------------------------------------------------------------


def test_a_healthy_run_follows_the_logistic_model_and_takes_no_real_days() -> None:
    clock = ManualClock(START)
    began = time.monotonic()
    result = twin(clock).execute(ticket())
    assert time.monotonic() - began < 5  # seven culture days, in well under a second
    # a culture day takes the twin's 60 s of the clock: harvested on day 7
    assert result.finished_at - result.started_at == timedelta(seconds=7 * 60)
    doc = document(result)
    assert (doc["culture_days"], doc["harvested"], doc["stop_reason"], doc["bags"]) == (
        7,
        True,
        None,
        1,
    )
    # N(d) / 200 mL with N(d) = 2e9 / (1 + 199 e^(-rd)); e^(-3r) = 1/4, e^(-6r) = 1/16:
    # day 0: 1e7 / 200 = 5e4; day 3: 2e9 / (1 + 199/4) / 200 = 1.970443e5;
    # day 6: 2e9 / (1 + 199/16) / 200 = 7.441860e5; day 7 (e^(-7r) = 0.0393725): 1.131845e6
    density = doc["cell_density_per_day"]
    assert len(density) == 8
    assert density[0] == 5.0e4
    assert density[3] == pytest.approx(1.970443e5, rel=1e-6)
    assert density[6] == pytest.approx(7.441860e5, rel=1e-6)
    assert density[7] == pytest.approx(1.131845e6, rel=1e-6)
    # fold expansion N(7) / N(0) = 2.263689e8 / 1e7
    assert doc["fold_expansion"] == pytest.approx(22.63689, rel=1e-5)
    # dead cells: 1e7 × 0.05 / 0.95 = 5.263158e5 at seeding, plus 0.03 a day × the integral
    # of N, (K/r) ln(1 + N0 (e^(7r) - 1) / K) = 4.328085e9 × ln(1.121992) = 4.981875e8:
    # D = 5.263158e5 + 1.494562e7 = 1.547194e7; viability 2.263689e8 / 2.418409e8 = 0.936024
    assert doc["viability"] == pytest.approx(0.936024, abs=1e-5)
    assert doc["viability_per_day"][0] == pytest.approx(0.95)
    # the bag holds the dose: 2.263689e8 harvested × 0.8 = 1.81e8 > 1.4e8, formulated to 1.4e8
    assert doc["viable_cells"] == pytest.approx(1.4e8)
    assert KIT.units_made(doc) == 1
    [bag] = result.units
    assert bag.values["viable_cells"] == pytest.approx(1.4e8)
    # the CPPs stay within their limits
    _, excursions = summarise_telemetry(
        ((r.metric, r.value) for r in result.telemetry),
        {name: spec.parameter() for name, spec in KIT.metrics.items() if spec.cpp},
    )
    assert excursions == []
    # readings: 2 counts at seeding, then each day 6 samples × 6 metrics and 2 counts
    assert len(result.telemetry) == 2 + 7 * (6 * 6 + 2)
    assert result.events[-1] == "run finished: 7 days of culture, 1 bag filled"


def test_glucose_and_lactate_follow_the_cells() -> None:
    # without perfusion, glucose falls by uptake × the integral of the density:
    # 1 pmol/cell/day × 4.981875e8 cells·day / 200 mL = 2.490937e6 pmol/mL = 2.490937 mM,
    # from 11 mM to 8.509063 mM; lactate 1.8 × 2.490937 = 4.483687 mM;
    # pH 7.35 - 0.012 × 4.483687 = 7.296196; DO 50 - 2 × 1.131845 = 47.736310 %
    result = twin().execute(ticket(a_design(medium_ml_per_day=0)))
    assert values(result, "glucose_mmol_l")[-1] == pytest.approx(8.509063, abs=1e-5)
    assert values(result, "lactate_mmol_l")[-1] == pytest.approx(4.483687, abs=1e-5)
    assert values(result, "ph")[-1] == pytest.approx(7.296196, abs=1e-5)
    assert values(result, "dissolved_oxygen_pct")[-1] == pytest.approx(47.73631, abs=1e-4)
    # fed 0.5 vessel volumes a day, the vessel keeps more glucose and less lactate
    fed = twin().execute(ticket())
    assert values(fed, "glucose_mmol_l")[-1] > 9.5
    assert values(fed, "lactate_mmol_l")[-1] < 2.5


def test_a_noisy_run_is_deterministic_for_its_seed_and_near_the_model() -> None:
    first = twin(noise=True).execute(ticket())
    again = twin(noise=True).execute(ticket())
    assert first.telemetry == again.telemetry and first.units == again.units
    other = SimulatedCellMicroFactory(
        "mf-01",
        firmware="f",
        control_public_key_pem=SIGNER.public_key_pem,
        clock=ManualClock(START),
        seed=12,
    ).execute(ticket())
    assert other.telemetry != first.telemetry
    # a ±0.05 °C probe around 37 °C
    temperatures = values(first, "temperature_c")
    assert abs(sum(temperatures) / len(temperatures) - 37.0) < 0.05


# -- faults ------------------------------------------------------------------------------------


def test_slow_growth_misses_the_harvest_target() -> None:
    result = twin(faults=[Fault("slow_growth", 0.5)]).execute(ticket())
    doc = document(result)
    # half the rate: 2.94876 / (r/2) = 12.76 days needed > 12, so harvest on day 12 with
    # N(12) = 2e9 / (1 + 199 e^(-6r)) = 2e9 / (1 + 199/16) = 1.488372e8 (e^(-6r) = 1/16);
    # × yield 0.8 = 1.190698e8, short of the 1.4e8 dose: all of it goes in the bag
    assert doc["culture_days"] == 12
    assert doc["cell_density_per_day"][12] == pytest.approx(1.488372e8 / 200, rel=1e-6)
    assert doc["viable_cells"] == pytest.approx(1.190698e8, rel=1e-6)
    assert any("below the harvest target" in e for e in result.events)


def test_an_equipment_fault_takes_the_temperature_out_of_range_and_slows_growth() -> None:
    # 10 °C below 37 °C halves the growth rate (Q10 = 2): the slow-growth run above, exactly
    result = twin(faults=[Fault("equipment_fault", 10.0)]).execute(ticket())
    doc = document(result)
    assert doc["viable_cells"] == pytest.approx(1.190698e8, rel=1e-6)
    assert set(values(result, "temperature_c")) == {27.0}
    _, excursions = summarise_telemetry(
        ((r.metric, r.value) for r in result.telemetry),
        {"temperature_c": KIT.metrics["temperature_c"].parameter()},
    )
    assert excursions and excursions[0].startswith("temperature_c: 72 of 72 readings outside")


def test_contamination_stops_the_culture_and_nothing_is_harvested() -> None:
    result = twin(faults=[Fault("contamination", 1.0, from_unit=3)]).execute(ticket())
    doc = document(result)
    # the load grows from 1e-3 doubling every 2 h (k = 8.317766 a day) and is seen at 1/2:
    # t = ln(999) / k = 0.83036 day, at the 5th 4-hour sample of day 3: day 3.8
    assert (doc["harvested"], doc["bags"], KIT.units_made(doc)) == (False, 0, 0)
    assert doc["stop_reason"].startswith("contamination suspected on day 3.8")
    assert doc["viable_cells"] == 0 and result.units == ()
    # days 0-3 and the count when it stopped
    assert doc["culture_days"] == 4
    assert doc["viability_per_day"][-1] < doc["viability_per_day"][3]
    # the acid and the oxygen demand show in the telemetry: DO below its 30 % limit
    assert values(result, "dissolved_oxygen_pct")[-1] < 30
    assert values(result, "ph")[-1] < values(result, "ph")[17]
    assert result.finished_at - result.started_at == timedelta(seconds=3 * 60 + 5 * 10)


def test_faults_persist_until_cleared() -> None:
    factory = twin()
    factory.inject_fault(Fault("slow_growth", 0.5))
    assert factory.faults == (Fault("slow_growth", 0.5),)
    assert document(factory.execute(ticket()))["culture_days"] == 12
    factory.clear_faults()
    assert document(factory.execute(ticket(ticket_id="T-CT-2")))["culture_days"] == 7


# -- the measurement document ------------------------------------------------------------------


def good_document() -> dict[str, Any]:
    return document(twin().execute(ticket()))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "measurements.colour"),
        ({"viability": 1.2}, "measurements.viability"),
        ({"viable_cells": -1}, "measurements.viable_cells"),
        ({"viable_cells": True}, "measurements.viable_cells"),
        ({"bags": 1.5}, "measurements.bags"),
        ({"culture_days": 3}, "measurements.cell_density_per_day"),  # 8 values for 3 days
        ({"viability_per_day": [0.9, "x"]}, "measurements.viability_per_day[1]"),
        ({"harvested": "yes"}, "measurements.harvested"),
        ({"stop_reason": "why not"}, "measurements.stop_reason"),  # harvested
        ({"harvested": False, "stop_reason": "contamination"}, "measurements.bags"),
        ({"qc": ["negative"]}, "measurements.qc"),
    ],
)
def test_a_bad_document_is_refused_naming_the_key(change: dict[str, Any], field: str) -> None:
    doc = {**good_document(), **change}
    with pytest.raises(ValidationFailed) as caught:
        KIT.check_measurements(doc)
    assert caught.value.field == field


def test_a_missing_key_is_refused_and_the_lab_results_are_kept() -> None:
    doc = good_document()
    del doc["fold_expansion"]
    with pytest.raises(ValidationFailed) as caught:
        KIT.check_measurements(doc)
    assert caught.value.field == "measurements.fold_expansion"
    with_qc = {**good_document(), "qc": {"sterility": "pending"}}
    assert KIT.check_measurements(with_qc)["qc"] == {"sterility": "pending"}
    with pytest.raises(ValidationFailed) as caught:
        KIT.check_measurements([1, 2])
    assert caught.value.field == "measurements"


def test_the_batch_page_charts_each_day_against_the_growth_model() -> None:
    design = a_design()
    series = KIT.measurement_series(good_document(), design, {})
    assert series is not None
    # on the model every day is 100 % of the expectation
    assert series.values == (100.0,) * 7
    assert (series.target, series.tolerance_pct, series.unit) == (100.0, 50.0, "%")
    slow = document(twin(faults=[Fault("slow_growth", 0.5)]).execute(ticket()))
    charted = KIT.measurement_series(slow, design, {"growth_trajectory": {"tolerance_pct": 30}})
    assert charted is not None and charted.tolerance_pct == 30.0
    # day 3 at half the rate: N = 2e9 / (1 + 199 e^(-3r/2)) with e^(-3r/2) = 1/2: 2e9/100.5
    # = 1.990050e7, against 3.940887e7 on the model (2e9 / 50.75): 50.50 %
    assert charted.values[2] == pytest.approx(50.50, abs=0.01)
    assert KIT.measurement_series(None, design, {}) is None
    assert KIT.measurement_series(good_document(), {}, {}) is None


def test_the_design_in_a_line() -> None:
    assert KIT.design_summary(a_design()) == (
        "1.4 × 10^8 viable cells (2 × 10^6/kg × 70 kg) in 1 bag of 70 mL; 7 days of "
        "expansion from 1 × 10^7"
    )
    assert KIT.design_summary({}) == ""
    assert math.isclose(a_design()["harvest_cells"], 1.75e8)
