"""Pure rules of the solid-dose (3D-printed tablet) family.

A prescribed dose becomes a tablet design: the printing material holds the drug at a fixed mass
fraction (drug loading), so the tablet's mass is dose / loading and its volume mass / density.
The design is a cylinder of one of the validated diameters, the smallest that gives a height
inside the validated window and is small enough for the patient group. Anything outside the
master file's design envelope is refused, naming the limit and the value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, get_args

from nearfab.common.envelope import ENVELOPE as _ENV
from nearfab.common.envelope import min_max, positive_int, required
from nearfab.common.errors import Refused, ValidationFailed

PatientGroup = Literal["neonate", "infant", "child", "adolescent", "adult"]
PATIENT_GROUPS: tuple[str, ...] = get_args(PatientGroup)


def _years_between(birth: date, on: date) -> int:
    """Completed years of age on `on`."""
    before_birthday = (on.month, on.day) < (birth.month, birth.day)
    return on.year - birth.year - int(before_birthday)


def patient_group(birth_date: date | None, on: date) -> PatientGroup | None:
    """ICH E11 age band on `on`: neonate < 28 days, infant < 2 y, child 2-11 y,
    adolescent 12-17 y, adult >= 18 y. None when the birth date is unknown."""
    if birth_date is None:
        return None
    if birth_date > on:
        raise ValidationFailed(
            f"birth date {birth_date.isoformat()} is after {on.isoformat()}", field="birth_date"
        )
    if (on - birth_date).days < 28:
        return "neonate"
    years = _years_between(birth_date, on)
    if years < 2:
        return "infant"
    if years < 12:
        return "child"
    if years < 18:
        return "adolescent"
    return "adult"


# -- the design envelope ------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:g}"


def _positive(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationFailed(
            f"{_ENV}.{key} must be a number, not {value!r}", field=f"{_ENV}.{key}"
        )
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValidationFailed(
            f"{_ENV}.{key} must be a positive number, not {value!r}", field=f"{_ENV}.{key}"
        )
    return number


def _range(d: Mapping[str, Any], key: str, *, integer: bool = False) -> tuple[Any, Any]:
    if integer:
        return min_max(d, key, positive_int)
    return min_max(d, key, _positive)


def _groups(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(g, str) for g in value):
        raise ValidationFailed(f"{_ENV}.{key} must be a list of group names", field=f"{_ENV}.{key}")
    unknown = [g for g in value if g not in PATIENT_GROUPS]
    if unknown:
        raise ValidationFailed(
            f"{_ENV}.{key}: unknown patient group(s) {', '.join(unknown)} "
            f"(known: {', '.join(PATIENT_GROUPS)})",
            field=f"{_ENV}.{key}",
        )
    return tuple(value)


@dataclass(frozen=True)
class Envelope:
    """The design space a product's master file validates."""

    dose_mg_min: float
    dose_mg_max: float
    drug_loading: float  # mass fraction of drug in the printing material (e.g. 0.05)
    density_mg_per_mm3: float  # of the printed matrix (e.g. 1.25)
    diameters_mm: tuple[float, ...]  # allowed cylinder diameters, ascending
    height_mm_min: float
    height_mm_max: float
    patient_groups: tuple[str, ...]  # groups the product is validated for (empty: any)
    max_diameter_mm_by_group: Mapping[str, float]  # smaller tablets for small children
    units_min: int  # per course
    units_max: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Envelope:
        """Read the master file's `design_envelope`. `patient_groups` and
        `max_diameter_mm_by_group` may be omitted (no restriction); every other key is required.
        """
        if not isinstance(d, Mapping):
            raise ValidationFailed(f"{_ENV} must be an object", field=_ENV)
        dose_min, dose_max = _range(d, "dose_mg")
        loading = _positive(required(d, "drug_loading"), "drug_loading")
        if loading > 1:
            raise ValidationFailed(
                f"{_ENV}.drug_loading is a mass fraction and cannot exceed 1, not {loading}",
                field=f"{_ENV}.drug_loading",
            )
        density = _positive(required(d, "density_mg_per_mm3"), "density_mg_per_mm3")
        raw_diameters = required(d, "diameters_mm")
        if not isinstance(raw_diameters, list | tuple) or not raw_diameters:
            raise ValidationFailed(
                f"{_ENV}.diameters_mm must be a non-empty list", field=f"{_ENV}.diameters_mm"
            )
        diameters = tuple(
            sorted({_positive(x, f"diameters_mm[{i}]") for i, x in enumerate(raw_diameters)})
        )
        height_min, height_max = _range(d, "height_mm")
        groups = _groups(d.get("patient_groups") or [], "patient_groups")
        raw_max = d.get("max_diameter_mm_by_group") or {}
        if not isinstance(raw_max, Mapping):
            raise ValidationFailed(
                f"{_ENV}.max_diameter_mm_by_group must be an object",
                field=f"{_ENV}.max_diameter_mm_by_group",
            )
        _groups(list(raw_max), "max_diameter_mm_by_group")
        max_by_group = {
            str(g): _positive(v, f"max_diameter_mm_by_group.{g}") for g, v in raw_max.items()
        }
        units_min, units_max = _range(d, "units", integer=True)
        return cls(
            dose_mg_min=dose_min,
            dose_mg_max=dose_max,
            drug_loading=loading,
            density_mg_per_mm3=density,
            diameters_mm=diameters,
            height_mm_min=height_min,
            height_mm_max=height_max,
            patient_groups=groups,
            max_diameter_mm_by_group=max_by_group,
            units_min=int(units_min),
            units_max=int(units_max),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dose_mg": {"min": self.dose_mg_min, "max": self.dose_mg_max},
            "drug_loading": self.drug_loading,
            "density_mg_per_mm3": self.density_mg_per_mm3,
            "diameters_mm": list(self.diameters_mm),
            "height_mm": {"min": self.height_mm_min, "max": self.height_mm_max},
            "patient_groups": list(self.patient_groups),
            "max_diameter_mm_by_group": dict(self.max_diameter_mm_by_group),
            "units": {"min": self.units_min, "max": self.units_max},
        }


