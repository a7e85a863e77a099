"""Product-family machine models: the simulator times a batch with the platform's own code.

For a product with a `design`, each prescription of its mix (the family's own mapping) becomes
the design the platform would make (`family.simulation.design`, the family's rules), and the
batch's machine time is the family's `duration_s(design)`: the figure the scheduler plans with
and the time a simulated machine of the platform runs for. The family's
`simulation.failure_probability(design)` gives the batch failure probability; when it says
None, the scenario's figure is used. A family that needs starting material from the patient
(`collection(design)`, read through `nearfab.designs.collection_of`) gives the earliest times
from the collection to the run's start and from the run's end to administration, the figures
scheduling books with.

The family comes from the one FamilyRegistry bootstrap builds (`nearfab.designs`); this module
never imports a family. The figures are worked out once, when a scenario becomes a spec
(`modelled_design`), so each replication (in any process) runs without the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nearfab.designs import ProductFamily
from nearfab.designs.registry import collection_of
from nearfab.simulation.kit import SimulationKit
from nearfab.simulation.logic.spec import Design, Prescription

SECONDS_PER_DAY = 86_400.0
WEIGHT = "weight"  # the core's key in a prescription of the mix: how often it is drawn


def simulation_kit(family: ProductFamily) -> SimulationKit:
    kit: SimulationKit = family.simulation
    return kit


def modelled_prescription(
    family: ProductFamily,
    envelope: Mapping[str, Any],
    says: Mapping[str, Any],
    weight: float = 1.0,
) -> Prescription:
    """One prescription of the mix (`says`, the family's mapping) as `family` makes it: its
    design, machine time (days), material and failure probability. The family's
    ValidationFailed / Refused (naming the field) when the platform would refuse it."""
    kit = simulation_kit(family)
    design = kit.design(envelope, says)
    failure = kit.failure_probability(design)
    collection = collection_of(family, design)
    return Prescription(
        says=dict(says),
        machine_days=float(family.duration_s(design)) / SECONDS_PER_DAY,
        weight=weight,
        failure_probability=None if failure is None else float(failure),
        material_g=float(family.material_needed_g(design)),
        design=design,
        to_start_days=None if collection is None else collection.to_start_s / SECONDS_PER_DAY,
        to_administration_days=0.0
        if collection is None
        else collection.to_administration_s / SECONDS_PER_DAY,
    )


def modelled_design(
    family: ProductFamily,
    envelope: Mapping[str, Any],
    prescriptions: Sequence[Mapping[str, Any]],
) -> Design:
    """A product's design section under its family's model. Each prescription is the family's
    mapping plus an optional `weight` (how often an order draws it; 1 by default)."""
    mix = []
    for rx in prescriptions:
        says = {k: v for k, v in rx.items() if k != WEIGHT}
        mix.append(modelled_prescription(family, envelope, says, float(rx.get(WEIGHT, 1.0))))
    return Design(envelope=dict(envelope), prescriptions=tuple(mix))
