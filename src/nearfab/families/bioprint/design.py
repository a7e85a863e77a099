"""The design of one transplant's islet micro-tissues, inside the master file's envelope (pure).

From the dose the prescription part accepted (total IEQ = IEQ/kg × the recipient's weight):

- bioink volume = IEQ ÷ the envelope's islet density in the bioink (IEQ per mL);
- constructs = ⌈bioink volume ÷ the volume of one printed construct⌉, at most the envelope's;
- islet tissue = IEQ × the volume of one IEQ: an IEQ is an islet of 150 µm diameter (Ricordi
  et al. 1990), π/6 × (0.015 cm)³ = 1.767 × 10⁻⁶ mL; taken as 1 g/mL, the grams of the donor's
  islet isolation lot the print draws (what the scheduler books);
- print time = constructs × the envelope's seconds per construct;
- the hours the product may wait: its shelf life from the end of the print (`shelf_life_h`),
  which must hold the validated release testing (`release_h`: viability, counts, the static
  glucose-stimulated insulin secretion assay) and the transport to the transplant centre
  (`transport_h`). The scheduler books the transplant slot that long after the print ends, so a
  master file whose release and transport outlast the shelf life is refused: the product would
  expire before the transplant slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.families.bioprint.prescription import MIN_IEQ_PER_KG  # the clinical floor

IEQ_DIAMETER_CM = 0.015  # 150 µm: the definition of one islet equivalent
IEQ_VOLUME_ML = math.pi / 6 * IEQ_DIAMETER_CM**3  # 1.767e-6 mL
TISSUE_G_PER_ML = 1.0

ENVELOPE_KEYS = (
    "dose_per_kg",
    "body_weight_kg",
    "ieq_per_ml_bioink",
    "construct_volume_ml",
    "max_constructs",
    "print_s_per_construct",
    "shelf_life_h",
    "release_h",
    "transport_h",
    "isolation_to_print_h",
)


def _field(key: str) -> str:
    return f"design_envelope.{key}"


def _positive(envelope: Mapping[str, Any], key: str) -> float:
    value = envelope.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationFailed(f"{_field(key)} must be a number, got {value!r}", field=_field(key))
    if value <= 0:
        raise ValidationFailed(f"{_field(key)} must be positive, got {value!r}", field=_field(key))
    return float(value)


def _range(envelope: Mapping[str, Any], key: str) -> tuple[float, float]:
    value = envelope.get(key)
    if not isinstance(value, Mapping):
        raise ValidationFailed(f"{_field(key)} must be {{min, max}}", field=_field(key))
    low = _positive({"min": value.get("min")}, "min")
    high = _positive({"max": value.get("max")}, "max")
    if low > high:
        raise ValidationFailed(f"{_field(key)}.min is above its max", field=f"{_field(key)}.min")
    return low, high


@dataclass(frozen=True)
class Envelope:
    dose_per_kg: tuple[float, float]
    body_weight_kg: tuple[float, float]
    ieq_per_ml_bioink: float
    construct_volume_ml: float
    max_constructs: int
    print_s_per_construct: float
    shelf_life_h: float
    release_h: float
    transport_h: float
    isolation_to_print_h: float

    @classmethod
    def from_dict(cls, envelope: Mapping[str, Any]) -> Envelope:
        """The envelope, validated: ValidationFailed naming `design_envelope.<key>`."""
        if not isinstance(envelope, Mapping):
            raise ValidationFailed("design_envelope must be an object", field="design_envelope")
        unknown = sorted(set(envelope) - set(ENVELOPE_KEYS))
        if unknown:
            raise ValidationFailed(
                f"{_field(unknown[0])} is not a key of an islet micro-tissue envelope"
                f" (keys: {', '.join(ENVELOPE_KEYS)})",
                field=_field(unknown[0]),
            )
        dose = _range(envelope, "dose_per_kg")
        if dose[0] < MIN_IEQ_PER_KG:
            raise ValidationFailed(
                f"{_field('dose_per_kg')}.min {dose[0]:g} IEQ/kg is below the clinical minimum"
                f" {MIN_IEQ_PER_KG:g} IEQ/kg",
                field=f"{_field('dose_per_kg')}.min",
            )
        constructs = envelope.get("max_constructs")
        if isinstance(constructs, bool) or not isinstance(constructs, int) or constructs < 1:
            raise ValidationFailed(
                f"{_field('max_constructs')} must be a positive whole number",
                field=_field("max_constructs"),
            )
        made = cls(
            dose_per_kg=dose,
            body_weight_kg=_range(envelope, "body_weight_kg"),
            ieq_per_ml_bioink=_positive(envelope, "ieq_per_ml_bioink"),
            construct_volume_ml=_positive(envelope, "construct_volume_ml"),
            max_constructs=constructs,
            print_s_per_construct=_positive(envelope, "print_s_per_construct"),
            shelf_life_h=_positive(envelope, "shelf_life_h"),
            release_h=_positive(envelope, "release_h"),
            transport_h=_positive(envelope, "transport_h"),
            isolation_to_print_h=_positive(envelope, "isolation_to_print_h"),
        )
        check_shelf_life(made.shelf_life_h, made.release_h, made.transport_h)
        return made


def check_shelf_life(shelf_life_h: float, release_h: float, transport_h: float) -> None:
    """ValidationFailed (code shelf_life_expired, field design_envelope.shelf_life_h) when
    release testing and transport outlast the shelf life: the product would expire before the
    transplant slot the scheduler books after them (a master file saying so is not drafted)."""
    if release_h + transport_h > shelf_life_h:
        raise ValidationFailed(
            f"release testing ({release_h:g} h) and transport ({transport_h:g} h) take"
            f" {release_h + transport_h:g} h, longer than the shelf life of {shelf_life_h:g} h"
            " from the end of the print: the product would expire before the transplant slot",
            field=_field("shelf_life_h"),
            code="shelf_life_expired",
        )


def design_product(target_ieq: float, body_weight_kg: float, envelope: Envelope) -> dict[str, Any]:
    """The design for `target_ieq` islet equivalents for a recipient of `body_weight_kg`;
    Refused (code outside_envelope) naming the field outside the envelope."""
    low_w, high_w = envelope.body_weight_kg
    if not low_w <= body_weight_kg <= high_w:
        raise Refused(
            f"recipient body weight {body_weight_kg:g} kg is outside the validated range"
            f" {low_w:g}-{high_w:g} kg",
            field="body_weight_kg",
            code="outside_envelope",
        )
    per_kg = target_ieq / body_weight_kg
    low, high = envelope.dose_per_kg
    if not low * (1 - 1e-9) <= per_kg <= high * (1 + 1e-9):
        raise Refused(
            f"dose {per_kg:g} IEQ/kg is outside the validated range {low:g}-{high:g} IEQ/kg",
            field="dose_per_kg",
            code="outside_envelope",
        )
    bioink_ml = target_ieq / envelope.ieq_per_ml_bioink
    constructs = math.ceil(bioink_ml / envelope.construct_volume_ml - 1e-9)
    if constructs > envelope.max_constructs:
        raise Refused(
            f"{target_ieq:g} IEQ at {envelope.ieq_per_ml_bioink:g} IEQ/mL need {constructs}"
            f" constructs of {envelope.construct_volume_ml:g} mL; at most"
            f" {envelope.max_constructs} are validated",
            field="constructs",
            code="outside_envelope",
        )
    return {
        "target_ieq": target_ieq,
        "dose_per_kg": per_kg,
        "body_weight_kg": body_weight_kg,
        "bioink_ml": round(bioink_ml, 4),
        "ieq_per_ml_bioink": envelope.ieq_per_ml_bioink,
        "constructs": constructs,
        "construct_volume_ml": envelope.construct_volume_ml,
        "islet_tissue_ml": round(target_ieq * IEQ_VOLUME_ML, 6),
        "print_s_per_construct": envelope.print_s_per_construct,
        "shelf_life_h": envelope.shelf_life_h,
        "release_h": envelope.release_h,
        "transport_h": envelope.transport_h,
        "isolation_to_print_h": envelope.isolation_to_print_h,
    }
