"""What the production domain asks of a product family: `MachineKit`.

The domain owns the question; families under nearfab.families answer it, and the domain reaches
them only through the registry bootstrap wires in (DESIGN.md, "The family kit").
"""

from __future__ import annotations
