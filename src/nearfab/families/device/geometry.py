"""The flowmeter's parametric model: from the patient's flow range and a size option to the
dimensions, the graduations and the design file (a binary STL made by trimesh, booleans by
manifold3d), inside the master file's validated envelope.

The flowmeter is a graduated column with a calibrated orifice in its base (the principle of
disposable gravimetric-free uroflowmeters): urine poured in at a steady flow q rises until the
orifice lets out as much as comes in, Torricelli's law with a discharge coefficient Cd:

    q = Cd · (π d² / 4) · √(2 g h)

so the orifice diameter that puts the patient's maximum flow Qmax at the column's full-scale
height H is  d = √(4 Qmax / (π Cd √(2 g H))), and the mark for a flow q sits at h = H (q/Qmax)².
A diameter error Δd reads as a flow error of about 2 Δd/d, so the orifice's tolerance is half
the flow accuracy the master file claims: t = d · accuracy / 2.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nearfab.common.errors import Refused, ValidationFailed

G = 9.80665  # standard acceleration of gravity, m/s² (3rd CGPM, 1901)
MODEL_VERSION = "flowmeter-model 1"  # the parametric model; a change makes new design files
HEADROOM_MM = 10.0  # column above the full-scale mark (no overflow at Qmax)
BASE_MM = 2.0  # thickness of the base plate that carries the orifice
COUPON_HEIGHT_MM = 10.0  # the test coupon: the base with its orifice and 10 mm of column
SECTIONS = 128  # facets of a circle in the mesh (chord error < 0.03 % of the radius)
GAP_MM = 10.0  # between parts on the build plate
# tolerances of the coupon's other critical dimensions (FDM with a 0.4 mm nozzle, ISO 2768-m
# gives ±0.2 mm for 30-120 mm; the wall is a few extrusion widths: ±0.15 mm)
INNER_DIAMETER_TOL_MM = 0.2
WALL_TOL_MM = 0.15
POLYMERS = {"PETG": 1.27, "PLA": 1.24}  # density, g/cm³ (suppliers' data sheets)
PRINT_RATE_MM3_S = 8.0  # volumetric rate of a 0.4 mm nozzle at 0.2 mm layers
HEAT_UP_S = 600.0  # nozzle and bed to temperature, bed levelling
WASTE_FACTOR = 1.10  # purge line, skirt
LAYER_MM = 0.2

ENVELOPE_KEYS = (
    "qmax_ml_s", "sizes", "orifice_mm", "wall_mm", "discharge_coefficient",
    "flow_accuracy_pct", "polymer", "max_units",
)  # fmt: skip
SIZE_KEYS = ("column_height_mm", "inner_diameter_mm")


def _number(value: Any, field: str, *, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(f"{field} must be a number, not {value!r}", field=field)
    if value <= low:
        raise ValidationFailed(f"{field} must be above {low:g}, not {value!r}", field=field)
    return float(value)


def _range(value: Any, field: str) -> tuple[float, float]:
    if not isinstance(value, Mapping) or set(value) != {"min", "max"}:
        raise ValidationFailed(f"{field} must be {{min, max}}", field=field)
    low = _number(value["min"], f"{field}.min")
    high = _number(value["max"], f"{field}.max")
    if low > high:
        raise ValidationFailed(f"{field}.min is above {field}.max", field=f"{field}.min")
    return low, high


@dataclass(frozen=True)
class Envelope:
    """A master file's validated design envelope for the flowmeter."""

    qmax: tuple[float, float]  # mL/s
    sizes: dict[str, tuple[float, float]]  # option -> (column height, inner diameter), mm
    orifice: tuple[float, float]  # printable orifice diameters, mm
    wall_mm: float
    cd: float
    accuracy_pct: float
    polymer: str
    max_units: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Envelope:
        """ValidationFailed naming `design_envelope.<key>` for a missing, unknown or bad key."""
        where = "design_envelope"
        if not isinstance(data, Mapping):
            raise ValidationFailed("the design envelope must be an object", field=where)
        for key in data:
            if key not in ENVELOPE_KEYS:
                raise ValidationFailed(
                    f"{where} has no key {key!r} (keys: {', '.join(ENVELOPE_KEYS)})",
                    field=f"{where}.{key}",
                )
        for key in ENVELOPE_KEYS:
            if key not in data:
                raise ValidationFailed(f"{where}.{key} is required", field=f"{where}.{key}")
        sizes = data["sizes"]
        if not isinstance(sizes, Mapping) or not sizes:
            raise ValidationFailed(
                f"{where}.sizes must name at least one size", field=f"{where}.sizes"
            )
        parsed: dict[str, tuple[float, float]] = {}
        for name, size in sizes.items():
            at = f"{where}.sizes.{name}"
            if not isinstance(size, Mapping) or set(size) != set(SIZE_KEYS):
                raise ValidationFailed(f"{at} must be {{{', '.join(SIZE_KEYS)}}}", field=at)
            height = _number(size["column_height_mm"], f"{at}.column_height_mm", low=HEADROOM_MM)
            parsed[str(name)] = (
                height,
                _number(size["inner_diameter_mm"], f"{at}.inner_diameter_mm"),
            )
        cd = _number(data["discharge_coefficient"], f"{where}.discharge_coefficient")
        if cd > 1:
            raise ValidationFailed(
                f"{where}.discharge_coefficient is at most 1",
                field=f"{where}.discharge_coefficient",
            )
        polymer = data["polymer"]
        if polymer not in POLYMERS:
            raise ValidationFailed(
                f"{where}.polymer must be one of {', '.join(POLYMERS)}", field=f"{where}.polymer"
            )
        units = data["max_units"]
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValidationFailed(
                f"{where}.max_units must be a whole number ≥ 1", field=f"{where}.max_units"
            )
        return cls(
            qmax=_range(data["qmax_ml_s"], f"{where}.qmax_ml_s"),
            sizes=parsed,
            orifice=_range(data["orifice_mm"], f"{where}.orifice_mm"),
            wall_mm=_number(data["wall_mm"], f"{where}.wall_mm"),
            cd=cd,
            accuracy_pct=_number(data["flow_accuracy_pct"], f"{where}.flow_accuracy_pct"),
            polymer=str(polymer),
            max_units=units,
        )