@dataclass(frozen=True)
class TabletDesign:
    dose_mg: float
    drug_loading: float
    target_mass_mg: float
    volume_mm3: float
    shape: str  # "cylinder"
    diameter_mm: float
    height_mm: float
    units: int
    patient_group: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dose_mg": self.dose_mg,
            "drug_loading": self.drug_loading,
            "target_mass_mg": self.target_mass_mg,
            "volume_mm3": self.volume_mm3,
            "shape": self.shape,
            "diameter_mm": self.diameter_mm,
            "height_mm": self.height_mm,
            "units": self.units,
            "patient_group": self.patient_group,
        }


class OutsideEnvelope(Refused):
    """The prescription cannot be made within the validated design envelope."""

    code = "outside_envelope"


def cylinder_height_mm(volume_mm3: float, diameter_mm: float) -> float:
    """Height of a cylinder of `volume_mm3` and `diameter_mm`: V / (π (d/2)²)."""
    return volume_mm3 / (math.pi * (diameter_mm / 2.0) ** 2)


def design_tablet(
    *, dose_mg: float, units: int, group: str | None, envelope: Envelope
) -> TabletDesign:
    """The tablet design for `dose_mg` per unit, `units` units, for a patient in `group`."""
    if isinstance(dose_mg, bool) or not isinstance(dose_mg, int | float):
        raise ValidationFailed(f"dose must be a number, not {dose_mg!r}", field="dose_mg")
    dose = float(dose_mg)
    if not (math.isfinite(dose) and envelope.dose_mg_min <= dose <= envelope.dose_mg_max):
        raise OutsideEnvelope(
            f"dose {_fmt(dose)} mg is outside the validated range "
            f"{_fmt(envelope.dose_mg_min)}–{_fmt(envelope.dose_mg_max)} mg",
            field="dose_mg",
        )
    if isinstance(units, bool) or not isinstance(units, int):
        raise ValidationFailed(f"units must be an integer, not {units!r}", field="units")
    if not envelope.units_min <= units <= envelope.units_max:
        raise OutsideEnvelope(
            f"{units} units is outside the validated course size "
            f"{envelope.units_min}–{envelope.units_max} units",
            field="units",
        )
    if group is not None and group not in PATIENT_GROUPS:
        raise OutsideEnvelope(f"unknown patient group {group!r}", field="patient_group")
    if envelope.patient_groups:
        validated = ", ".join(envelope.patient_groups)
        if group is None:
            raise OutsideEnvelope(
                f"patient group unknown (no birth date) while the product is validated only "
                f"for: {validated}",
                field="patient_group",
            )
        if group not in envelope.patient_groups:
            raise OutsideEnvelope(
                f"patient group {group} is not validated for this product (validated: {validated})",
                field="patient_group",
            )

    mass = dose / envelope.drug_loading
    volume = mass / envelope.density_mg_per_mm3
    limit = envelope.max_diameter_mm_by_group.get(group) if group is not None else None
    candidates = [d for d in sorted(envelope.diameters_mm) if limit is None or d <= limit + 1e-9]
    if not candidates:
        raise OutsideEnvelope(
            f"no validated diameter is at most {_fmt(limit or 0)} mm, the maximum for {group}",
            field="geometry",
        )
    tried: list[str] = []
    for diameter in candidates:
        height = round(cylinder_height_mm(volume, diameter), 2)
        if envelope.height_mm_min <= height <= envelope.height_mm_max:
            return TabletDesign(
                dose_mg=dose,
                drug_loading=envelope.drug_loading,
                target_mass_mg=round(mass, 6),
                volume_mm3=round(volume, 6),
                shape="cylinder",
                diameter_mm=diameter,
                height_mm=height,
                units=units,
                patient_group=group,
            )
        tried.append(f"Ø{_fmt(diameter)} mm → {height:.2f} mm")
    limit_text = f" (Ø ≤ {_fmt(limit)} mm for {group})" if limit is not None else ""
    raise OutsideEnvelope(
        f"a {_fmt(round(volume, 3))} mm³ tablet ({_fmt(round(mass, 3))} mg) fits no validated "
        f"geometry{limit_text}: height must be {_fmt(envelope.height_mm_min)}–"
        f"{_fmt(envelope.height_mm_max)} mm, got {'; '.join(tried)}",
        field="geometry",
    )
