"""What a replicated record is, and what can be wrong with what arrives."""

from __future__ import annotations

from enum import StrEnum


class RecordKind(StrEnum):
    AUDIT = "audit"  # a row of the node's audit trail (its own hash chain)
    LEDGER = "ledger"  # an entry of the owning site's custody ledger (EPCIS events, releases...)
    # a batch record's summary as its audited change left it (status, number, product, lot),
    # carrying the hash of the audit row that changed it
    BATCH = "batch"
    # a batch's machine run summarised once it ended (per metric: readings, min, max, mean,
    # sd), carrying the hash of the audit row it follows, like a batch summary
    TELEMETRY = "telemetry"
    # a release dossier a site node sent its control site's QP (replication/releases.py),
    # carrying the hash of the audit row that sent it
    DOSSIER = "dossier"
    # a custody alert's follow-up state after each audited step (raised, acknowledged, patient
    # contacted, pack recovered, closed), carrying the hash of the audit row of that step
    ALERT = "alert"


class ProblemKind(StrEnum):
    GAP = "gap"  # a sequence number never arrived (yet)
    DUPLICATE = "duplicate"  # the same record again: dropped, counted
    FORK = "fork"  # the same sequence (or id) with another hash: two histories
    BAD_HASH = "bad_hash"  # the record's hash does not match its content: altered
    MALFORMED = "malformed"  # not a replication record at all
