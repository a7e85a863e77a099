"""Product-family plug-ins: the core finds them here; bootstrap registers them.

A family (one package under `nearfab.families`) is the only place its product knowledge lives.
The core calls it through the parts below, each typed by the Protocol of the domain that calls
it (the domain owns the question it asks; see docs/families.md):

- `prescription`  orders.kit.PrescriptionKit   what a prescription must say; the dose it takes
- design / check_envelope (here)                the personalised design in the validated envelope
- `machines`      production.kit.MachineKit     twins and real adapters, metrics, CPPs, faults,
                                                the batch record's measurement document
- `release`       quality.kit.ReleaseKit        release tests and the RTRT rule; material lots
- `labels`        custody.kit.LabelKit          identity and label text, pack contents
- `simulation`    simulation.kit.SimulationKit  the network simulator's model

The parts are typed `Any` here because their Protocols live in domains above this one (the
dependency rule); bootstrap's `check_family_parts` checks each part against its Protocol when a
family is registered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nearfab.common.errors import ValidationFailed
from nearfab.orders import DesignRequest


@dataclass(frozen=True)
class Collection:
    """Starting material collected from the patient before the run (a patient-specific product):
    the run may start `to_start_s` after the collection at the earliest (the material reaches
    the machine), and the product may be administered `to_administration_s` after the run ends
    at the earliest (release testing, transport)."""

    to_start_s: float
    to_administration_s: float


def collection_of(family: Any, design: Mapping[str, Any]) -> Collection | None:
    """The family's optional `collection(design)`: None when the product needs no starting
    material from the patient (and for a family without the member)."""
    ask = getattr(family, "collection", None)
    return None if ask is None else ask(design)


class ProductFamily(Protocol):
    """What the core needs from one kind of product (solid_dose, cell_therapy, ...).

    Optional member (read through `collection_of`): `collection(design) -> Collection | None`,
    the starting material the product needs from the patient (scheduling books a collection
    appointment against the machine slot)."""

    name: str
    machine_types: tuple[str, ...]
    prescription: Any
    machines: Any
    release: Any
    labels: Any
    simulation: Any

    def check_envelope(self, envelope: Mapping[str, Any]) -> None:
        """Raise ValidationFailed naming the bad key of a master file's design envelope."""
        ...

    def design(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        """Personalised design and patient group; Refused when outside the envelope."""
        ...

    def material_needed_g(self, design: Mapping[str, Any]) -> float: ...

    def duration_s(self, design: Mapping[str, Any]) -> float: ...


class FamilyRegistry:
    """The registered families by name. `check` (bootstrap's: each part against the Protocol
    of the domain that calls it) runs on every family registered, so a family missing a part
    fails when it is registered, not when a batch first needs it."""

    def __init__(self, check: Callable[[ProductFamily], None] | None = None) -> None:
        self._families: dict[str, ProductFamily] = {}
        self._check = check

    def register(self, family: ProductFamily) -> None:
        if self._check is not None:
            self._check(family)
        self._families[family.name] = family

    def get(self, name: str) -> ProductFamily:
        try:
            return self._families[name]
        except KeyError:
            known = ", ".join(sorted(self._families)) or "none"
            raise ValidationFailed(
                f"unknown product family {name!r} (registered: {known})", field="product_family"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._families)

    def __iter__(self) -> Iterator[ProductFamily]:
        return iter(self._families[name] for name in sorted(self._families))
