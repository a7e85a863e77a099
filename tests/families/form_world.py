"""The device network (tests/families/device/network.py) and the bioprint product
(tests/families/bioprint/world.py) on one seeded demo: both families' master files offered on
the prescription form at GSTT-PH."""

from __future__ import annotations

from typing import Any

from tests.families.bioprint import world as bp
from tests.families.device import network as net

from nearfab.bootstrap import App


def build(app: App) -> dict[str, Any]:
    data = net.build(app)
    bp.add_bioprint(app)
    return data
