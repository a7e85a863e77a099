"""Response schemas of the chain of custody: packs, dispense, verification, containers."""

from __future__ import annotations

from typing import Any

from nearfab.common.schemas import Day, Out, Timestamp


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
