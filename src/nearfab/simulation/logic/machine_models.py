"""Product-family machine models: the simulator times a batch with the platform's own code.

For a product with a `Design`, each prescription of its mix becomes the design the platform
would make (`design_from`, the rules of `nearfab.families.<family>`), and the batch's machine
time is the family's `duration_s(design)` — the figure the scheduler plans with and the time a
simulated machine of the platform runs for. If the family also has a `failure_probability(design)`
it gives the batch failure probability; none does today, so the scenario's figure is used.

A prescription the family refuses (outside the design envelope, no validated geometry) is an
error of the scenario, reported before anything is simulated. The families are imported on
first use, so a scenario without designs needs nothing from the rest of the platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nearfab.simulation.logic.spec import Design, Prescription, Product

SECONDS_PER_DAY = 86_400.0


class FamilyModel(Protocol):
    """What the simulator needs from a product family (`nearfab.families`)."""

    name: str

    def design_from(
        self,
        envelope: Mapping[str, Any],
        *,
        dose_mg: float,
        units: int,
        patient_group: str | None,
    ) -> dict[str, Any]: ...

    def duration_s(self, design: Mapping[str, Any]) -> float: ...

    def material_needed_g(self, design: Mapping[str, Any]) -> float: ...


_MODELS: dict[str, FamilyModel] = {}


def family_models() -> dict[str, FamilyModel]:
    """The families that have a machine model, by the name master files and scenarios use."""
    if not _MODELS:
        from nearfab.families.solid_dose import SolidDoseFamily

        _MODELS[SolidDoseFamily.name] = SolidDoseFamily()
    return _MODELS


class NoMachineModel(ValueError):
    """The product's family has no machine model in `nearfab.families`."""


@dataclass(frozen=True)
class JobModel:
    """One prescription as the family makes it: its design, machine time (days), material (g)
    and batch failure probability (None: the family has no failure model)."""

    prescription: Prescription
    design: Mapping[str, Any]
    machine_days: float
    material_g: float
    failure_probability: float | None


def family_model(name: str) -> FamilyModel:
    models = family_models()
    try:
        return models[name]
    except KeyError:
        known = ", ".join(sorted(models))
        raise NoMachineModel(
            f"product family {name!r} has no machine model (families with one: {known})"
        ) from None


def job_model(family: str, envelope: Mapping[str, Any], rx: Prescription) -> JobModel:
    """The design, machine time and failure probability of `rx` under `family`'s model; the
    family's ValidationFailed / Refused (naming the field) when it would refuse it."""
    model = family_model(family)
    design = model.design_from(
        envelope, dose_mg=rx.dose_mg, units=rx.units, patient_group=rx.patient_group
    )
    seconds = float(model.duration_s(design))
    failure = getattr(model, "failure_probability", None)
    return JobModel(
        prescription=rx,
        design=design,
        machine_days=seconds / SECONDS_PER_DAY,
        material_g=float(model.material_needed_g(design)),
        failure_probability=float(failure(design)) if callable(failure) else None,
    )


def job_models(product: Product) -> tuple[JobModel, ...]:
    """A product's prescription mix under its family's model (empty without a design)."""
    design: Design | None = product.design
    if design is None:
        return ()
    return tuple(job_model(product.family, design.envelope, rx) for rx in design.prescriptions)
