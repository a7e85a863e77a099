"""device's `machines` part: implements nearfab.production.kit.MachineKit.

FDM printers: `fdm_printer` at a hospital pharmacy, `fdm_printer_supervised` at a patient's home
(a printer that runs only builds the manufacturer's control site approved). The twin verifies
the signed ticket as a real printer must, checks the design file it is about to print against
the SHA-256 the ticket signs (it regenerates the STL from the ticket's design), refuses a build
nobody approved where approval is required, prints the devices and the test coupon on the
injected clock with telemetry (nozzle and bed temperature, extrusion rate, layer), and reports
the in-line checks: each device's leak and flow check, the coupon's critical dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from nearfab.common.errors import ValidationFailed
from nearfab.families.device.geometry import (
    LAYER_MM,
    check_design_file,
    design_file,
    print_time_s,
)
from nearfab.families.twin import FamilyMachines, Twin, TwinRun
from nearfab.network import Machine
from nearfab.production.kit import (
    MeasurementSeries,
    MetricSpec,
    TwinSetup,
    check_document_keys,
    check_fault_kind,
    metric_specs,
)
from nearfab.production.machines import (
    Fault,
    RunResult,
    TelemetryReading,
    UnitMeasurement,
    admit_ticket,
    ticket_setpoints,
)
from nearfab.production.tickets import SignedTicket, TicketRejected

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from nearfab.families.twin import TwinArguments

FAMILY = "device"
FDM_PRINTER = "fdm_printer"
SUPERVISED_PRINTER = "fdm_printer_supervised"
# the site kinds whose builds the control site approves one by one, and by whom
SUPERVISED_SITE_KINDS = frozenset({"home"})
# the manufacturer's responsible person (UK MDR / EU MDR Art. 15) at the control site approves
# each home build with an e-signature, as it signs the release (docs/device.md)
APPROVER_ROLE = "responsible_person"

FaultKind = Literal["under_extrusion", "temperature_drift", "layer_shift"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

NOZZLE = "nozzle_temperature_c"
BED = "bed_temperature_c"
EXTRUSION = "extrusion_rate_mm3_s"
LAYER = "layer"
# PETG (the envelope's polymer): supplier's print window
DEFAULT_PROCESS_PARAMETERS: dict[str, dict[str, Any]] = {
    NOZZLE: {"target": 240.0, "low": 235.0, "high": 245.0, "unit": "°C"},
    BED: {"target": 80.0, "low": 77.0, "high": 83.0, "unit": "°C"},
    EXTRUSION: {"target": 8.0, "low": 6.0, "high": 10.0, "unit": "mm³/s"},
}
LAYER_SPEC = MetricSpec(LAYER, "layer", 0.0, 0.0, 10_000.0, cpp=False)

# unit measurements (UnitMeasurement.values) and the batch record's document
LEAK = "leak_ml_min"  # leak at the test head (water column of the full scale), mL/min
FLOW_ERROR = "flow_error_pct"  # reading at a reference flow vs the rig's meter, %
COUPON_KEYS = ("orifice_diameter_mm", "inner_diameter_mm", "wall_mm")
DOCUMENT_KEYS = ("devices", "coupon", "layers", "design_sha256")

# a healthy print: SD of the printed dimensions, and of the flow rig's reading
SD_MM = {"orifice_diameter_mm": 0.03, "inner_diameter_mm": 0.05, "wall_mm": 0.03}
FLOW_RIG_SD_PCT = 0.5
MAX_SAMPLES = 200  # telemetry samples kept per run
FILE_EVENT = "design file sha256"  # the event that says which file the printer verified


def check_fault(fault: Fault) -> None:
    """under_extrusion: fraction of flow lost (walls thinner, holes wider); temperature_drift:
    °C of nozzle temperature gained by the end of the run; layer_shift: mm of shift (the
    column leaks, its bore is off)."""
    check_fault_kind(FAMILY, FAULT_KINDS, fault)
    if fault.kind == "under_extrusion" and fault.severity >= 1:
        raise ValidationFailed(
            "under_extrusion severity is the fraction of flow lost; it must be below 1",
            field="fault.severity",
        )


def check_approval(payload: Mapping[str, Any], supervised: bool) -> None:
    """A supervised printer runs a build only with the control site's approval in its signed
    ticket (TicketRejected code build_not_approved)."""
    approval = payload.get("build_approval")
    if supervised and (not isinstance(approval, Mapping) or not approval.get("by")):
        raise TicketRejected(
            "this printer runs only builds approved by the manufacturer's control site; the "
            "ticket carries no approval",
            field="build_approval",
            code="build_not_approved",
        )


def ticket_design(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    design = payload.get("design")
    if not isinstance(design, Mapping) or not isinstance(design.get("design_file"), Mapping):
        raise TicketRejected("ticket has no flowmeter design file", field="design.design_file")
    units = design.get("units")
    if isinstance(units, bool) or not isinstance(units, int) or units < 1:
        raise TicketRejected(
            f"ticket design.units must be ≥ 1, not {units!r}", field="design.units"
        )
    return design


def admit_build(
    ticket: SignedTicket,
    public_key_pem: str,
    *,
    machine_id: str,
    now: datetime,
    executed: set[str],
    supervised: bool,
) -> tuple[Mapping[str, Any], bytes]:
    """What every printer of the family checks before it prints (twin and real adapters alike):
    the ticket (signature, machine, expiry, replay), the control site's approval where the
    printer is supervised, and the design file, regenerated from the ticket's design, against
    the SHA-256 the ticket signs. Returns the design and the file's bytes; the ticket counts as
    run from here on."""
    admit_ticket(ticket, public_key_pem, machine_id=machine_id, now=now, executed=executed)
    check_approval(ticket.payload, supervised)
    design = ticket_design(ticket.payload)
    data = design_file(design)
    try:
        check_design_file(design, data)
    except ValidationFailed as exc:
        raise TicketRejected(exc.message, field=exc.field, code="design_file_mismatch") from None
    executed.add(ticket.ticket_hash)
    return design, data


class SimulatedFdmPrinter(Twin):
    """A digital twin of an FDM printer (and of its site's leak/flow rig and coupon gauge)."""

    fault_check = staticmethod(check_fault)

    def __init__(
        self,
        machine_id: str,
        *,
        supervised: bool = False,
        sample_every_s: float = 10.0,
        **twin: Unpack[TwinArguments],
    ) -> None:
        super().__init__(machine_id, **twin)
        self.supervised = supervised
        self.sample_every_s = float(sample_every_s)

    def _severity(self, kind: str) -> float:
        return sum(f.severity for f in self._faults if f.kind == kind)

    def execute(self, ticket: SignedTicket) -> RunResult:
        clock = self.clock
        design, _ = admit_build(
            ticket, self._public_key_pem, machine_id=self.machine_id, now=clock.now(),
            executed=self._executed, supervised=self.supervised,
        )  # fmt: skip
        setpoints = ticket_setpoints(ticket.payload, DEFAULT_PROCESS_PARAMETERS)
        units = int(design["units"])
        duration = print_time_s(design)
        height = float(design["column_height_mm"]) + float(design["base_mm"])
        layers = math.ceil(height / LAYER_MM)
        under = self._severity("under_extrusion")
        drift = self._severity("temperature_drift")
        shift = self._severity("layer_shift")
        events = ["ticket verified", f"{FILE_EVENT} {design['design_file']['sha256']} verified"]
        if ticket.payload.get("build_approval"):
            events.append(f"build approved by {ticket.payload['build_approval'].get('by')}")
        log = TwinRun(self, ticket, events)
        rng = self._rng
        step = max(self.sample_every_s, duration / MAX_SAMPLES)
        telemetry: list[TelemetryReading] = []
        for elapsed in self.ticks(step, duration):
            at, progress = clock.now(), elapsed / duration
            offsets = {
                NOZZLE: drift * progress,
                BED: 0.0,
                EXTRUSION: -under * setpoints[EXTRUSION].target,
            }
            batch = [
                TelemetryReading(
                    at,
                    metric,
                    round(
                        sp.target + offsets[metric] + sp.noise_sd * float(rng.standard_normal()), 3
                    ),
                    sp.unit,
                )
                for metric, sp in setpoints.items()
            ]
            batch.append(TelemetryReading(at, LAYER, float(math.ceil(progress * layers)), "layer"))
            telemetry.extend(batch)
            log.stream(batch)
        # the coupon, printed with the devices, gauged at the site
        nominal = {k: float(design["critical_dimensions"][k]["nominal"]) for k in COUPON_KEYS}
        widen = under * 0.9 + 0.02 * drift  # a starved or over-hot line leaves holes wider
        coupon = {
            "orifice_diameter_mm": nominal["orifice_diameter_mm"] + widen,
            "inner_diameter_mm": nominal["inner_diameter_mm"] + widen + shift,
            "wall_mm": nominal["wall_mm"] * (1 - under),
        }
        coupon = {k: round(v + float(rng.normal(0.0, SD_MM[k])), 3) for k, v in coupon.items()}
        made: list[UnitMeasurement] = []
        for index in range(units):
            orifice = coupon["orifice_diameter_mm"] + float(
                rng.normal(0.0, SD_MM["orifice_diameter_mm"])
            )
            # the marks assume the nominal orifice: a wider one lets more out at the same level
            error = ((orifice / nominal["orifice_diameter_mm"]) ** 2 - 1) * 100
            error += float(rng.normal(0.0, FLOW_RIG_SD_PCT))
            leak = round(1.5 * shift, 3)
            made.append(
                UnitMeasurement(index, clock.now(), {LEAK: leak, FLOW_ERROR: round(error, 2)})
            )
        made.append(UnitMeasurement(units, clock.now(), coupon))
        return log.finish(
            made,
            telemetry,
            f"print finished: {units} flowmeter(s) and the test coupon, {layers} layers",
        )


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(f"{field} must be a number, not {value!r}", field=field)
    return float(value)


def check_document(document: Any) -> dict[str, Any]:
    """The batch record's measurement document of a build, validated (ValidationFailed naming
    `measurements.<key>`)."""
    document = check_document_keys(document, DOCUMENT_KEYS)
    devices = document.get("devices")
    if not isinstance(devices, list):
        raise ValidationFailed("measurements.devices must be a list", field="measurements.devices")
    clean_devices: list[dict[str, float]] = []
    for i, device in enumerate(devices):
        where = f"measurements.devices[{i}]"
        if not isinstance(device, Mapping) or set(device) not in ({LEAK, FLOW_ERROR}, set()):
            raise ValidationFailed(
                f"{where} must be {{{LEAK}, {FLOW_ERROR}}}, or {{}} when not tested", field=where
            )
        if not device:
            clean_devices.append({})
            continue
        leak = _number(device[LEAK], f"{where}.{LEAK}")
        if leak < 0:
            raise ValidationFailed(f"{where}.{LEAK} cannot be negative", field=f"{where}.{LEAK}")
        clean_devices.append(
            {LEAK: leak, FLOW_ERROR: _number(device[FLOW_ERROR], f"{where}.{FLOW_ERROR}")}
        )
    coupon = document.get("coupon")
    clean_coupon: dict[str, float] | None = None
    if coupon is not None:
        if not isinstance(coupon, Mapping) or set(coupon) - set(COUPON_KEYS):
            raise ValidationFailed(
                f"measurements.coupon takes {', '.join(COUPON_KEYS)}", field="measurements.coupon"
            )
        clean_coupon = {}
        for key, value in coupon.items():
            number = _number(value, f"measurements.coupon.{key}")
            if number <= 0:
                raise ValidationFailed(
                    f"measurements.coupon.{key} must be positive",
                    field=f"measurements.coupon.{key}",
                )
            clean_coupon[key] = number
    layers = document.get("layers", 0)
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
        raise ValidationFailed(
            "measurements.layers must be a whole number", field="measurements.layers"
        )
    sha = document.get("design_sha256", "")
    if not isinstance(sha, str):
        raise ValidationFailed(
            "measurements.design_sha256 must be text", field="measurements.design_sha256"
        )
    return {
        "devices": clean_devices,
        "coupon": clean_coupon,
        "layers": layers,
        "design_sha256": sha,
    }


class DeviceMachines(FamilyMachines):
    """FDM printers: twins, metrics, faults, and the build's measurement document."""

    family = FAMILY
    machine_types: tuple[str, ...] = (FDM_PRINTER, SUPERVISED_PRINTER)
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_check = staticmethod(check_fault)
    # production.kit.record_title: the core's batch record, in ISO 13485's words
    record_title = "Device history record"

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return {**metric_specs(DEFAULT_PROCESS_PARAMETERS), LAYER: LAYER_SPEC}

    def build_approver(self, site_kind: str) -> str | None:
        """production.kit.build_approver: a build at a patient's home is approved, one by one,
        by the manufacturer's responsible person at the control site (an e-signature that signs
        its ticket), who also signs the device's release."""
        return APPROVER_ROLE if site_kind in SUPERVISED_SITE_KINDS else None

    def twin(self, machine: Machine, setup: TwinSetup) -> SimulatedFdmPrinter:
        return SimulatedFdmPrinter(
            machine.id,
            **self.twin_arguments(machine, setup),
            supervised=machine.machine_type == SUPERVISED_PRINTER,
            sample_every_s=setup.sample_every_s,
        )

    # connect: a real printer (OctoPrint, octoprint.py; Moonraker, moonraker.py) is registered
    # by its site's gateway

    def design_summary(self, design: Mapping[str, Any]) -> str:
        if not design:
            return ""
        return (
            f"{design.get('units')} × urine flowmeter size {design.get('size')}, 0-"
            f"{float(design.get('qmax_ml_s', 0)):g} mL/s, orifice "
            f"{float(design.get('orifice_diameter_mm', 0)):.2f} mm, with test coupon"
        )

    def measurement_document(self, outcome: RunResult) -> dict[str, Any]:
        # a device without in-line results (a real printer reports none) is kept, untested
        devices = [
            {k: float(v) for k, v in u.values.items()}
            for u in outcome.units
            if "orifice_diameter_mm" not in u.values
        ]
        coupons = [dict(u.values) for u in outcome.units if "orifice_diameter_mm" in u.values]
        layers = [r.value for r in outcome.telemetry if r.metric == LAYER]
        sha = next((e.split()[3] for e in outcome.events if e.startswith(FILE_EVENT + " ")), "")
        return {
            "devices": devices,
            "coupon": coupons[0] if coupons else None,
            "layers": int(max(layers)) if layers else 0,
            "design_sha256": sha,
        }

    def check_measurements(self, document: Any) -> dict[str, Any]:
        return check_document(document)

    def units_made(self, document: Mapping[str, Any]) -> int:
        return len(document.get("devices") or [])

    def measurement_series(
        self,
        document: Mapping[str, Any] | None,
        design: Mapping[str, Any],
        cqa_specs: Mapping[str, Any],
    ) -> MeasurementSeries | None:
        devices = [d for d in (document or {}).get("devices") or [] if FLOW_ERROR in d]
        if not devices:
            return None
        accuracy = float(design.get("flow_accuracy_pct", 5.0))
        # each device's reading at the reference flow, in % of that flow (100 = exact)
        return MeasurementSeries(
            values=tuple(100.0 + float(d[FLOW_ERROR]) for d in devices),
            target=100.0,
            tolerance_pct=accuracy,
            label="flow reading",
            unit="% of reference",
            specification="flow accuracy",
        )
