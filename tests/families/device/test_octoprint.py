"""The OctoPrint adapter against a fake OctoPrint that speaks the documented REST API
(docs.octoprint.org, REST API: "Upload file or create folder" POST /api/files/local, multipart
with a `file` part, 201 with `files.local.name`; "Issue a file command" POST
/api/files/{location}/{path} with `slice` and `print`, 202; "Retrieve information about the
current job" GET /api/job with `state` and `progress.completion`; "Retrieve the current printer
state" GET /api/printer with `temperature.tool0/bed.actual`; every request authenticated by
`X-Api-Key`, 403 otherwise). The server is a real HTTP server on a local port: the adapter's
HTTP is exercised, nothing of ours is mocked."""

from __future__ import annotations

import hashlib
import json
import threading
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
from nearfab.families.device.octoprint import OctoPrintPrinter, PrinterError
from nearfab.production import TicketSigner
from nearfab.production.tickets import TicketRejected

API_KEY = "0123456789ABCDEF0123456789ABCDEF"
START = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
SIGNER = TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex("17" * 32)))
DESIGN = design_flowmeter(qmax_ml_s=25, size="M", units=1, envelope=Envelope.from_dict(ENVELOPE))


class FakeOctoPrint:
    """What the fake server knows: the files uploaded, the job, how many polls a print takes."""

    def __init__(self, polls_to_finish: int = 3, fail_with: str | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.job: dict[str, Any] | None = None
        self.polls = 0
        self.polls_to_finish = polls_to_finish
        self.fail_with = fail_with


def _handler(state: FakeOctoPrint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            return None

        def _send(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            state.requests.append((self.command, self.path))
            if self.headers.get("X-Api-Key") != API_KEY:
                self._send(403, {"error": "Forbidden"})
                return False
            return True

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            if not self._authorised():
                return
            if self.path == "/api/version":
                self._send(200, {"api": "0.1", "server": "1.11.2", "text": "OctoPrint 1.11.2"})
            elif self.path == "/api/printer":
                printing = state.job is not None
                self._send(200, {
                    "temperature": {
                        "tool0": {"actual": 239.6, "target": 240.0, "offset": 0},
                        "bed": {"actual": 80.2, "target": 80.0, "offset": 0},
                    },
                    "state": {"text": "Printing" if printing else "Operational",
                              "flags": {"operational": True, "printing": printing}},
                })  # fmt: skip
            elif self.path == "/api/job":
                state.polls += 1
                done = min(100.0, 100.0 * state.polls / state.polls_to_finish)
                if state.fail_with and state.polls >= 2:
                    status = state.fail_with
                else:
                    status = "Operational" if done >= 100 else "Printing"
                self._send(200, {
                    "job": {"file": {"name": (state.job or {}).get("gcode"), "origin": "local"}},
                    "progress": {"completion": done, "printTime": 60 * state.polls},
                    "state": status,
                })  # fmt: skip
            else:
                self._send(404, {"error": "Not found"})

        def do_POST(self) -> None:
            if not self._authorised():
                return
            body = self._body()
            if self.path == "/api/files/local":
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                message = BytesParser(policy=HTTP).parsebytes(head + body)
                parts = [
                    p
                    for p in message.iter_parts()
                    if p.get_param("name", header="content-disposition") == "file"
                ]
                if not parts:
                    self._send(400, {"error": "No file included"})
                    return
                name = str(parts[0].get_filename())
                state.files[name] = parts[0].get_payload(decode=True)
                resource = f"http://example.com/api/files/local/{name}"
                local = {"name": name, "origin": "local", "refs": {"resource": resource}}
                self._send(201, {"done": True, "files": {"local": local}})
            elif self.path.startswith("/api/files/local/"):
                name = self.path.removeprefix("/api/files/local/")
                command = json.loads(body)
                if name not in state.files:
                    self._send(404, {"error": "File not found"})
                elif command.get("command") != "slice" or not command.get("print"):
                    self._send(400, {"error": "Unknown command"})
                else:
                    state.job = {"gcode": command["gcode"], "slicer": command["slicer"]}
                    self._send(202, None)
            else:
                self._send(404, {"error": "Not found"})

    return Handler


@pytest.fixture
def octoprint() -> Iterator[tuple[FakeOctoPrint, str]]:
    state = FakeOctoPrint()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _ticket(*, approved: bool = False) -> Any:
    payload: dict[str, Any] = {
        "ticket_id": "T-op",
        "job_id": "job_op",
        "machine_id": "fdm-op",
        "expires_at": (START + timedelta(days=1)).isoformat(),
        "design": DESIGN,
    }
    if approved:
        payload["build_approval"] = {"site_kind": "home", "role": "qp", "by": "usr_rp"}
    return SIGNER.sign(payload)


def _printer(url: str, *, key: str = API_KEY, supervised: bool = False) -> OctoPrintPrinter:
    return OctoPrintPrinter(
        "fdm-op", base_url=url, api_key=key, control_public_key_pem=SIGNER.public_key_pem,
        clock=ManualClock(START), supervised=supervised, poll_s=60.0,
    )  # fmt: skip


def test_a_build_through_octoprint(octoprint: tuple[FakeOctoPrint, str]) -> None:
    state, url = octoprint
    result = _printer(url).execute(_ticket())
    # the file OctoPrint received is the one whose hash the control site signed
    [(name, data)] = state.files.items()
    assert name == "flowmeter-M-25mls-x1.stl"
    assert hashlib.sha256(data).hexdigest() == DESIGN["design_file"]["sha256"]
    assert state.job == {"gcode": "flowmeter-M-25mls-x1.gcode", "slicer": "curalegacy"}
    # three polls of a minute each: done at 100 %, with the temperatures each time
    assert result.firmware == "OctoPrint 1.11.2"
    assert (result.finished_at - result.started_at) == timedelta(minutes=3)
    nozzle = [r.value for r in result.telemetry if r.metric == "nozzle_temperature_c"]
    progress = [r.value for r in result.telemetry if r.metric == "progress_pct"]
    assert nozzle == [239.6] * 3 and progress == pytest.approx([100 / 3, 200 / 3, 100.0])
    # the batch record keeps one untested device: the release's checks say so
    kit = DeviceFamily().machines
    doc = kit.check_measurements(kit.measurement_document(result))
    assert kit.units_made(doc) == 1 and doc["devices"] == [{}] and doc["coupon"] is None
    assert doc["design_sha256"] == DESIGN["design_file"]["sha256"]


def test_octoprint_refusals(octoprint: tuple[FakeOctoPrint, str]) -> None:
    state, url = octoprint
    # an unapproved build never reaches a supervised printer
    with pytest.raises(TicketRejected) as caught:
        _printer(url, supervised=True).execute(_ticket())
    assert caught.value.code == "build_not_approved" and state.requests == []
    # a wrong API key: OctoPrint's 403, named
    with pytest.raises(PrinterError, match="403"):
        _printer(url, key="wrong").execute(_ticket())
    assert state.files == {}
    # the printer goes into error mid-print
    state.fail_with = "Error: Heating failed, system stopped!"
    with pytest.raises(PrinterError, match="Heating failed"):
        _printer(url, supervised=True).execute(_ticket(approved=True))
