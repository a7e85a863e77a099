"""The decision of a verification at dispense: facts in, one status out. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from nearfab.custody.enums import UnitStatus, VerifyStatus


@dataclass(frozen=True)
class PackFacts:
    status: str
    expiry: date
    record_matches_signature: bool
    patient_ref: str
    batch_matches: bool


def decide(facts: PackFacts | None, today: date, patient_ref: str | None) -> VerifyStatus:
    """In the order of the dispense checks (docs/custody.md): unknown first, the patient last.
    A pack whose label does not match its record is treated as unknown (suspected falsified)."""
    if facts is None or not facts.batch_matches:
        return VerifyStatus.UNKNOWN
    # a destroyed pack should not exist: one being scanned is a copy or was diverted from
    # destruction, so it answers as a suspected falsification (and raises its alert)
    if facts.status == UnitStatus.DESTROYED.value:
        return VerifyStatus.UNKNOWN
    if facts.status == UnitStatus.DISPENSED.value:
        return VerifyStatus.ALREADY_DISPENSED
    if facts.status == UnitStatus.REJECTED.value:
        return VerifyStatus.REJECTED
    if facts.status == UnitStatus.RECALLED.value:
        return VerifyStatus.RECALLED
    if facts.status != UnitStatus.RELEASED.value or not facts.record_matches_signature:
        return VerifyStatus.NOT_RELEASED
    if facts.expiry < today:
        return VerifyStatus.EXPIRED
    if patient_ref is not None and patient_ref.strip() and patient_ref.strip() != facts.patient_ref:
        return VerifyStatus.WRONG_PATIENT
    return VerifyStatus.OK
