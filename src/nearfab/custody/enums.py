"""Serialised unit states, verification answers, EPCIS vocabulary and ledger entry kinds."""

from __future__ import annotations

from enum import StrEnum


class UnitStatus(StrEnum):
    QUARANTINE = "quarantine"
    RELEASED = "released"
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    RECALLED = "recalled"
    # physically destroyed (rejected, recalled or expired packs only); final
    DESTROYED = "destroyed"


UNIT_TRANSITIONS: dict[UnitStatus, frozenset[UnitStatus]] = {
    # a recall reaches packs still in quarantine too (they must never be released)
    # quarantine -> destroyed: only once past its expiry (checked by the service)
    UnitStatus.QUARANTINE: frozenset(
        {UnitStatus.RELEASED, UnitStatus.REJECTED, UnitStatus.RECALLED, UnitStatus.DESTROYED}
    ),
    # released -> destroyed: only once the pack is past its expiry (checked by the service)
    UnitStatus.RELEASED: frozenset(
        {UnitStatus.DISPENSED, UnitStatus.RECALLED, UnitStatus.DESTROYED}
    ),
    # dispensed -> released: undo of a decommission (within 10 days, never expired/recalled)
    UnitStatus.DISPENSED: frozenset({UnitStatus.RECALLED, UnitStatus.RELEASED}),
    UnitStatus.REJECTED: frozenset({UnitStatus.DESTROYED}),
    UnitStatus.RECALLED: frozenset({UnitStatus.DESTROYED}),
    UnitStatus.DESTROYED: frozenset(),
}


class VerifyStatus(StrEnum):
    """The one answer of a verification at dispense (EU 2016/161 style)."""

    OK = "ok"
    WRONG_PATIENT = "wrong_patient"
    EXPIRED = "expired"
    RECALLED = "recalled"
    NOT_RELEASED = "not_released"
    REJECTED = "rejected"
    ALREADY_DISPENSED = "already_dispensed"
    UNKNOWN = "unknown"  # never made in this network, or the label does not match: falsified?
    # the pack's row says released but its signed facts (ledgered QP release) disagree
    INTEGRITY_FAILURE = "integrity_failure"
    # held at a hand-over or by a storage excursion until a QP judges it (chain of identity)
    HELD = "held"
    IN_USE_EXPIRED = "in_use_expired"  # prepared too long ago: its in-use period has ended


class LedgerKind(StrEnum):
    EPCIS = "epcis"  # a custody event (its canonical JSON-LD)
    RELEASE = "release"  # a QP release decision
    ANCHOR = "anchor"  # the control site recording a site's chain head
    KEY = "key"  # a site key introduced (rotation)
    AUDIT_CHECKPOINT = "audit_checkpoint"  # a signed checkpoint of the audit and ledger heads


class AlertKind(StrEnum):
    SECOND_DISPENSE = "second_dispense"
    SUSPECTED_FALSIFIED = "suspected_falsified"
    # a pack's record differs from what was signed at release: the database was tampered with
    INTEGRITY_FAILURE = "integrity_failure"
    # a pack dispensed at a site node on what it last received, found recalled or rejected once
    # the control site's records arrived: the patient must be contacted (docs/replication.md)
    DISPENSED_THEN_RECALLED = "dispensed_then_recalled"


class ContainerStatus(StrEnum):
    PACKED = "packed"
    UNPACKED = "unpacked"


class RecallStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


# CBV 2.0 business steps and dispositions nearfab emits
class BizStep(StrEnum):
    COMMISSIONING = "commissioning"
    CREATING_CLASS_INSTANCE = "creating_class_instance"
    INSPECTING = "inspecting"
    SHIPPING = "shipping"
    RECEIVING = "receiving"
    PACKING = "packing"
    UNPACKING = "unpacking"
    DISPENSING = "dispensing"
    DESTROYING = "destroying"
    HOLDING = "holding"
    SENSOR_REPORTING = "sensor_reporting"


class Disposition(StrEnum):
    ACTIVE = "active"
    SELLABLE_NOT_ACCESSIBLE = "sellable_not_accessible"
    SELLABLE_ACCESSIBLE = "sellable_accessible"
    NON_SELLABLE_OTHER = "non_sellable_other"
    IN_TRANSIT = "in_transit"
    IN_PROGRESS = "in_progress"
    DISPENSED = "dispensed"
    DESTROYED = "destroyed"
    RECALLED = "recalled"
    CONTAINER_CLOSED = "container_closed"
