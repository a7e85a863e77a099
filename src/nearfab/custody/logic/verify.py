"""The decision of a verification at dispense: facts in, one status out. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from nearfab.custody.enums import UnitStatus, VerifyStatus

FACT_FIELDS = ("serial", "gtin", "lot", "expiry", "patient_id", "order_id")


@dataclass(frozen=True)
class SignedRelease:
    """One verified `release` ledger entry of a batch."""

    entry_hash: str
    site_id: str
    batch_id: str
    decision: str
    signature_id: str | None
    signature_hash: str | None
    signed_record_hash: str | None
    # serial -> facts as the entry's payload has them, compared as text (`mismatch`); empty:
    # an entry made before facts
    packs: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SignatureFacts:
    """What the database says about the QP's decision (checked against the ledger)."""

    review_decision: str | None
    review_signature_id: str | None
    signature_hash: str | None  # as stored on the signature row
    signature_hash_recomputed: str | None  # hash of the signature row's own fields
    signed_record_hash: str | None


@dataclass(frozen=True)
class PackFacts:
    status: str
    expiry: date
    record_matches_signature: bool
    patient_ref: str
    batch_matches: bool
    # None: the pack's row matches its signed release (or the row is not released, so it is
    # not handed over anyway); else what differs. Checked for released packs only.
    integrity_problem: str | None = None
    # the verifier serves the pack's making or ordering site
    in_scope: bool = True


def decide(facts: PackFacts | None, today: date, patient_ref: str | None) -> VerifyStatus:
    """In the order of the dispense checks (docs/custody.md): unknown first, the patient last.
    A pack whose label does not match its record is treated as unknown (suspected falsified),
    and so is a pack of a site the verifier does not serve (no answer about its patient). A
    released pack whose row differs from what the QP's release signed is an integrity
    failure, whatever else it says."""
    if facts is None or not facts.batch_matches or not facts.in_scope:
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
    if facts.status == UnitStatus.RELEASED.value and facts.integrity_problem is not None:
        return VerifyStatus.INTEGRITY_FAILURE
    if facts.status != UnitStatus.RELEASED.value or not facts.record_matches_signature:
        return VerifyStatus.NOT_RELEASED
    if facts.expiry < today:
        return VerifyStatus.EXPIRED
    if patient_ref is not None and patient_ref.strip() and patient_ref.strip() != facts.patient_ref:
        return VerifyStatus.WRONG_PATIENT
    return VerifyStatus.OK


def mismatch(
    releases: list[SignedRelease],
    problems: list[str],
    batch_id: str,
    now: dict[str, str],
    signature: SignatureFacts,
) -> str | None:
    """The first difference between a pack (`now`: its facts as its row has them) and its
    signed release, in words; None when everything matches."""
    serial = now["serial"]
    if problems:
        return problems[0]
    if not releases:
        return f"pack {serial}: the custody ledger holds no signed QP release of its batch"
    if any(r.batch_id != batch_id for r in releases):
        return f"pack {serial}: the signed release names another batch"
    refused = [r for r in releases if r.decision != "release"]
    if refused:
        return (
            f"pack {serial}: the QP's signed decision for its batch is "
            f"{refused[0].decision}, not release"
        )
    signed = next((r for r in releases if serial in r.packs), None)
    if signed is None:
        return f"pack {serial} is not among the packs the QP's signed release names"
    if signature.review_decision != "release":
        return f"pack {serial}: the release review says {signature.review_decision}, not release"
    if (
        signed.signature_id is None
        or signed.signature_id != signature.review_signature_id
        or signed.signature_hash is None
        or signed.signature_hash != signature.signature_hash
        or signature.signature_hash != signature.signature_hash_recomputed
        or signed.signed_record_hash != signature.signed_record_hash
    ):
        return f"pack {serial}: the QP's signature is not the one the release ledgered"
    facts = signed.packs[serial]
    changed = [f for f in FACT_FIELDS if str(facts.get(f)) != now[f]]
    if changed:
        return f"pack {serial}: {', '.join(changed)} differ from what was signed at release"
    return None
