"""A real FDM printer behind OctoPrint's REST API (docs.octoprint.org, "REST API": File
operations, Job operations, Printer operations), as a `MachineAdapter`.

It checks the ticket as the twin does (the control site's signature, this machine, unexpired, not
replayed; the build approved where the printer is supervised), regenerates the design file from
the ticket's design and refuses it unless its SHA-256 is the one the ticket signs, then:

1. `POST /api/files/local` (multipart, field `file`): uploads the STL;
2. `POST /api/files/local/{name}` `{"command": "slice", "slicer": ..., "gcode": ..., "print":
   true}`: OctoPrint slices it with its configured slicer and starts the print (202);
3. polls `GET /api/printer` (tool0 and bed temperatures) and `GET /api/job` (state, progress)
   on the platform's clock until the job is done, recording the temperatures and the progress
   as telemetry.

Every request carries the instance's API key (`X-Api-Key`). OctoPrint reports neither the layer
nor the extrusion rate, and the printer cannot gauge the coupon or run the leak and flow checks:
the devices come back without in-line results (the release's tests then say "not tested").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nearfab.families.device.http_printer import HttpPrinter, PrinterError, multipart
from nearfab.families.device.machines import BED, NOZZLE
from nearfab.production.machines import RunResult, TelemetryReading
from nearfab.production.tickets import SignedTicket

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from nearfab.families.device.http_printer import PrinterArguments

PROGRESS = "progress_pct"  # OctoPrint's job completion, as telemetry

__all__ = ["PROGRESS", "OctoPrintPrinter", "PrinterError", "multipart"]


class OctoPrintPrinter(HttpPrinter):
    """An FDM printer driven through OctoPrint."""

    server = "OctoPrint"
    default_firmware = "OctoPrint"

    def __init__(
        self,
        machine_id: str,
        *,
        slicer: str = "curalegacy",
        **printer: Unpack[PrinterArguments],
    ) -> None:
        super().__init__(machine_id, **printer)
        self._slicer = slicer

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        expect: tuple[int, ...] = (200,),
    ) -> Any:
        status, text = self._send(method, path, body=body, content_type=content_type)
        if status not in expect:
            raise PrinterError(f"OctoPrint answered {method} {path} with {status}", field="printer")
        return json.loads(text) if text else {}

    def version(self) -> str:
        """The OctoPrint version (`GET /api/version`), as the batch record's firmware."""
        answer = self._request("GET", "/api/version")
        return f"OctoPrint {answer.get('server', '?')}"

    def execute(self, ticket: SignedTicket) -> RunResult:
        clock = self._clock
        design, data = self._admit(ticket)
        self.firmware = self.version()
        name = str(design["design_file"]["name"])
        gcode = name.rsplit(".", 1)[0] + ".gcode"
        started = clock.now()
        body, boundary = multipart("file", name, data)
        uploaded = self._request(
            "POST", "/api/files/local", body=body,
            content_type=f"multipart/form-data; boundary={boundary}", expect=(200, 201),
        )  # fmt: skip
        stored = ((uploaded.get("files") or {}).get("local") or {}).get("name", name)
        command = {"command": "slice", "slicer": self._slicer, "gcode": gcode, "print": True}
        self._request(
            "POST", f"/api/files/local/{stored}", body=json.dumps(command).encode(),
            expect=(200, 202),
        )  # fmt: skip
        events = [
            "ticket verified",
            f"design file sha256 {design['design_file']['sha256']} verified",
            f"uploaded {stored} to OctoPrint; slicing with {self._slicer} and printing {gcode}",
        ]
        telemetry: list[TelemetryReading] = []

        def poll() -> tuple[bool, str]:
            printer = self._request("GET", "/api/printer")
            job = self._request("GET", "/api/job")
            at = clock.now()
            temperature: Mapping[str, Any] = printer.get("temperature") or {}
            for metric, tool in ((NOZZLE, "tool0"), (BED, "bed")):
                actual = (temperature.get(tool) or {}).get("actual")
                if isinstance(actual, int | float):
                    telemetry.append(TelemetryReading(at, metric, float(actual), "°C"))
            completion = (job.get("progress") or {}).get("completion")
            if isinstance(completion, int | float):
                telemetry.append(TelemetryReading(at, PROGRESS, float(completion), "%"))
            state = str(job.get("state") or "")
            if state.startswith(("Error", "Offline")):
                raise PrinterError(f"the printer reports {state!r}", field="printer")
            if state == "Cancelled" or state.startswith("Cancelling"):
                raise PrinterError("the print was cancelled at the printer", field="printer")
            return state == "Operational" and completion == 100, state

        self._wait(poll)
        events.append(f"print finished ({gcode})")
        return self._result(ticket, design, started, telemetry, events)
