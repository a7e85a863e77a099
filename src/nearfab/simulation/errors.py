"""Errors of the simulation domain."""

from __future__ import annotations

from nearfab.common.errors import ValidationFailed


class ScenarioInvalid(ValidationFailed):
    """A scenario file that cannot be simulated; `field` is the path of the offending value
    (e.g. `sites.2.slots`)."""

    code = "scenario_invalid"
