"""What the device family's real-printer adapters share (OctoPrint, octoprint.py; Moonraker,
moonraker.py): an HTTP(S) server with an API key (`X-Api-Key`), the family's admission check
(`admit_build`) before anything reaches the printer, polling on the platform's clock until the
print is done or the time allowed runs out, and the RunResult of a print whose devices come back
without in-line results (entered later as laboratory results).
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nearfab.common.clock import Clock
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.families.device.machines import admit_build
from nearfab.production.machines import RunResult, TelemetryReading, UnitMeasurement
from nearfab.production.tickets import SignedTicket

if TYPE_CHECKING:  # typing.Unpack and NotRequired for **kwargs are 3.12's; only mypy reads them
    from typing import NotRequired

    from typing_extensions import TypedDict

    class PrinterArguments(TypedDict):
        """The keyword arguments every HTTP printer takes (HttpPrinter.__init__)."""

        base_url: str
        api_key: str
        control_public_key_pem: str
        clock: Clock
        supervised: NotRequired[bool]
        poll_s: NotRequired[float]
        timeout_s: NotRequired[float]
        firmware: NotRequired[str]


class PrinterError(Refused):
    """The printer (or its server) refused or failed the job."""

    code = "printer_error"


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file part, and its boundary."""
    boundary = "nearfab" + secrets.token_hex(12)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), boundary


class HttpPrinter:
    """Base of an FDM printer driven through an HTTP server; `server` names it in errors,
    `default_firmware` is the record's firmware unless `firmware` says otherwise. A subclass
    takes its own keyword arguments besides `**printer: Unpack[PrinterArguments]`."""

    server = "printer"
    default_firmware = "printer"

    def __init__(
        self,
        machine_id: str,
        *,
        base_url: str,
        api_key: str,
        control_public_key_pem: str,
        clock: Clock,
        supervised: bool = False,
        poll_s: float = 30.0,
        timeout_s: float = 6 * 3600.0,
        firmware: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValidationFailed("base_url must be an http(s) URL", field="base_url")
        self.machine_id = machine_id
        self.firmware = firmware if firmware is not None else self.default_firmware
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._public_key_pem = control_public_key_pem
        self._clock = clock
        self.supervised = supervised
        self._poll_s = poll_s
        self._timeout_s = timeout_s
        self._executed: set[str] = set()

    def _send(
        self, method: str, path: str, *, body: bytes | None, content_type: str
    ) -> tuple[int, bytes]:
        """(status, body) of one request with the API key; PrinterError on an HTTP error or an
        unreachable server."""
        request = urllib.request.Request(self._base + path, data=body, method=method)
        request.add_header("X-Api-Key", self._key)
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            # base_url is checked to be http(s) in __init__
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:200]
            raise PrinterError(
                f"{self.server} answered {method} {path} with {exc.code}: {detail}",
                field="printer",
            ) from None
        except OSError as exc:
            raise PrinterError(
                f"{self.server} at {self._base} unreachable: {exc}", field="printer"
            ) from None

    def _admit(self, ticket: SignedTicket) -> tuple[Mapping[str, Any], bytes]:
        """The family's admission check (machines.admit_build): the design and the file's bytes."""
        return admit_build(
            ticket, self._public_key_pem, machine_id=self.machine_id, now=self._clock.now(),
            executed=self._executed, supervised=self.supervised,
        )  # fmt: skip

    def _wait(self, poll: Callable[[], tuple[bool, str]]) -> None:
        """Every `poll_s` of the clock, `poll()` (reads the printer: (done, its state)) until
        done; PrinterError once `timeout_s` has passed without it."""
        waited = 0.0
        while True:
            self._clock.sleep(self._poll_s)
            waited += self._poll_s
            done, state = poll()
            if done:
                return
            if waited >= self._timeout_s:
                raise PrinterError(
                    f"no finished print after {self._timeout_s:g} s (state {state!r})",
                    field="printer",
                )

    def _result(
        self,
        ticket: SignedTicket,
        design: Mapping[str, Any],
        started: datetime,
        telemetry: list[TelemetryReading],
        events: list[str],
    ) -> RunResult:
        clock = self._clock
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
