"""Product-level medication codes (RxNorm SCD/SBD, dm+d VMP/AMP, SNOMED CT clinical drugs) and the
strength of one unit of each, as shipped in `products.py` (RxNorm, extracted by
scripts/extract_product_codes.py) and `dmd.py` (NHS dm+d VMPs and AMPs, extracted by
scripts/extract_dmd_product_codes.py), each from a maintained public source (see README.md here).
Nothing here is typed by hand.

A master file declares the products it makes by listing their codes among its accepted codes;
solid_dose's prescription part (families/solid_dose/prescription.py), which order intake asks
through orders.kit.PrescriptionKit, then checks that the prescribed dose agrees with the
strength.
"""

from __future__ import annotations

from dataclasses import dataclass

from nearfab.families.solid_dose.codes import dmd
from nearfab.families.solid_dose.codes.products import PRODUCTS, SOURCE

DMD_SOURCE = dmd.SOURCE

__all__ = ["DMD_SOURCE", "SOURCE", "ProductCode", "product_code", "product_codings"]


@dataclass(frozen=True)
class ProductCode:
    """One product code: the strength of one unit (`per`: tablet, capsule) of its ingredient."""

    system: str
    code: str
    display: str
    kind: str
    ingredient: str
    strength_value: float
    strength_unit: str
    per: str
    vmp: str | None = None  # a dm+d AMP's VMP (same strength and form)

    @property
    def strength_text(self) -> str:
        value = self.strength_value
        number = str(int(value)) if value.is_integer() else repr(value)
        return f"{number} {self.strength_unit} per {self.per}"


_BY_CODE: dict[tuple[str, str], ProductCode] = {
    (p["system"], p["code"]): ProductCode(
        system=p["system"],
        code=p["code"],
        display=p["display"],
        kind=p["kind"],
        ingredient=p["ingredient"],
        strength_value=float(p["strength_value"]),
        strength_unit=p["strength_unit"],
        per=p["per"],
        vmp=p.get("vmp"),
    )
    for p in [*PRODUCTS, *dmd.PRODUCTS]
}


def product_code(system: str, code: str) -> ProductCode | None:
    """The product a (system, code) names, or None when it is no product code nearfab ships."""
    return _BY_CODE.get((system, code))


def product_codings(ingredient: str) -> list[dict[str, str]]:
    """The shipped product codes of one ingredient (as the source names it: "propranolol
    hydrochloride" in RxNorm, "propranolol" in dm+d), as master-file accepted codes: how a
    master file declares, from the data and not by hand, the products it makes."""
    return [
        {"system": p.system, "code": p.code, "display": p.display}
        for p in _BY_CODE.values()
        if p.ingredient == ingredient
    ]
