"""Response schemas of the chain of custody: packs, dispense, verification, containers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from nearfab.common.schemas import Day, Out, Timestamp
from nearfab.orders import PatientMatchOut


class UnitOut(Out):
    """A pack (serialised unit) with its GS1 identity."""

    id: str
    pack_index: int
    quantity: int
    status: str
    gtin: str
    serial: str
    batch_number: str
    expiry: Day
    element_string: str
    digital_link: str
    batch_id: str


class DispenseOut(Out):
    dispense_id: str
    unit_id: str
    serial: str
    status: str
    order_complete: bool
    # how the patient was identified (name and birth date for roles that may see identity)
    patient: PatientMatchOut | None = None


class VerifyOut(Out):
    """One answer to a scan (`status` is one of the verification statuses)."""

    status: str
    message: str
    unit_id: str | None
    gtin: str | None
    serial: str | None
    batch: str | None
    expiry: Day | None
    unit_status: str | None
    dispensed_at: Timestamp | None
    alert_id: str | None
    patient: PatientMatchOut | None = None  # the patient check, when identifiers were given


class UndoDispenseOut(Out):
    unit_id: str
    serial: str
    status: str


class ContainerUnitOut(Out):
    unit_id: str
    serial: str


class ContainerOut(Out):
    """A shipping container (SSCC) and the packs in it."""

    sscc: str
    digital_link: str
    status: str
    from_site_id: str
    to_site_id: str
    units: list[ContainerUnitOut]


class DestroyOut(Out):
    event_id: str
    unit_ids: list[str]
    status: str


class RecallCreatedOut(Out):
    recall_id: str
    lot: str
    units: int
    rows: list[dict[str, Any]]


class LedgerProblemOut(Out):
    site_id: str
    seq: int
    entry_id: int | None
    reason: str
    text: str


class LedgerAnchorOut(Out):
    """The control site's latest anchor of one site's chain."""

    control_site_id: str
    anchor_seq: int
    seq: int
    head: str
    recorded_at: Timestamp


class LedgerChainOut(Out):
    """One site's chain as checked."""

    site_id: str
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    last_anchor: LedgerAnchorOut | None
    last_anchor_ok: bool | None
    first_bad: LedgerProblemOut | None


class LedgerReportOut(Out):
    """The custody ledger check: every site's hash chain, signatures and anchors."""

    ok: bool
    entries: int
    sites: int
    first_bad: LedgerProblemOut | None
    problems: list[str]
    chains: list[LedgerChainOut]


class TracedUnitOut(Out):
    """A pack found by a forward trace: where it was made and where it went."""

    unit_id: str
    gtin: str
    serial: str
    batch_id: str
    batch_number: str
    expiry: Day
    status: str
    patient_ref: str
    made_at_site: str
    dispensed_at: Timestamp | None
    dispensed_at_site: str | None


class TraceCountsOut(Out):
    units: int
    patients: int
    dispensed: int


class ForwardTraceOut(Out):
    """Every pack made from a lot, on a machine in a window, or to a master-file version (of
    the sites the reader sees), with their patients and batches."""

    scope: str
    ref: str
    units: list[TracedUnitOut]
    patients: list[str]
    batches: list[str]
    counts: TraceCountsOut


class TracePackOut(Out):
    """The traced pack with its GS1 identity (`epc`: its SGTIN as a GS1 Digital Link)."""

    id: str
    gtin: str
    serial: str
    batch_number: str
    expiry: Day
    status: str
    pack_index: int
    quantity: int
    epc: str


class TraceBatchRecordOut(Out):
    id: str
    batch_number: str
    status: str
    started_at: Timestamp
    finished_at: Timestamp | None


class TraceMaterialLotOut(Out):
    id: str
    lot_number: str
    material_code: str | None
    supplier: str | None
    expiry: Day | None
    used_g: float


class TraceMachineOut(Out):
    id: str
    name: str | None
    type: str | None
    serial_number: str | None
    firmware: str


class TraceJobTicketOut(Out):
    job_id: str
    ticket_hash: str


class TraceOperatorOut(Out):
    id: str
    name: str | None


class TraceSiteOut(Out):
    id: str
    code: str | None
    name: str | None
    gln: str


class TraceMasterFileOut(Out):
    id: str
    code: str
    version: int


class TraceReleaseOut(Out):
    decision: str | None
    decided_by: str | None
    decided_at: Timestamp | None
    signature_id: str | None


class TraceDispenseOut(Out):
    at: Timestamp
    by: str
    site_id: str | None


