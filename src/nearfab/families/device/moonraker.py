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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from nearfab.common.clock import Clock
from nearfab.common.errors import ValidationFailed
from nearfab.families.device.machines import BED, EXTRUSION, LAYER, NOZZLE, admit_build
from nearfab.families.device.octoprint import PrinterError, multipart
from nearfab.production.machines import RunResult, TelemetryReading, UnitMeasurement
from nearfab.production.tickets import SignedTicket

QUERY = "/printer/objects/query?extruder&heater_bed&print_stats&motion_report"
Slicer = Callable[[bytes, str], bytes]


class MoonrakerPrinter:
    """An FDM printer driven through Moonraker (Klipper)."""

    def __init__(
        self,
        machine_id: str,
        *,
        base_url: str,
        api_key: str,
        control_public_key_pem: str,
        clock: Clock,
        slicer: Slicer,
        supervised: bool = False,
        filament_diameter_mm: float = 1.75,
        poll_s: float = 30.0,
        timeout_s: float = 6 * 3600.0,
        firmware: str = "Klipper",
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValidationFailed("base_url must be an http(s) URL", field="base_url")
        self.machine_id = machine_id
        self.firmware = firmware
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._public_key_pem = control_public_key_pem
        self._clock = clock
        self._slice = slicer
        self.supervised = supervised
        self._area = math.pi * (filament_diameter_mm / 2) ** 2  # mm² of filament
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._executed: set[str] = set()

    def _request(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str = ""
    ) -> Any:
        request = urllib.request.Request(self._base + path, data=body, method=method)
        request.add_header("X-Api-Key", self._key)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            # base_url is checked to be http(s) in __init__
            with urllib.request.urlopen(request, timeout=30) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise PrinterError(
                f"Moonraker answered {method} {path} with {exc.code}: {detail}", field="printer"
            ) from None
        except OSError as exc:
            raise PrinterError(
                f"Moonraker at {self._base} unreachable: {exc}", field="printer"
            ) from None
        answer_json = json.loads(text) if text else {}
        return answer_json.get("result", {}) if isinstance(answer_json, Mapping) else {}

    def execute(self, ticket: SignedTicket) -> RunResult:
        clock = self._clock
        design, data = admit_build(
            ticket, self._public_key_pem, machine_id=self.machine_id, now=clock.now(),
            executed=self._executed, supervised=self.supervised,
        )  # fmt: skip
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
        waited = 0.0
        while True:
            clock.sleep(self._poll_s)
            waited += self._poll_s
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
            if state == "complete":
                break
            if waited >= self._timeout_s:
                raise PrinterError(
                    f"no finished print after {self._timeout_s:g} s (state {state!r})",
                    field="printer",
                )
        events.append(f"print finished ({path})")
        units = tuple(UnitMeasurement(i, clock.now(), {}) for i in range(int(design["units"])))
        return RunResult(
            machine_id=self.machine_id,
            firmware=self.firmware,
            ticket_hash=ticket.ticket_hash,
            started_at=started,
            finished_at=clock.now(),
            units=units,
            telemetry=tuple(telemetry),
            events=tuple(events),
        )
