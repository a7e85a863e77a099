"""Serialised units (one patient pack each), dispense records, EPCIS events, the custody
ledger, site keys and locations, recalls and alerts."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class SerialUnit(Base):
    """A pack with its GS1 identity: GTIN (01), serial (21), batch (10), expiry (17)."""

    __tablename__ = "serial_units"
    __table_args__ = (
        UniqueConstraint("gtin", "serial"),
        # a batch is serialised once, even if two workers try at the same moment
        UniqueConstraint("batch_id", "pack_index"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    batch_id: Mapped[str] = mapped_column(ForeignKey("batch_records.id"), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    pack_index: Mapped[int]
    quantity: Mapped[int]  # units in the pack, counted as the product's family counts them
    gtin: Mapped[str] = mapped_column(String(14))
    serial: Mapped[str] = mapped_column(String(20))
    batch_number: Mapped[str] = mapped_column(String(20))
    expiry: Mapped[date]
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class Dispense(Base):
    __tablename__ = "dispenses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), unique=True)
    patient_id: Mapped[str] = mapped_column(ForeignKey("patients.id"))
    dispensed_at: Mapped[datetime]
    dispensed_by: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str | None] = mapped_column(String(32))


class SiteLocation(Base):
    """A site's GS1 Global Location Number (its SGLN is readPoint / bizLocation)."""

    __tablename__ = "custody_site_locations"

    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    gln: Mapped[str] = mapped_column(String(13), unique=True)
    company_prefix_length: Mapped[int]
    assigned_at: Mapped[datetime]


class EpcisEvent(Base):
    """One EPCIS 2.0 event, made here or captured from a partner; id = its event hash."""

    __tablename__ = "custody_epcis_events"
    __table_args__ = (
        Index("ix_custody_epcis_time", "event_time"),
        Index("ix_custody_epcis_biz_step", "biz_step"),
    )

    event_hash: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(Text)  # the event's own eventID (or its hash)
    event_type: Mapped[str] = mapped_column(String(32))
    event_time: Mapped[datetime]
    record_time: Mapped[datetime]
    action: Mapped[str | None] = mapped_column(String(16))
    biz_step: Mapped[str | None] = mapped_column(String(200))
    disposition: Mapped[str | None] = mapped_column(String(200))
    read_point: Mapped[str | None] = mapped_column(String(300), index=True)
    biz_location: Mapped[str | None] = mapped_column(String(300), index=True)
    site_id: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))  # nearfab | capture
    body: Mapped[dict[str, Any]]  # the event as JSON-LD, with "@context" when captured


class EpcisEpc(Base):
    """Every identifier an event names (EPCs, parent, inputs, outputs, quantity classes),
    canonical Digital Link form, for queries and trace."""

    __tablename__ = "custody_epcis_epcs"
    __table_args__ = (Index("ix_custody_epc", "epc"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_hash: Mapped[str] = mapped_column(
        ForeignKey("custody_epcis_events.event_hash"), index=True
    )
    epc: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16))


class SiteKey(Base):
    """A site's Ed25519 ledger key; the private half encrypted with the data folder's key.
    Retired keys stay for verification of what they signed."""

    __tablename__ = "custody_site_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class LedgerEntry(Base):
    """One link of a site's hash chain: hash(prev_hash, canonical payload), signed."""

    __tablename__ = "custody_ledger"
    __table_args__ = (UniqueConstraint("site_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    seq: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(100), index=True)
    recorded_at: Mapped[datetime]
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, exactly as hashed
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(ForeignKey("custody_site_keys.key_id"))
    signature: Mapped[str] = mapped_column(String(128))


class Recall(Base):
    __tablename__ = "custody_recalls"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))  # lot | batch | master_file | machine
    scope_ref: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))


