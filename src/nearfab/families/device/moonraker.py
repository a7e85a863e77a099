"""A real FDM printer running Klipper behind Moonraker's HTTP API (moonraker.readthedocs.io,
"Web API": File Operations, Printer Administration, Printer Status), as a `MachineAdapter`.

Klipper prints G-code only and Moonraker does not slice: the site's slicer (a validated slicer
and profile, qualified with the printer; `slice(stl, name) -> gcode`) turns the design file into
G-code at the site. The adapter first checks the ticket, the approval and the design file's
SHA-256 as every printer of the family does (`admit_build`), so only the signed file is sliced;
the G-code's own SHA-256 goes on the record's events. Then:

1. `POST /server/files/upload` (multipart: `file`, `root=gcodes`): uploads the G-code;
2. `POST /printer/print/start?filename=...`: starts it;
3. polls `GET /printer/objects/query?extruder&heater_bed&print_stats&motion_report` on the
   platform's clock: extruder and bed temperatures, `print_stats.info.current_layer`, the live
   extruder velocity (filament mm/s, turned into mm³/s with the filament's cross-section), until
   `print_stats.state` is `complete` (`error` or `cancelled` is a printer_error).

Requests carry the API key (`X-Api-Key`). As with OctoPrint, the devices come back without
in-line results (entered later as laboratory results).
"""

from __future__ import annotations

import hashlib
import json
import math
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nearfab.families.device.http_printer import HttpPrinter, PrinterError, multipart
from nearfab.families.device.machines import BED, EXTRUSION, LAYER, NOZZLE
from nearfab.production.machines import RunResult, TelemetryReading
from nearfab.production.tickets import SignedTicket

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from nearfab.families.device.http_printer import PrinterArguments

QUERY = "/printer/objects/query?extruder&heater_bed&print_stats&motion_report"
Slicer = Callable[[bytes, str], bytes]


class MoonrakerPrinter(HttpPrinter):
    """An FDM printer driven through Moonraker (Klipper)."""

    server = "Moonraker"
    default_firmware = "Klipper"

    def __init__(
        self,
        machine_id: str,
        *,
        slicer: Slicer,
        filament_diameter_mm: float = 1.75,
        **printer: Unpack[PrinterArguments],
    ) -> None:
        super().__init__(machine_id, **printer)
        self._slice = slicer
        self._area = math.pi * (filament_diameter_mm / 2) ** 2  # mm² of filament

    def _request(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = ""
    ) -> Any:
        _, text = self._send(method, path, body=body, content_type=content_type)
        answer_json = json.loads(text) if text else {}
        return answer_json.get("result", {}) if isinstance(answer_json, Mapping) else {}

    def execute(self, ticket: SignedTicket) -> RunResult:
        clock = self._clock
        design, data = self._admit(ticket)
        name = str(design["design_file"]["name"]).rsplit(".", 1)[0] + ".gcode"
        gcode = self._slice(data, name)
        started = clock.now()
        body, boundary = multipart("file", name, gcode)
        # Moonraker reads the multipart's other fields too; the root defaults to gcodes
        uploaded = self._request(
            "POST", "/server/files/upload", body=body,
            content_type=f"multipart/form-data; boundary={boundary}",
        )  # fmt: skip
        path = str((uploaded.get("item") or {}).get("path") or name)
        self._request("POST", "/printer/print/start?" + urllib.parse.urlencode({"filename": path}))
        events = [
            "ticket verified",
            f"design file sha256 {design['design_file']['sha256']} verified",
            f"sliced at the site: {path}, G-code sha256 {hashlib.sha256(gcode).hexdigest()}",
            f"uploaded to Moonraker and started {path}",
        ]
        telemetry: list[TelemetryReading] = []

        def poll() -> tuple[bool, str]:
            status: Mapping[str, Any] = self._request("GET", QUERY).get("status") or {}
            at = clock.now()
            for metric, heater in ((NOZZLE, "extruder"), (BED, "heater_bed")):
                value = (status.get(heater) or {}).get("temperature")
                if isinstance(value, int | float):
                    telemetry.append(TelemetryReading(at, metric, float(value), "°C"))
            velocity = (status.get("motion_report") or {}).get("live_extruder_velocity")
            if isinstance(velocity, int | float):
                rate = round(float(velocity) * self._area, 3)
                telemetry.append(TelemetryReading(at, EXTRUSION, rate, "mm³/s"))
            stats: Mapping[str, Any] = status.get("print_stats") or {}
            layer = (stats.get("info") or {}).get("current_layer")
            if isinstance(layer, int | float):
                telemetry.append(TelemetryReading(at, LAYER, float(layer), "layer"))
            state = str(stats.get("state") or "")
            if state in ("error", "cancelled"):
                why = stats.get("message") or state
                raise PrinterError(f"the printer reports {state}: {why}", field="printer")
            return state == "complete", state

        self._wait(poll)
        events.append(f"print finished ({path})")
        return self._result(ticket, design, started, telemetry, events)
