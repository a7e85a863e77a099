"""Custody: GS1 serialisation, labels, and verification at dispense."""

from nearfab.custody.enums import UnitStatus
from nearfab.custody.gs1 import UnitIdentifier, make_identifier, new_serial, parse_scan
from nearfab.custody.labels import LabelContent, decode_datamatrix, render_label
from nearfab.custody.models import Dispense, SerialUnit
from nearfab.custody.services import CustodyService, DispenseResult

__all__ = [
    "CustodyService",
    "Dispense",
    "DispenseResult",
    "LabelContent",
    "SerialUnit",
    "UnitIdentifier",
    "UnitStatus",
    "decode_datamatrix",
    "make_identifier",
    "new_serial",
    "parse_scan",
    "render_label",
]