class RecallUnit(Base):
    __tablename__ = "custody_recall_units"
    __table_args__ = (UniqueConstraint("recall_id", "unit_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    recall_id: Mapped[str] = mapped_column(ForeignKey("custody_recalls.id"), index=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), index=True)
    status_before: Mapped[str] = mapped_column(String(32))


class CustodyAlert(Base):
    """Something a pharmacist or QA must look at: a second dispense, a suspected falsified
    pack, a pack dispensed then recalled. Its follow-up status (`AlertStatus`) with who moved
    it last and when; each step is a `CustodyAlertAction` (migration 0031)."""

    __tablename__ = "custody_alerts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: two people acting on one alert at once cannot both succeed
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    kind: Mapped[str] = mapped_column(String(32))
    unit_id: Mapped[str | None] = mapped_column(String(32))
    scan: Mapped[str] = mapped_column(String(200))
    raised_at: Mapped[datetime]
    raised_by: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(32), server_default="open", default="open")
    status_changed_at: Mapped[datetime | None]
    status_changed_by: Mapped[str | None] = mapped_column(String(64))


class CustodyAlertAction(Base):
    """One step of an alert's follow-up: the status it left and reached, the note (and, on
    closing, the outcome), who and when. Kept for good: the alert's history."""

    __tablename__ = "custody_alert_actions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(ForeignKey("custody_alerts.id"), index=True)
    from_status: Mapped[str] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text)
    acted_at: Mapped[datetime]
    acted_by: Mapped[str] = mapped_column(String(64))  # user id
    acted_by_name: Mapped[str] = mapped_column(String(200))  # their name when they acted
    site_id: Mapped[str | None] = mapped_column(String(32))  # the actor's home site


class Container(Base):
    """A shipping container (logistic unit) with its SSCC: packs of released batches packed at
    the making site for one destination site, unpacked on receipt there."""

    __tablename__ = "custody_containers"

    sscc: Mapped[str] = mapped_column(String(18), primary_key=True)
    from_site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    to_site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # packed | unpacked
    packed_at: Mapped[datetime]
    packed_by: Mapped[str] = mapped_column(String(64))
    unpacked_at: Mapped[datetime | None]
    unpacked_by: Mapped[str | None] = mapped_column(String(64))


class ContainerUnit(Base):
    """A pack in a container (kept after unpacking, as history)."""

    __tablename__ = "custody_container_units"
    __table_args__ = (UniqueConstraint("sscc", "unit_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    sscc: Mapped[str] = mapped_column(ForeignKey("custody_containers.sscc"), index=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), index=True)


class HandOver(Base):
    """One hand-over of a unit between two steps of its family's chain, with the identity the
    giving and the receiving side each scanned; a refused one stops the chain (a hold)."""

    __tablename__ = "custody_hand_overs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), index=True)
    from_step: Mapped[str] = mapped_column(String(32))
    to_step: Mapped[str] = mapped_column(String(32))
    giver_scan: Mapped[str] = mapped_column(String(200))
    receiver_scan: Mapped[str] = mapped_column(String(200))
    # the family's chain identifier as each side scanned it, and whether the patient's
    # identity was checked (the hand-over to the chain's last step, at the bedside): 0025
    giver_identifier: Mapped[str | None] = mapped_column(String(64))
    receiver_identifier: Mapped[str | None] = mapped_column(String(64))
    patient_checked: Mapped[bool] = mapped_column(default=False, server_default=false())
    outcome: Mapped[str] = mapped_column(String(16))  # accepted | refused
    reason: Mapped[str | None] = mapped_column(Text)
    handed_at: Mapped[datetime]
    handed_by: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str | None] = mapped_column(String(32))


class UnitHold(Base):
    """A unit held (quarantined) by a refused hand-over or a storage excursion: nothing moves
    it further (hand-over, administration) until a QP judges it (resume or reject)."""

    __tablename__ = "custody_unit_holds"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), index=True)
    source: Mapped[str] = mapped_column(String(16))  # hand_over | storage
    reason: Mapped[str] = mapped_column(Text)
    held_at: Mapped[datetime]
    held_by: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str | None] = mapped_column(String(16))  # resume | reject
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decision_reason: Mapped[str | None] = mapped_column(Text)


class StorageReading(Base):
    """One storage log reading of a unit in storage or shipment, judged by its family."""

    __tablename__ = "custody_storage_readings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), index=True)
    value: Mapped[float]
    unit: Mapped[str] = mapped_column(String(16))  # UCUM, e.g. Cel
    read_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str] = mapped_column(String(64))
    excursion: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(Text)
    hold_id: Mapped[str | None] = mapped_column(String(32))


class InUsePeriod(Base):
    """A unit prepared for use: its in-use period starts then and ends at `use_by` (None: the
    family sets no limit). A unit is prepared once."""

    __tablename__ = "custody_in_use_periods"

    unit_id: Mapped[str] = mapped_column(ForeignKey("serial_units.id"), primary_key=True)
    prepared_at: Mapped[datetime]
    prepared_by: Mapped[str] = mapped_column(String(64))
    use_by: Mapped[datetime | None]
