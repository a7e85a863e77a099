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
    # a control-site decision a site node acts on (replication: a QP's decision on a site
    # node's batch), signed in the control's chain: its body names the decision's SHA-256
    DECISION = "decision"
    # a site node's release dossier sent to the control's QP, signed in the site's chain: its
    # body names the dossier's SHA-256 (replication: the control signs nothing else)
    DOSSIER = "dossier"
    # a node anchoring the replicated records it holds of another node (replication's
    # `inbox anchor`): the origin, the last record's seq and hash, the chain heads it carries
    REPLICA_ANCHOR = "replica_anchor"


class AlertKind(StrEnum):
    SECOND_DISPENSE = "second_dispense"
    SUSPECTED_FALSIFIED = "suspected_falsified"
    # a pack's record differs from what was signed at release: the database was tampered with
    INTEGRITY_FAILURE = "integrity_failure"
    # a pack dispensed at a site node on what it last received, found recalled or rejected once
    # the control site's records arrived: the patient must be contacted (docs/replication.md)
    DISPENSED_THEN_RECALLED = "dispensed_then_recalled"


class AlertStatus(StrEnum):
    """Where the follow-up of a custody alert stands (docs/custody.md, "Following up an
    alert"). Every change is made by `custody.services.alerts.AlertActions.update`, with a
    note, who and when, and its audit row in the same transaction."""

    OPEN = "open"  # raised; nobody has taken it on yet
    ACKNOWLEDGED = "acknowledged"  # a pharmacist of its site has taken it on
    PATIENT_CONTACTED = "patient_contacted"
    PACK_RECOVERED = "pack_recovered"
    PACK_NOT_RECOVERABLE = "pack_not_recoverable"
    CLOSED = "closed"  # with an outcome (AlertOutcome) and a note saying what was done


ALERT_TRANSITIONS: dict[AlertStatus, frozenset[AlertStatus]] = {
    # someone takes it on first: the site sees who owns the follow-up
    AlertStatus.OPEN: frozenset({AlertStatus.ACKNOWLEDGED}),
    # a pack may come back without a call (the patient brings it in), or the alert may be
    # closed at once (a scan that was a mistake): the outcome then says so
    AlertStatus.ACKNOWLEDGED: frozenset(
        {
            AlertStatus.PATIENT_CONTACTED,
            AlertStatus.PACK_RECOVERED,
            AlertStatus.PACK_NOT_RECOVERABLE,
            AlertStatus.CLOSED,
        }
    ),
    AlertStatus.PATIENT_CONTACTED: frozenset(
        {AlertStatus.PACK_RECOVERED, AlertStatus.PACK_NOT_RECOVERABLE, AlertStatus.CLOSED}
    ),
    AlertStatus.PACK_RECOVERED: frozenset({AlertStatus.CLOSED}),
    AlertStatus.PACK_NOT_RECOVERABLE: frozenset({AlertStatus.CLOSED}),
    # reopening is its own explicit step (back to acknowledged, a note giving the reason,
    # audited as a reopening): never a side effect of another change. Not final, because the
    # deferred verification raises one alert per pack only (replication.decisions): a closed
    # alert is the only place where more work on that pack can be recorded
    AlertStatus.CLOSED: frozenset({AlertStatus.ACKNOWLEDGED}),
}


class AlertOutcome(StrEnum):
    """What closing an alert says happened to the pack."""

    PACK_RECOVERED = "pack_recovered"
    PACK_NOT_RECOVERABLE = "pack_not_recoverable"
    # nothing to recover: the scan was a mistake, the pack never left the pharmacy, ...
    # (never for a pack dispensed then recalled: that pack is with its patient)
    NO_ACTION_NEEDED = "no_action_needed"


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
