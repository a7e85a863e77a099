"""Electronic batch records and their steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Dialect, ForeignKey, String, Text, UniqueConstraint, inspect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import Null
from sqlalchemy.types import TypeDecorator

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.db import Base


class CanonicalJSON(TypeDecorator[Any]):
    """A JSON column whose stored text is the canonical JSON of its value (sorted keys, no
    spaces, UTF-8 as is: `common.canonical.canonical_json`), read back as JSON is. Stored so,
    the text is exactly the bytes a record's content hash covers, so a check can hash the
    text as stored instead of decoding and re-encoding it (`BatchRecord.content`,
    `stored_telemetry`). PostgreSQL's `json` keeps the text as given; SQLite stores it as
    text. A Python None is stored as JSON `null`, as the plain JSON type stores it."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        def process(value: Any) -> str | None:
            if value is JSON.NULL or isinstance(value, Null):
                return None
            return canonical_json(value).decode("utf-8")

        return process


class BatchRecord(Base):
    """The electronic batch record of one job: who, what, with which material, machine evidence."""

    __tablename__ = "batch_records"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    batch_number: Mapped[str] = mapped_column(String(20), unique=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    master_file_id: Mapped[str] = mapped_column(ForeignKey("master_files.id"))
    master_file_code: Mapped[str] = mapped_column(String(64))
    master_file_version: Mapped[int]
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    machine_firmware: Mapped[str] = mapped_column(String(64))
    material_lot_id: Mapped[str] = mapped_column(ForeignKey("material_lots.id"))
    material_lot_number: Mapped[str] = mapped_column(String(64))
    material_used_g: Mapped[float]
    operator_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    ticket_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), index=True)
    design: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    # when the signed ticket went to the machine: a batch is handed over once, by one worker
    handed_over_at: Mapped[datetime | None]
    # until when the machine's run counts as alive: set at hand-over, renewed by each machine
    # report; once past with no report, the runner's sweep abandons the batch as orphaned
    lease_expires_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # the family's measurement document of the run (validated by the family's machines part:
    # production.kit.MachineKit), and how many units the machine made
    measurements: Mapped[dict[str, Any] | None]
    units_made: Mapped[int | None]
    telemetry_summary: Mapped[dict[str, Any] | None]
    # stored as canonical JSON: the text is what the record's `telemetry_sha256` hashes
    telemetry: Mapped[list[Any] | None] = mapped_column(CanonicalJSON())
    cpp_excursions: Mapped[list[Any] | None]
    machine_events: Mapped[list[Any] | None]
    failure_reason: Mapped[str | None] = mapped_column(Text)

    def content(self, *, stored_telemetry: str | None = None) -> dict[str, Any]:
        """What a QP's release signature is bound to: the record's evidence. The measurement
        document's keys sit at the top level, as the per-unit evidence did before the document
        existed, so a signature made then still verifies (production refuses a document whose
        keys would collide with the record's own).

        `stored_telemetry`: the telemetry column's text as the database holds it, read with
        the record and not decoded (`telemetry_unloaded`): its SHA-256 stands for
        `telemetry_sha256` without decoding and re-encoding thousands of readings. That is the
        hash of the canonical JSON only when the text was stored canonically (`CanonicalJSON`;
        not a record written before it was, nor text changed behind the application's back),
        so a check that finds this content does not match what was signed must check again
        with `content()`: a match is sound (the text is then byte for byte the canonical JSON
        of the signed readings), a mismatch says nothing."""
        telemetry_sha256 = (
            sha256_hex(stored_telemetry)
            if stored_telemetry is not None
            else sha256_hex(canonical_json(self.telemetry or []))
        )
        return {
            **(self.measurements or {}),
            "id": self.id,
            "batch_number": self.batch_number,
            "order_id": self.order_id,
            "master_file": f"{self.master_file_code} v{self.master_file_version}",
            "site_id": self.site_id,
            "machine_id": self.machine_id,
            "machine_firmware": self.machine_firmware,
            "material_lot_number": self.material_lot_number,
            "operator_id": self.operator_id,
            "ticket_hash": self.ticket_hash,
            "design": self.design,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "telemetry_summary": self.telemetry_summary,
            "cpp_excursions": self.cpp_excursions,
            "machine_events": self.machine_events,
            "material_used_g": self.material_used_g,
            # the raw readings are bound through their hash (thousands of points)
            "telemetry_sha256": telemetry_sha256,
        }

    def telemetry_unloaded(self) -> bool:
        """Whether this object has not loaded its telemetry (a query deferred it): the text
        the database holds is then the record's telemetry, no change of it pending here."""
        return "telemetry" in inspect(self).unloaded

    @staticmethod
    def stored_telemetry(text: str | None) -> str | None:
        """The telemetry column's stored text as `content(stored_telemetry=...)` takes it;
        None for no readings (`content()` hashes those as an empty list, not `null`)."""
        return None if text is None or text == "null" else text


class BatchStep(Base):
    __tablename__ = "batch_steps"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    seq: Mapped[int]
    name: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_name: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None]


class StepSignoff(Base):
    """A manual batch-record step of the master file, performed and e-signed by a person
    ("performed by"), and for a critical entry verified and e-signed by a second person
    ("verified by"). One row per step and batch."""

    __tablename__ = "batch_step_signoffs"
    __table_args__ = (UniqueConstraint("batch_id", "code"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: two verifiers at once cannot both sign
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    code: Mapped[str] = mapped_column(String(32))
    position: Mapped[int]  # 1-based place in the master file's list
    title: Mapped[str] = mapped_column(String(200))
    critical: Mapped[bool]
    entry: Mapped[dict[str, Any] | None]
    performed_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    performed_by_name: Mapped[str] = mapped_column(String(200))
    performed_at: Mapped[datetime]
    performed_meaning: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[str] = mapped_column(String(32))
    # the open deviation that allowed signing it before an earlier step was done
    deviation_id: Mapped[str | None] = mapped_column(String(32))
    verified_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    verified_by_name: Mapped[str | None] = mapped_column(String(200))
    verified_at: Mapped[datetime | None]
    verified_meaning: Mapped[str | None] = mapped_column(String(200))
    verify_signature_id: Mapped[str | None] = mapped_column(String(32))

    def content(self) -> dict[str, Any]:
        """What the performer signs (and, with the performer named, the verifier)."""
        return {
            "batch_id": self.batch_id,
            "code": self.code,
            "position": self.position,
            "title": self.title,
            "critical": self.critical,
            "entry": self.entry,
            "performed_by": self.performed_by,
            "performed_at": self.performed_at,
            "deviation_id": self.deviation_id,
        }
