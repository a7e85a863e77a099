"""The Moonraker (Klipper) adapter against a fake Moonraker that speaks its documented HTTP API
(moonraker.readthedocs.io, Web API: "File upload" POST /server/files/upload, multipart with a
`file` part, answering `{"result": {"item": {"path", "root"}, "action": "create_file"}}`;
"Start a print job" POST /printer/print/start?filename=...; "Query printer object status" GET
/printer/objects/query?extruder&heater_bed&print_stats&motion_report, answering
`{"result": {"status": {...}}}` with `print_stats.state` one of standby, printing, paused,
complete, error, cancelled; `X-Api-Key` checked, 401 otherwise). Klipper prints G-code: the
site's slicer is stood in for by a function that writes a G-code header naming the STL it
was given (the slicer is an external program, not nearfab's code)."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.families.device.network import ENVELOPE

from nearfab.common.clock import ManualClock
from nearfab.families.device import DeviceFamily
from nearfab.families.device.geometry import Envelope, design_flowmeter
from nearfab.families.device.moonraker import MoonrakerPrinter
from nearfab.families.device.octoprint import PrinterError
from nearfab.production import TicketSigner
from nearfab.production.tickets import TicketRejected

API_KEY = "9f3b1c2d4e5f60718293a4b5c6d7e8f9"
START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
SIGNER = TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex("18" * 32)))
DESIGN = design_flowmeter(qmax_ml_s=20, size="S", units=1, envelope=Envelope.from_dict(ENVELOPE))
LAYERS = 460  # (90 + 2) mm / 0.2 mm


def site_slicer(stl: bytes, name: str) -> bytes:
    """Stands in for the site's slicer: a G-code header naming the STL's hash and the layers."""
    digest = hashlib.sha256(stl).hexdigest()
    return (
        f"; {name}\n; source sha256 {digest}\nSET_PRINT_STATS_INFO TOTAL_LAYER={LAYERS}\n".encode()
    )


class FakeMoonraker:
    def __init__(self, polls_to_finish: int = 4) -> None:
        self.files: dict[str, bytes] = {}
        self.started: str | None = None
        self.polls = 0
        self.polls_to_finish = polls_to_finish
        self.state_after_start = "printing"
        self.requests: list[str] = []


def _handler(fake: FakeMoonraker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            fake.requests.append(f"{self.command} {self.path}")
            if self.headers.get("X-Api-Key") != API_KEY:
                self._send(401, {"error": {"code": 401, "message": "Unauthorized"}})
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            url = urllib.parse.urlsplit(self.path)
            asked = set(url.query.split("&"))
            if url.path != "/printer/objects/query":
                self._send(404, {"error": {"code": 404, "message": "Not Found"}})
                return
            fake.polls += 1
            done = fake.polls >= fake.polls_to_finish
            state = "complete" if done else fake.state_after_start
            layer = LAYERS if done else fake.polls * LAYERS // fake.polls_to_finish
            status = {
                "extruder": {"temperature": 240.3, "target": 240.0},
                "heater_bed": {"temperature": 79.8, "target": 80.0},
                "motion_report": {"live_extruder_velocity": 3.3},
                "print_stats": {
                    "filename": fake.started, "state": state,
                    "message": "MCU 'mcu' shutdown: Timer too close" if state == "error" else "",
                    "info": {"total_layer": LAYERS, "current_layer": layer},
                },
            }  # fmt: skip
            shown = {k: v for k, v in status.items() if k in asked}
            self._send(200, {"result": {"eventtime": 1000.0 + fake.polls, "status": shown}})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/server/files/upload":
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                message = BytesParser(policy=HTTP).parsebytes(head + body)
                [part] = [p for p in message.iter_parts() if p.get_filename()]
                name = str(part.get_filename())
                if not name.endswith((".gcode", ".g", ".gco")):
                    self._send(400, {"error": {"code": 400, "message": "Invalid file extension"}})
                    return
                fake.files[name] = part.get_payload(decode=True)
                item = {"path": name, "root": "gcodes"}
                created = {"item": item, "print_started": False, "action": "create_file"}
                self._send(201, {"result": created})
            elif url.path == "/printer/print/start":
                filename = urllib.parse.parse_qs(url.query)["filename"][0]
                if filename not in fake.files:
                    self._send(400, {"error": {"code": 400, "message": "File not found"}})
                    return
                fake.started = filename
                self._send(200, {"result": "ok"})
            else:
                self._send(404, {"error": {"code": 404, "message": "Not Found"}})

    return Handler


@pytest.fixture
def moonraker() -> Iterator[tuple[FakeMoonraker, str]]:
    fake = FakeMoonraker()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _ticket(*, approved: bool = False) -> Any:
    payload: dict[str, Any] = {
        "ticket_id": "T-mr",
        "job_id": "job_mr",
        "machine_id": "fdm-mr",
        "expires_at": (START + timedelta(days=1)).isoformat(),
        "design": DESIGN,
    }
    if approved:
        payload["build_approval"] = {"site_kind": "home", "role": "qp", "by": "usr_rp"}
    return SIGNER.sign(payload)


def _printer(url: str, *, key: str = API_KEY, supervised: bool = False) -> MoonrakerPrinter:
    return MoonrakerPrinter(
        "fdm-mr", base_url=url, api_key=key, control_public_key_pem=SIGNER.public_key_pem,
        clock=ManualClock(START), slicer=site_slicer, supervised=supervised, poll_s=60.0,
    )  # fmt: skip


def test_a_build_through_moonraker(moonraker: tuple[FakeMoonraker, str]) -> None:
    fake, url = moonraker
    result = _printer(url, supervised=True).execute(_ticket(approved=True))
    # the site sliced the signed STL: the G-code names its hash; it was uploaded and started
    [(name, gcode)] = fake.files.items()
    assert name == "flowmeter-S-20mls-x1.gcode" and fake.started == name
    assert f"source sha256 {DESIGN['design_file']['sha256']}".encode() in gcode
    assert any(hashlib.sha256(gcode).hexdigest() in e for e in result.events)
    # four polls a minute apart; telemetry as Klipper reports it
    assert result.finished_at - result.started_at == timedelta(minutes=4)
    metrics = ("nozzle_temperature_c", "bed_temperature_c", "extrusion_rate_mm3_s", "layer")
    by = {m: [r.value for r in result.telemetry if r.metric == m] for m in metrics}
    assert by["nozzle_temperature_c"] == [240.3] * 4 and by["bed_temperature_c"] == [79.8] * 4
    # 3.3 mm/s of 1.75 mm filament: 3.3 × π × 0.875² = 3.3 × 2.405282 = 7.937 mm³/s
    assert by["extrusion_rate_mm3_s"] == [pytest.approx(3.3 * math.pi * 0.875**2, abs=1e-3)] * 4
    assert by["layer"] == [115.0, 230.0, 345.0, 460.0]
    kit = DeviceFamily().machines
    doc = kit.check_measurements(kit.measurement_document(result))
    assert doc["layers"] == LAYERS and doc["devices"] == [{}]


def test_moonraker_refusals(moonraker: tuple[FakeMoonraker, str]) -> None:
    fake, url = moonraker
    with pytest.raises(TicketRejected) as caught:
        _printer(url, supervised=True).execute(_ticket())
    assert caught.value.code == "build_not_approved" and fake.requests == []
    with pytest.raises(PrinterError, match="401"):
        _printer(url, key="wrong").execute(_ticket())
    assert fake.files == {}
    fake.state_after_start = "error"
    with pytest.raises(PrinterError, match="Timer too close"):
        _printer(url).execute(_ticket())
