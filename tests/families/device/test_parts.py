"""The device family's parts one by one, without a database: the design against hand
calculations, the envelope's refusals, the design file's hash, the FDM twin's refusals
(unsigned, unapproved on a supervised printer, a design file that is not the signed one) and
its in-line checks, the release tests at their limits, the filament lot's attributes, the UDI
against the GS1 General Specifications, and the simulator's failure model."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.families.device.network import ENVELOPE

from nearfab.common.clock import ManualClock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.custody.gs1 import make_identifier, scan_elements, validate_gtin
from nearfab.families.device import DeviceFamily
from nearfab.families.device.geometry import (
    Envelope,
    coupon_mesh,
    design_file,
    design_flowmeter,
    device_mesh,
    material_g,
    print_time_s,
)
from nearfab.families.device.labels import udi_datamatrix_data, udi_element_string
from nearfab.families.device.machines import SimulatedFdmPrinter
from nearfab.families.device.release import coupon_check, flow_check, leak_check
from nearfab.production import TicketSigner
from nearfab.production.machines import Fault
from nearfab.production.tickets import TicketRejected
from nearfab.quality.kit import ReleaseEvidence
from nearfab.simulation.kit import SimulationKit

FAMILY = DeviceFamily()
ENV = Envelope.from_dict(ENVELOPE)
START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
SIGNER = TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex("16" * 32)))
# a regular 128-gon inscribed in a circle has (128 / 2π) sin(2π / 128) = 0.9995985 of its area
POLYGON = 0.9995985


def _design(qmax: float = 25.0, size: str = "M", units: int = 1) -> dict[str, Any]:
    return design_flowmeter(qmax_ml_s=qmax, size=size, units=units, envelope=ENV)


def test_a_small_flowmeter_by_hand() -> None:
    # size S: H = 90 - 10 = 80 mm; 2 g H = 1.569064, √ = 1.252623 m/s; × 0.61 = 0.764100;
    # A = 20e-6 / 0.764100 = 26.17459 mm²; d² = 4A/π = 33.32652; d = 5.7729 mm;
    # tolerance 5.7729 × 0.025 = 0.1443 mm; marks 5, 10, 15, 20 mL/s at 80 (q/20)²
    d = _design(20, "S")
    assert d["orifice_diameter_mm"] == pytest.approx(5.7729, abs=1e-4)
    assert d["critical_dimensions"]["orifice_diameter_mm"]["tolerance"] == pytest.approx(0.1443)
    assert [(g["flow_ml_s"], g["height_mm"]) for g in d["graduations"]] == [
        (5.0, 5.0), (10.0, 20.0), (15.0, 45.0), (20.0, 80.0),
    ]  # fmt: skip
    # a maximum flow off the 5 mL/s grid gets its own mark at full scale
    assert [g["flow_ml_s"] for g in _design(12, "S")["graduations"]] == [5.0, 10.0, 12.0]


def test_the_printed_volume_by_hand() -> None:
    # device: plate π (22² - 2.91606²) × 2 + wall π (22² - 20²) × 130 = 37,293.82 mm³ as
    # circles; the mesh's 128-gons hold 0.9995985 of that: 37,278.85 mm³
    d = _design()
    assert d["device_volume_mm3"] == pytest.approx(37293.82 * POLYGON, abs=0.2)
    assert float(device_mesh(d).volume) == pytest.approx(37293.82 * POLYGON, abs=0.2)
    assert device_mesh(d).is_watertight and coupon_mesh(d).is_watertight
    # coupon: the same plate and 10 mm of wall: (2,987.62 + 2,638.94) × 0.9995985
    assert d["coupon_volume_mm3"] == pytest.approx((2987.62 + 2638.94) * POLYGON, abs=0.2)
    # PETG 1.27 g/cm³: device 47.34 g; filament with 10 % waste (37,278.8 + 5,624.3) × 1.27e-3
    # × 1.1 = 59.94 g; print time 600 s + 42,903.1 / 8 = 5,962.9 s
    assert d["mass_g"] == pytest.approx(47.34, abs=0.01)
    assert material_g(d) == pytest.approx(59.94, abs=0.01)
    assert print_time_s(d) == pytest.approx(5962.9, abs=0.1)


def test_the_design_file_is_versioned_and_its_hash_is_the_file_s() -> None:
    d = _design()
    data = design_file(d)
    # binary STL: an 80-byte header, a uint32 triangle count, 50 bytes a triangle
    triangles = int.from_bytes(data[80:84], "little")
    assert len(data) == 84 + 50 * triangles == d["design_file"]["bytes"]
    assert hashlib.sha256(data).hexdigest() == d["design_file"]["sha256"]
    assert d["design_file"]["model"] == "flowmeter-model 1"
    assert d["design_file"]["generator"].startswith("trimesh ")
    # another patient's flow range is another file
    assert _design(30)["design_file"]["sha256"] != d["design_file"]["sha256"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "blue"}, "design_envelope.colour"),
        ({"wall_mm": -1}, "design_envelope.wall_mm"),
        ({"discharge_coefficient": 1.2}, "design_envelope.discharge_coefficient"),
        ({"polymer": "ABS"}, "design_envelope.polymer"),
        ({"qmax_ml_s": {"min": 50, "max": 10}}, "design_envelope.qmax_ml_s.min"),
        ({"sizes": {"M": {"column_height_mm": 5, "inner_diameter_mm": 40}}},
         "design_envelope.sizes.M.column_height_mm"),
    ],
)  # fmt: skip
def test_a_bad_envelope_is_refused_naming_the_key(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        FAMILY.check_envelope({**ENVELOPE, **change})
    assert caught.value.field == field
    missing = dict(ENVELOPE)
    del missing["max_units"]
    with pytest.raises(ValidationFailed) as caught:
        FAMILY.check_envelope(missing)
    assert caught.value.field == "design_envelope.max_units"


@pytest.mark.parametrize(
    ("qmax", "size", "units", "field"),
    [(9.9, "M", 1, "qmax_ml_s"), (50.1, "M", 1, "qmax_ml_s"), (25, "L", 1, "size"),
     (25, "M", 5, "units")],
)  # fmt: skip
def test_outside_the_envelope_is_refused(qmax: float, size: str, units: int, field: str) -> None:
    with pytest.raises(Refused) as caught:
        _design(qmax, size, units)
    assert (caught.value.field, caught.value.code) == (field, "outside_envelope")


def test_an_orifice_too_small_to_print_is_refused() -> None:
    # 10 mL/s at H = 80 mm: A = 10e-6 / 0.7641 = 13.087 mm², d = 4.08 mm; with the printable
    # minimum raised to 4.5 mm it cannot be made
    env = Envelope.from_dict({**ENVELOPE, "orifice_mm": {"min": 4.5, "max": 10}})
    with pytest.raises(Refused, match=r"4\.08 mm, outside the printable"):
        design_flowmeter(qmax_ml_s=10, size="S", units=1, envelope=env)


def _ticket(design: dict[str, Any], *, approved: bool = False, machine: str = "fdm-1") -> Any:
    payload: dict[str, Any] = {
        "ticket_id": "T-1",
        "job_id": "job_1",
        "machine_id": machine,
        "expires_at": (START + timedelta(days=1)).isoformat(),
        "design": design,
    }
    if approved:
        payload["build_approval"] = {"site_kind": "home", "role": "qp", "by": "usr_rp"}
    return SIGNER.sign(payload)


def _printer(*, supervised: bool = False, faults: tuple[Fault, ...] = ()) -> SimulatedFdmPrinter:
    return SimulatedFdmPrinter(
        "fdm-1",
        firmware="Marlin 2.1.2",
        control_public_key_pem=SIGNER.public_key_pem,
        clock=ManualClock(START),
        supervised=supervised,
        seed=16,
        faults=faults,
    )


def test_the_twin_prints_the_devices_and_the_coupon() -> None:
    design = _design(units=2)
    result = _printer().execute(_ticket(design))
    kit = FAMILY.machines
    doc = kit.check_measurements(kit.measurement_document(result))
    assert kit.units_made(doc) == 2 and doc["layers"] == 660
    assert doc["design_sha256"] == design["design_file"]["sha256"]
    assert coupon_check(doc["coupon"], design).passed is True
    assert leak_check(doc["devices"], 0.0).passed is True
    assert flow_check(doc["devices"], 5.0).passed is True
    metrics = {r.metric for r in result.telemetry}
    assert metrics == {"nozzle_temperature_c", "bed_temperature_c", "extrusion_rate_mm3_s", "layer"}
    # the run takes the printed volume's time on the injected clock
    assert (result.finished_at - result.started_at).total_seconds() == pytest.approx(
        print_time_s(design)
    )


def test_the_twin_refuses_an_unsigned_or_unapproved_build_and_a_foreign_file() -> None:
    design = _design()
    forged = _ticket(design)
    forged.payload["design"] = {**design, "units": 2}  # altered after signing
    with pytest.raises(TicketRejected):
        _printer().execute(forged)
    with pytest.raises(TicketRejected) as caught:
        _printer(supervised=True).execute(_ticket(design))
    assert caught.value.code == "build_not_approved"
    assert _printer(supervised=True).execute(_ticket(design, approved=True)).units
    # a design whose file is not the one its hash names (the control site signed the hash)
    other = {**design, "orifice_diameter_mm": 6.5}
    with pytest.raises(TicketRejected) as caught:
        _printer().execute(_ticket(other))
    assert caught.value.code == "design_file_mismatch"


def test_an_under_extruding_printer_fails_the_coupon() -> None:
    design = _design()
    result = _printer(faults=(Fault("under_extrusion", 0.3),)).execute(_ticket(design))
    doc = FAMILY.machines.measurement_document(result)
    check = coupon_check(doc["coupon"], design)
    assert check.passed is False and "orifice_diameter_mm" in check.detail
    # the wall thinned to 2.0 × 0.7 = 1.4 mm (±0.03): outside 2.0 ± 0.15
    assert doc["coupon"]["wall_mm"] == pytest.approx(1.4, abs=0.15)


def test_the_release_tests_at_their_limits() -> None:
    design = _design()
    nominal = design["critical_dimensions"]
    at_limit = {k: v["nominal"] + v["tolerance"] for k, v in nominal.items()}
    assert coupon_check(at_limit, design).passed is True
    beyond = {**at_limit, "wall_mm": nominal["wall_mm"]["nominal"] - 0.151}
    assert coupon_check(beyond, design).passed is False
    assert coupon_check(None, design).passed is None
    devices = [
        {"leak_ml_min": 0.0, "flow_error_pct": 5.0},
        {"leak_ml_min": 0.0, "flow_error_pct": -5.01},
    ]
    assert flow_check(devices[:1], 5.0).passed is True
    assert flow_check(devices, 5.0).passed is False
    assert leak_check([{"leak_ml_min": 0.3, "flow_error_pct": 0}], 0.0).passed is False
    evidence = ReleaseEvidence(
        measurements={"devices": devices[:1], "coupon": at_limit, "layers": 660},
        design=design,
        material={},
        specs={"flow_check": {"max_error_pct": 4.0}},
    )
    results = FAMILY.release.evaluate(["coupon_metrology", "flow_check"], evidence, {})
    assert [(c.name, c.passed) for c in results.checks] == [
        ("coupon_metrology", True), ("flow_check", False),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ({"polymer": "ABS", "filament_diameter_mm": 1.75, "biocompatibility": "c"},
         "attributes.polymer"),
        ({"polymer": "PETG", "filament_diameter_mm": 2.0, "biocompatibility": "c"},
         "attributes.filament_diameter_mm"),
        ({"polymer": "PETG", "filament_diameter_mm": 1.75}, "attributes.biocompatibility"),
        ({"polymer": "PETG", "filament_diameter_mm": 1.75, "biocompatibility": "c", "x": 1},
         "attributes.x"),
    ],
)  # fmt: skip
def test_a_filament_lot_names_its_bad_attribute(attributes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        FAMILY.release.lot_attributes(attributes)
    assert caught.value.field == field


def test_the_udi_with_its_date_of_manufacture() -> None:
    # GS1 General Specifications §7.9.1, check digit of 0950600013435-: weights 3,1,3,... from
    # the left for 13 digits: 0+9+15+0+18+0+0+0+3+3+12+3+15 = 78; 80 - 78 = 2
    assert validate_gtin("09506000134352") == "09506000134352"
    with pytest.raises(ValidationFailed):
        FAMILY.labels.product_code("09506000134353")
    ident = make_identifier("09506000134352", "SN0001", "UF2612A", date(2027, 12, 7))
    made = date(2026, 12, 7)
    assert udi_element_string(ident, made) == (
        "(01)09506000134352(11)261207(17)271207(10)UF2612A(21)SN0001"
    )
    # the DataMatrix data reads back through GS1's own AI table (biip): FNC1 (GS) after the
    # variable-length lot, none after the fixed-length dates
    data = udi_datamatrix_data(ident, made)
    assert data == "0109506000134352112612071727120710UF2612A\x1d21SN0001"
    assert dict(scan_elements(data)) == {
        "01": "09506000134352", "11": "261207", "17": "271207", "10": "UF2612A", "21": "SN0001",
    }  # fmt: skip
    assert FAMILY.labels.pack_contents(1) == "1 flowmeter"
    assert FAMILY.labels.pack_contents(3) == "3 flowmeters"


def test_the_simulation_model() -> None:
    model = FAMILY.simulation
    assert isinstance(model, SimulationKit)
    d = model.design(ENVELOPE, {"qmax_ml_s": 25, "size": "M"})
    assert d == _design()
    # 660 layers at 5e-5 each: 1 - (1 - 5e-5)^660 = 1 - exp(660 ln 0.99995) = 1 - exp(-0.0330008)
    # = 0.0324622
    assert model.failure_probability(d) == pytest.approx(0.0324622, abs=1e-7)
    with pytest.raises(ValidationFailed) as caught:
        model.design(ENVELOPE, {"qmax_ml_s": 25})
    assert caught.value.field == "size"
    assert math.isclose(FAMILY.duration_s(d), 5962.9)


def test_a_live_order_in_the_family_s_words() -> None:
    from nearfab.orders import Order

    d = _design(units=2)
    order = Order(dose_value=1.0, dose_unit="{device}", units=2, design=d)
    assert FAMILY.simulation.prescription_of(order) == {"qmax_ml_s": 25.0, "size": "M", "units": 2}
    assert FAMILY.simulation.prescription_of(Order(dose_value=5, dose_unit="mg", units=1)) is None
