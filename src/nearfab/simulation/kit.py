"""What the simulation domain asks of a product family: `SimulationKit`.

The domain owns the question; families under nearfab.families answer it, and the domain reaches
them only through the registry bootstrap wires in (DESIGN.md, "The family kit").

A scenario's product with a `design` names its family, the master file's design envelope and a
prescription mix. Each prescription of the mix is the family's own mapping (solid_dose: the
dose, the units and the patient group; the core adds only `weight`), so the core never reads a
dose. For each one the simulator asks the family's `simulation` part for the design the
platform would make and the batch's failure probability, and the family itself
(`ProductFamily`) for the machine time and material of that design: `duration_s` and
`material_needed_g`, the figures the scheduler plans with, so the simulator and the live
platform cannot time a batch differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class SimulationKit(Protocol):
    """A product family's model for the network simulator."""

    def design(
        self, envelope: Mapping[str, Any], prescription: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The design the platform would make for one prescription of a scenario's mix (the
        family's mapping, without the core's `weight`) under a master file's design envelope.

        Refuses what the platform would refuse: ValidationFailed or Refused whose `field` is
        the prescription's key (e.g. `units`) or `design_envelope.<key>` for the envelope's.
        """
        ...

    def failure_probability(self, design: Mapping[str, Any]) -> float | None:
        """The chance that a batch of `design` fails, in [0, 1); None when the family has no
        failure model (the scenario's `batch_failure_probability` is then used)."""
        ...

    def prescription_of(self, order: Any) -> dict[str, Any] | None:
        """A live order as one prescription of a mix, in the family's words (what
        `export_scenario` writes); None when the order says nothing the model can use."""
        ...