def orifice_diameter_mm(qmax_ml_s: float, scale_height_mm: float, cd: float) -> float:
    """d = √(4 Qmax / (π Cd √(2 g H))), in mm (SI inside)."""
    q = qmax_ml_s * 1e-6  # m³/s
    area = q / (cd * math.sqrt(2 * G * scale_height_mm / 1000.0))  # m²
    return math.sqrt(4 * area / math.pi) * 1000.0


def check_qmax(qmax_ml_s: Any, envelope: Envelope) -> float:
    """The patient's maximum flow within the envelope, or Refused (outside_envelope)."""
    qmax = _number(qmax_ml_s, "qmax_ml_s")
    if not envelope.qmax[0] <= qmax <= envelope.qmax[1]:
        raise Refused(
            f"maximum flow {qmax:g} mL/s is outside the validated envelope "
            f"({envelope.qmax[0]:g}-{envelope.qmax[1]:g} mL/s)",
            field="qmax_ml_s",
            code="outside_envelope",
        )
    return qmax


def check_size(size: Any, envelope: Envelope) -> str:
    """One of the envelope's size options, or Refused (outside_envelope)."""
    if size not in envelope.sizes:
        raise Refused(
            f"size {size!r} is outside the validated envelope (sizes: {', '.join(envelope.sizes)})",
            field="size",
            code="outside_envelope",
        )
    return str(size)


