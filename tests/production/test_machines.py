"""The simulated tablet printer: ticket checks, determinism, timing, healthy runs and faults."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nearfab.common.clock import ManualClock
from nearfab.common.errors import ValidationFailed
from nearfab.families.solid_dose.machines import SimulatedTabletPrinter, SolidDoseMachines
from nearfab.production.machines import (
    Fault,
    MachineAdapter,
    RunResult,
)
from nearfab.production.tickets import SignedTicket, TicketRejected, TicketSigner

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
TARGET_MG = 50.0
UNITS = 10
SIGNER = TicketSigner(
    Ed25519PrivateKey.from_private_bytes(bytes.fromhex("11" * 32))  # fixed test key
)


def make_ticket(signer: TicketSigner = SIGNER, **overrides: Any) -> SignedTicket:
    payload: dict[str, Any] = {
        "ticket_id": "T-0001",
        "machine_id": "printer-01",
        "expires_at": (START + timedelta(days=1)).isoformat(),
        "design": {"target_mass_mg": TARGET_MG, "units": UNITS},
    }
    payload.update(overrides)
    return signer.sign(payload)


def make_printer(
    clock: ManualClock | None = None, *, seed: int | None = 42, **kwargs: Any
) -> SimulatedTabletPrinter:
    return SimulatedTabletPrinter(
        "printer-01",
        firmware="sim-1.4.2",
        control_public_key_pem=SIGNER.public_key_pem,
        clock=clock or ManualClock(START),
        seed=seed,
        **kwargs,
    )


def values(result: RunResult, metric: str, units: range | None = None) -> list[float]:
    """Readings of `metric`, optionally only those taken while printing units in `units`."""
    start = result.started_at
    out = []
    for r in result.telemetry:
        if r.metric != metric:
            continue
        # a sample at t seconds belongs to unit ceil(t / 60) - 1 (defaults: 60 s per unit)
        unit = int(((r.at - start).total_seconds() - 1e-6) // 60)
        if units is None or unit in units:
            out.append(r.value)
    return out


# -- the ticket -----------------------------------------------------------------------------


def test_printer_satisfies_the_machine_adapter_protocol() -> None:
    adapter: MachineAdapter = make_printer()
    assert adapter.machine_id == "printer-01"
    assert adapter.firmware == "sim-1.4.2"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: dataclasses.replace(t, signature=""),
        lambda t: dataclasses.replace(
            t, payload={**t.payload, "design": {"target_mass_mg": TARGET_MG, "units": 1000}}
        ),
        lambda t: make_ticket(TicketSigner(Ed25519PrivateKey.generate())),
        lambda t: make_ticket(machine_id="printer-02"),
        lambda t: make_ticket(expires_at=(START - timedelta(seconds=1)).isoformat()),
    ],
    ids=["unsigned", "altered", "other_key", "other_machine", "expired"],
)
def test_printer_refuses_bad_tickets_without_running(tamper: Any) -> None:
    clock = ManualClock(START)
    printer = make_printer(clock)
    with pytest.raises(TicketRejected):
        printer.execute(tamper(make_ticket()))
    assert clock.now() == START  # nothing was printed: no time passed


def test_signed_ticket_without_design_is_rejected() -> None:
    with pytest.raises(TicketRejected, match="design") as exc:
        make_printer().execute(make_ticket(design={"units": 3}))
    assert exc.value.field == "design.target_mass_mg"


def test_expiry_is_judged_on_the_machine_clock() -> None:
    clock = ManualClock(START + timedelta(days=2))  # the ticket expired a day ago
    with pytest.raises(TicketRejected, match="expired"):
        make_printer(clock).execute(make_ticket())


# -- timing ---------------------------------------------------------------------------------


def test_timestamps_come_from_the_clock_and_duration_is_units_times_seconds() -> None:
    clock = ManualClock(START)
    result = make_printer(clock).execute(make_ticket())
    assert result.started_at == START
    # 10 units × 60 s = 600 s
    assert result.finished_at - result.started_at == timedelta(seconds=600)
    assert clock.now() == result.finished_at
    # a sample every 10 s: 6 per unit, 60 in all, at START + 10 s, + 20 s, ..., + 600 s
    expected_times = [START + timedelta(seconds=10 * k) for k in range(1, 61)]
    times = [r.at for r in result.telemetry]
    assert sorted(set(times)) == expected_times
    assert times == sorted(times)  # monotonic
    # 4 metrics per sample: 60 × 4 = 240 readings
    assert len(result.telemetry) == 240
    for at in expected_times:
        assert sorted(r.metric for r in result.telemetry if r.at == at) == [
            "chamber_humidity_pct",
            "extrusion_pressure_kpa",
            "nozzle_temperature_c",
            "print_speed_mm_s",
        ]
    # unit i is weighed when it is done, at START + (i + 1) × 60 s
    assert [u.index for u in result.units] == list(range(UNITS))
    assert [u.at for u in result.units] == [
        START + timedelta(seconds=60 * (i + 1)) for i in range(UNITS)
    ]


def test_sampling_period_that_does_not_divide_the_unit_time() -> None:
    # 25 s per unit sampled every 10 s: samples at 10, 20, 25 s into each unit; 3 units = 75 s.
    clock = ManualClock(START)
    printer = make_printer(clock, seconds_per_unit=25.0, sample_every_s=10.0)
    result = printer.execute(make_ticket(design={"target_mass_mg": TARGET_MG, "units": 3}))
    assert result.finished_at - result.started_at == timedelta(seconds=75)
    offsets = sorted({(r.at - START).total_seconds() for r in result.telemetry})
    assert offsets == [10, 20, 25, 35, 45, 50, 60, 70, 75]


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_same_run_and_different_seed_different_run() -> None:
    a = make_printer(seed=7).execute(make_ticket())
    b = make_printer(seed=7).execute(make_ticket())
    c = make_printer(seed=8).execute(make_ticket())
    assert a == b
    assert [u.values["mass_mg"] for u in a.units] != [u.values["mass_mg"] for u in c.units]


def test_result_identifies_machine_firmware_and_ticket() -> None:
    ticket = make_ticket()
    result = make_printer().execute(ticket)
    assert result.machine_id == "printer-01"
    assert result.firmware == "sim-1.4.2"
    assert result.ticket_hash == ticket.ticket_hash
    assert result.events[0] == "ticket verified"


# -- healthy runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_healthy_run_units_within_7_5_percent_and_telemetry_in_range(seed: int) -> None:
    ticket = make_ticket(design={"target_mass_mg": TARGET_MG, "units": 30})
    result = make_printer(seed=seed).execute(ticket)
    masses = [u.values["mass_mg"] for u in result.units]
    assert len(masses) == 30
    # ±7.5 % of 50 mg: 46.25–53.75 mg
    assert all(46.25 <= m <= 53.75 for m in masses), masses
    # 1.2 % RSD: the mean of 30 is within 1 % (≈ 4.5 standard errors) of the target
    assert statistics.mean(masses) == pytest.approx(TARGET_MG, rel=0.01)
    assert 0.005 < statistics.stdev(masses) / TARGET_MG < 0.02
    # default limits: 180 ± 5 °C, 450 ± 60 kPa, 20 ± 2 mm/s, 20–50 %RH
    limits = {
        "nozzle_temperature_c": (175, 185),
        "extrusion_pressure_kpa": (390, 510),
        "print_speed_mm_s": (18, 22),
        "chamber_humidity_pct": (20, 50),
    }
    for reading in result.telemetry:
        low, high = limits[reading.metric]
        assert low <= reading.value <= high, reading
    assert statistics.mean(values(result, "nozzle_temperature_c")) == pytest.approx(180, abs=1.5)
    assert statistics.mean(values(result, "extrusion_pressure_kpa")) == pytest.approx(450, abs=20)
    units = {r.metric: r.unit for r in result.telemetry}
    assert units == {
        "nozzle_temperature_c": "°C",
        "extrusion_pressure_kpa": "kPa",
        "print_speed_mm_s": "mm/s",
        "chamber_humidity_pct": "%RH",
    }
    assert not any(e.startswith("fault") for e in result.events)


def test_telemetry_is_noisy_and_autocorrelated() -> None:
    ticket = make_ticket(design={"target_mass_mg": TARGET_MG, "units": 50})
    temps = values(make_printer(seed=3).execute(ticket), "nozzle_temperature_c")
    assert len(set(temps)) > 100  # not a constant
    dev = [t - statistics.mean(temps) for t in temps]
    lag1 = sum(a * b for a, b in itertools.pairwise(dev)) / sum(d * d for d in dev)
    assert 0.5 < lag1 < 0.95  # AR(1) with φ = 0.8


def test_ticket_process_parameters_override_the_defaults() -> None:
    ticket = make_ticket(
        process_parameters={
            "nozzle_temperature_c": {"target": 150.0, "low": 146.0, "high": 154.0, "unit": "°C"}
        }
    )
    result = make_printer().execute(ticket)
    temps = values(result, "nozzle_temperature_c")
    assert statistics.mean(temps) == pytest.approx(150, abs=1.5)
    assert all(146 <= t <= 154 for t in temps)
    # the others keep their defaults
    assert statistics.mean(values(result, "print_speed_mm_s")) == pytest.approx(20, abs=0.5)


# -- faults ---------------------------------------------------------------------------------


def test_nozzle_clog_from_unit_5_underfills_and_raises_pressure() -> None:
    printer = make_printer(faults=[Fault("nozzle_clog", severity=0.3, from_unit=5)])
    result = printer.execute(make_ticket())
    assert "fault injected: nozzle_clog severity 0.30 from unit 5" in result.events
    ratios = [u.values["mass_mg"] / TARGET_MG for u in result.units]
    # units 0–4 healthy (within ±7.5 %); units 5–9 ≈ 1 − 0.3 = 70 % of target
    assert all(0.925 <= r <= 1.075 for r in ratios[:5]), ratios
    assert all(0.62 <= r <= 0.78 for r in ratios[5:]), ratios
    assert statistics.mean(ratios[5:]) == pytest.approx(0.70, abs=0.03)
    # pressure: ≈ 450 kPa before; ≈ 450 × 1.3 = 585 kPa after, above the 510 kPa limit
    before = values(result, "extrusion_pressure_kpa", range(0, 5))
    after = values(result, "extrusion_pressure_kpa", range(5, 10))
    assert statistics.mean(before) == pytest.approx(450, abs=20)
    assert statistics.mean(after) == pytest.approx(585, abs=20)
    assert min(after) > 510


def test_injected_fault_equals_constructor_fault() -> None:
    fault = Fault("nozzle_clog", severity=0.3, from_unit=5)
    a = make_printer(faults=[fault]).execute(make_ticket())
    printer = make_printer()
    printer.inject_fault(fault)
    assert printer.faults == (fault,)
    assert printer.execute(make_ticket()) == a
    printer.clear_faults()
    healthy = printer.execute(make_ticket(ticket_id="T-0002"))  # a ticket runs once
    assert all(0.925 <= u.values["mass_mg"] / TARGET_MG <= 1.075 for u in healthy.units)


def test_same_seed_fault_changes_only_what_it_affects() -> None:
    # The noise draws are the same with and without the clog: units 0–4 weigh exactly the same.
    healthy = make_printer(seed=5).execute(make_ticket())
    clogged = make_printer(seed=5, faults=[Fault("nozzle_clog", 0.3, 5)]).execute(make_ticket())
    assert healthy.units[:5] == clogged.units[:5]
    assert values(healthy, "nozzle_temperature_c") == values(clogged, "nozzle_temperature_c")


def test_temperature_drift_rises_per_unit_and_barely_moves_mass() -> None:
    # 1 °C per unit from unit 2: by the end of unit 9 the offset is 1 × (10 − 2) = 8 °C;
    # during unit 9 it runs 7.17 → 8 °C (mean of the six samples ≈ 7.58 °C).
    printer = make_printer(faults=[Fault("temperature_drift", severity=1.0, from_unit=2)])
    result = printer.execute(make_ticket())
    early = statistics.mean(values(result, "nozzle_temperature_c", range(0, 2)))
    last = statistics.mean(values(result, "nozzle_temperature_c", range(9, 10)))
    assert early == pytest.approx(180, abs=1.5)
    assert last - 180 == pytest.approx(7.58, abs=1.5)
    assert max(values(result, "nozzle_temperature_c")) > 185  # out of the validated range
    # mass: +0.2 %/°C → at most +1.6 % — still within ±7.5 %
    assert all(0.925 <= u.values["mass_mg"] / TARGET_MG <= 1.075 for u in result.units)


def test_humidity_excursion_adds_relative_humidity() -> None:
    printer = make_printer(faults=[Fault("humidity_excursion", severity=20.0, from_unit=3)])
    result = printer.execute(make_ticket())
    before = statistics.mean(values(result, "chamber_humidity_pct", range(0, 3)))
    after = statistics.mean(values(result, "chamber_humidity_pct", range(3, 10)))
    assert before == pytest.approx(35, abs=3)
    assert after == pytest.approx(55, abs=3)  # 35 + 20 %RH, above the 50 %RH limit
    assert "unit 3: humidity_excursion takes effect" in result.events


def test_faults_are_validated() -> None:
    with pytest.raises(ValidationFailed):
        SolidDoseMachines().check_fault(Fault("nozzle_clog", severity=1.0))
    with pytest.raises(ValidationFailed):
        Fault("temperature_drift", severity=-1.0)
    with pytest.raises(ValidationFailed):
        SolidDoseMachines().check_fault(Fault("gremlins"))
    with pytest.raises(ValidationFailed):
        Fault("nozzle_clog", from_unit=-1)


def test_a_ticket_is_good_for_one_run_only() -> None:
    clock = ManualClock()
    signer = TicketSigner(Ed25519PrivateKey.generate())
    printer = SimulatedTabletPrinter(
        "mch_1", firmware="fw 1", clock=clock, control_public_key_pem=signer.public_key_pem, seed=1
    )
    ticket = signer.sign({"machine_id": "mch_1", "design": {"target_mass_mg": 50.0, "units": 2}})
    assert len(printer.execute(ticket).units) == 2
    with pytest.raises(TicketRejected) as caught:
        printer.execute(ticket)
    assert caught.value.code == "ticket_replayed"