class BackwardTraceOut(Out):
    """Everything one pack came from: material lot, machine and firmware, job ticket, batch
    record, operator, site, master-file version, release, dispense and its EPCIS events (as
    held, JSON-LD without `@context`; they were validated against the EPCIS schema when
    captured or made)."""

    unit: TracePackOut
    patient_ref: str | None
    order_id: str
    batch_record: TraceBatchRecordOut
    material_lots: list[TraceMaterialLotOut]
    machine: TraceMachineOut
    job_ticket: TraceJobTicketOut
    operator: TraceOperatorOut
    site: TraceSiteOut
    master_file: TraceMasterFileOut
    release: TraceReleaseOut | None
    dispense: TraceDispenseOut | None
    events: list[dict[str, Any]]


class EpcisCaptureOut(Out):
    """The answer to an EPCIS capture: how many events were stored, already held (same event
    hash) or corrected (an error declaration on a held event), and their event hashes."""

    stored: int
    duplicates: int
    corrections: int
    event_ids: list[str]
    duplicate_ids: list[str]


class EpcisResultsBodyOut(Out):
    # the events are EPCIS 2.0 JSON-LD as held (validated against the EPCIS JSON schema when
    # captured or made); their inside is the standard's, not declared again here
    event_list: list[dict[str, Any]] = Field(alias="eventList")


class EpcisQueryResultsOut(Out):
    query_name: Literal["SimpleEventQuery"] = Field(alias="queryName")
    results_body: EpcisResultsBodyOut = Field(alias="resultsBody")


class EpcisQueryBodyOut(Out):
    query_results: EpcisQueryResultsOut = Field(alias="queryResults")


class EpcisQueryDocumentOut(Out):
    """An EPCIS 2.0 EPCISQueryDocument answering a SimpleEventQuery (JSON-LD; the envelope
    is typed here, the events inside follow the EPCIS 2.0 JSON schema)."""

    context: list[str | dict[str, Any]] = Field(alias="@context")
    type: Literal["EPCISQueryDocument"]
    schema_version: Literal["2.0"] = Field(alias="schemaVersion")
    creation_date: Timestamp = Field(alias="creationDate")
    epcis_body: EpcisQueryBodyOut = Field(alias="epcisBody")


# --- the chain of identity: hand-overs, holds, the storage log, the in-use period -------------
class HandOverOut(Out):
    """One hand-over of a unit between two steps of its chain."""

    id: str
    unit_id: str
    from_step: str
    to_step: str
    outcome: str  # accepted | refused
    reason: str | None
    handed_at: Timestamp
    handed_by: str
    giver_identifier: str | None = None  # the family's chain identifier, each side's scan
    receiver_identifier: str | None = None
    patient_checked: bool = False  # the bedside check (the chain's last step)


class UnitHoldOut(Out):
    """A hold on a unit (a refused hand-over or a storage excursion) and its QP judgement."""

    id: str
    unit_id: str
    source: str  # hand_over | storage
    reason: str
    held_at: Timestamp
    held_by: str
    decision: str | None  # resume | reject; None while it awaits a QP
    decided_at: Timestamp | None
    decided_by: str | None
    decision_reason: str | None


class StorageReadingOut(Out):
    id: str
    unit_id: str
    value: float
    unit: str
    read_at: Timestamp
    excursion: bool
    reason: str | None
    hold_id: str | None


class StorageLogOut(Out):
    """What a storage log call recorded: every reading, judged, and the holds it opened."""

    readings: list[StorageReadingOut]
    holds: list[UnitHoldOut]


class InUseOut(Out):
    """A prepared unit's in-use period (`use_by` None: its family sets no limit)."""

    unit_id: str
    prepared_at: Timestamp
    prepared_by: str
    use_by: Timestamp | None


class UnitChainOut(Out):
    """A unit's chain of identity: its hand-overs, holds, storage log and in-use period."""

    unit_id: str
    serial: str
    status: str
    hand_overs: list[HandOverOut]
    holds: list[UnitHoldOut]
    storage_log: list[StorageReadingOut]
    in_use: InUseOut | None


class AlertStepOut(Out):
    """One step of a custody alert's follow-up: from which status to which, the note (and the
    outcome when it closed the alert), who and when."""

    from_status: str
    to_status: str
    outcome: str | None
    note: str
    acted_at: Timestamp
    acted_by: str  # user id
    acted_by_name: str
    reopened: bool


class CustodyAlertOut(Out):
    """A custody alert as its site's readers see it (docs/custody.md, the alerts page): the
    pack, the patient to contact, why, and its follow-up (status in words, the next steps the
    caller may take, the history)."""

    id: str
    kind: str
    raised_at: Timestamp
    site_id: str | None
    unit_id: str | None
    serial: str | None
    product: str | None
    lot: str | None
    patient_ref: str | None
    reason: str
    recall_id: str | None
    unit_status: str | None
    scan: str
    message: str
    status: str
    status_words: str
    status_changed_at: Timestamp | None
    status_changed_by: str | None
    outcome: str | None
    next_statuses: list[str]  # the steps the caller may take now (empty: none, or read only)
    history: list[AlertStepOut]