def design_flowmeter(
    *, qmax_ml_s: Any, size: Any, units: Any, envelope: Envelope
) -> dict[str, Any]:
    """The flowmeter for one patient, or Refused (code outside_envelope) naming the field."""
    qmax = check_qmax(qmax_ml_s, envelope)
    check_size(size, envelope)
    if (
        isinstance(units, bool)
        or not isinstance(units, int)
        or not 1 <= units <= envelope.max_units
    ):
        raise Refused(
            f"{units!r} flowmeters cannot be made in one build (1-{envelope.max_units})",
            field="units",
            code="outside_envelope",
        )
    height, inner = envelope.sizes[size]
    scale = height - HEADROOM_MM
    d = orifice_diameter_mm(qmax, scale, envelope.cd)
    if not envelope.orifice[0] <= d <= envelope.orifice[1]:
        raise Refused(
            f"the orifice for {qmax:g} mL/s in size {size} would be {d:.2f} mm, outside the "
            f"printable {envelope.orifice[0]:g}-{envelope.orifice[1]:g} mm",
            field="qmax_ml_s",
            code="outside_envelope",
        )
    step = 5.0
    marks = [step * k for k in range(1, int(qmax // step) + 1)]
    if not marks or marks[-1] < qmax:
        marks.append(qmax)
    design: dict[str, Any] = {
        "model": MODEL_VERSION,
        "qmax_ml_s": qmax,
        "size": size,
        "units": units,
        "column_height_mm": height,
        "inner_diameter_mm": inner,
        "wall_mm": envelope.wall_mm,
        "base_mm": BASE_MM,
        "scale_height_mm": scale,
        "discharge_coefficient": envelope.cd,
        "flow_accuracy_pct": envelope.accuracy_pct,
        "orifice_diameter_mm": round(d, 4),
        "polymer": envelope.polymer,
        "graduations": [
            {"flow_ml_s": q, "height_mm": round(scale * (q / qmax) ** 2, 2)} for q in marks
        ],
        "critical_dimensions": {
            "orifice_diameter_mm": {
                "nominal": round(d, 4),
                "tolerance": round(d * envelope.accuracy_pct / 200.0, 4),
            },
            "inner_diameter_mm": {"nominal": inner, "tolerance": INNER_DIAMETER_TOL_MM},
            "wall_mm": {"nominal": envelope.wall_mm, "tolerance": WALL_TOL_MM},
        },
    }
    body = device_mesh(design)
    coupon = coupon_mesh(design)
    density = POLYMERS[envelope.polymer] / 1000.0  # g/mm³
    design["device_volume_mm3"] = round(float(body.volume), 1)
    design["coupon_volume_mm3"] = round(float(coupon.volume), 1)
    design["mass_g"] = round(float(body.volume) * density, 2)
    data = design_file(design)
    design["design_file"] = {
        "format": "stl",
        "name": f"flowmeter-{size}-{qmax:g}mls-x{units}.stl",
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "generator": generator(),
        "model": MODEL_VERSION,
    }
    return design


def generator() -> str:
    """The CAD libraries that made the file (their versions are part of what the hash binds)."""
    from importlib.metadata import version

    return f"trimesh {version('trimesh')}, manifold3d {version('manifold3d')}"


def _tube(inner_r: float, outer_r: float, z0: float, z1: float) -> Any:
    # trimesh is imported when a design is made, not when the platform starts
    import trimesh

    ring = trimesh.creation.annulus(r_min=inner_r, r_max=outer_r, height=z1 - z0, sections=SECTIONS)
    ring.apply_translation((0.0, 0.0, (z0 + z1) / 2.0))
    return ring


def _body(design: Mapping[str, Any], column_mm: float) -> Any:
    """Base plate with the orifice, united (manifold3d) with the column wall above it."""
    import trimesh

    inner = float(design["inner_diameter_mm"]) / 2.0
    outer = inner + float(design["wall_mm"])
    base = float(design["base_mm"])
    plate = _tube(float(design["orifice_diameter_mm"]) / 2.0, outer, 0.0, base)
    # the wall reaches 0.5 mm into the plate: one solid, not two touching ones
    wall = _tube(inner, outer, base - 0.5, base + column_mm)
    return trimesh.boolean.union([plate, wall], engine="manifold")


def device_mesh(design: Mapping[str, Any]) -> Any:
    """One flowmeter as a watertight mesh (mm)."""
    return _body(design, float(design["column_height_mm"]))


def coupon_mesh(design: Mapping[str, Any]) -> Any:
    """The test coupon: the base with its orifice and the first 10 mm of the column."""
    return _body(design, COUPON_HEIGHT_MM)


def design_file(design: Mapping[str, Any]) -> bytes:
    """The build plate as a binary STL: `units` flowmeters and the test coupon in a row. The
    same design always gives the same bytes (the hash the job ticket signs)."""
    import trimesh

    pitch = float(design["inner_diameter_mm"]) + 2 * float(design["wall_mm"]) + GAP_MM
    parts = []
    for index in range(int(design["units"])):
        part = device_mesh(design)
        part.apply_translation((index * pitch, 0.0, 0.0))
        parts.append(part)
    coupon = coupon_mesh(design)
    coupon.apply_translation((int(design["units"]) * pitch, 0.0, 0.0))
    parts.append(coupon)
    plate: Any = trimesh.util.concatenate(parts)
    return bytes(trimesh.exchange.stl.export_stl(plate))


def check_design_file(design: Mapping[str, Any], data: bytes) -> None:
    """ValidationFailed unless `data` is the design file the design (and its ticket) names."""
    named = (design.get("design_file") or {}).get("sha256")
    found = hashlib.sha256(data).hexdigest()
    if named != found:
        raise ValidationFailed(
            f"design file SHA-256 {found[:16]}… is not the signed {str(named)[:16]}…",
            field="design.design_file.sha256",
        )


def _printed_mm3(design: Mapping[str, Any]) -> float:
    """The build's printed volume: every device and the coupon."""
    devices = float(design.get("device_volume_mm3", 0)) * int(design.get("units", 0))
    return devices + float(design.get("coupon_volume_mm3", 0))


def material_g(design: Mapping[str, Any]) -> float:
    """Filament drawn: the printed volume × the polymer's density, + 10 % purge and skirt."""
    volume = _printed_mm3(design)
    density = POLYMERS.get(str(design.get("polymer")), 1.27) / 1000.0
    return round(volume * density * WASTE_FACTOR, 2)


def print_time_s(design: Mapping[str, Any]) -> float:
    """Heat-up and levelling, then the printed volume at the nozzle's volumetric rate."""
    volume = _printed_mm3(design)
    return round(HEAT_UP_S + volume / PRINT_RATE_MM3_S, 1)
