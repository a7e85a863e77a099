"""Verification at dispense: one status for a scanned pack (and the patient it is for), read-only
apart from the alert a suspected falsification raises; every answer is logged."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import Text, bindparam, cast, inspect, select
from sqlalchemy.orm import Mapper

from nearfab.common.errors import DomainError, Forbidden
from nearfab.custody.enums import AlertKind, UnitStatus, VerifyStatus
from nearfab.custody.gs1 import parse_scan
from nearfab.custody.logic.verify import PackFacts, decide
from nearfab.custody.models import Dispense, LedgerEntry, SerialUnit, SiteKey
from nearfab.custody.services.handovers import usable_rows_exist
from nearfab.custody.services.packs import Packs
from nearfab.custody.services.releasecheck import ReleaseCheck, signature_facts
from nearfab.custody.services.signedfacts import ENTRY_COLUMNS, release_entries_of
from nearfab.custody.services.verifylog import VerificationLog
from nearfab.identity import Actor, Permission, audit, authorize
from nearfab.identity.reads import signature_entity_view
from nearfab.orders import PresentedIdentifiers
from nearfab.orders.reads import order_view, patient_view
from nearfab.production.reads import batch_entity_view
from nearfab.quality.reads import review_entity_view
from nearfab.uow import UnitOfWork


@dataclass(frozen=True)
class Verification:
    """One answer to a scan: `status` (VerifyStatus) and what the pharmacist needs to know."""

    status: VerifyStatus
    message: str
    unit_id: str | None = None
    gtin: str | None = None
    serial: str | None = None
    batch: str | None = None
    expiry: date | None = None
    unit_status: str | None = None
    dispensed_at: datetime | None = None
    alert_id: str | None = None
    # the patient check when identifiers were presented (PatientMatch.to_dict): its result,
    # and name and birth date for a role that may see identity
    patient: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "unit_id": self.unit_id,
            "gtin": self.gtin,
            "serial": self.serial,
            "batch": self.batch,
            "expiry": self.expiry.isoformat() if self.expiry else None,
            "unit_status": self.unit_status,
            "dispensed_at": self.dispensed_at.isoformat() if self.dispensed_at else None,
            "alert_id": self.alert_id,
            "patient": self.patient,
        }


# what verification reads of a scanned pack, built once (the statement is immutable), through
# the owners' read views, as plain columns: the pack, its review, batch record and signature
# are made into read-only values of their mapped classes (`_row_values`), not loaded as ORM
# entities (building entities was most of the statement's cost, "Ninth pass" in
# docs/performance.md); the first QP signature check of a batch is handed them
_PATIENT = patient_view()
_ORDER = order_view()
_BATCH = batch_entity_view()
_REVIEW = review_entity_view()
_SIGNATURE = signature_entity_view()
# the batch record's JSON documents (the design, the machine's measurements, telemetry and its
# summary, excursions, events: tens of KB): only the QP signature check reads them, once per
# batch and process. They come with the pack as text, undecoded, and are decoded into the
# record only when that check is due (`_load_record`), so a scan of a batch whose signature
# this process already checked decodes none of them, and the first scan still needs no
# statement of its own.
_RECORD_DOCUMENTS = (
    "design",
    "measurements",
    "telemetry_summary",
    "telemetry",
    "cpp_excursions",
    "machine_events",
)
# the columns read of each (every column of the review and the signature, the record's
# but its documents, the pack's that verification and its checks read)
_UNIT_KEYS = (
    "id",
    "batch_id",
    "order_id",
    "patient_id",
    "gtin",
    "serial",
    "batch_number",
    "expiry",
    "status",
)
_UNIT_MAPPER = inspect(SerialUnit)
_REVIEW_MAPPER = inspect(_REVIEW).mapper
_BATCH_MAPPER = inspect(_BATCH).mapper
_SIGNATURE_MAPPER = inspect(_SIGNATURE).mapper
_REVIEW_KEYS = tuple(a.key for a in _REVIEW_MAPPER.column_attrs)
_BATCH_KEYS = tuple(a.key for a in _BATCH_MAPPER.column_attrs if a.key not in _RECORD_DOCUMENTS)
_SIGNATURE_KEYS = tuple(a.key for a in _SIGNATURE_MAPPER.column_attrs)
_PACK_QUERY = (
    select(
        *(getattr(SerialUnit, key) for key in _UNIT_KEYS),
        _PATIENT.c.ref,
        *(getattr(_REVIEW, key) for key in _REVIEW_KEYS),
        *(getattr(_BATCH, key) for key in _BATCH_KEYS),
        _ORDER.c.site_id,
        *(getattr(_SIGNATURE, key) for key in _SIGNATURE_KEYS),
        # whether the pack has a row the chain-of-identity check refuses on (an open hold, an
        # in-use period with an end): without one that check's own statement is not needed
        usable_rows_exist(SerialUnit.id),
        *ENTRY_COLUMNS,
        *(cast(getattr(_BATCH, name), Text) for name in _RECORD_DOCUMENTS),
    )
    .join(_PATIENT, _PATIENT.c.id == SerialUnit.patient_id)
    .join(_BATCH, _BATCH.id == SerialUnit.batch_id)
    .join(_ORDER, _ORDER.c.id == SerialUnit.order_id)
    .outerjoin(_REVIEW, _REVIEW.batch_id == SerialUnit.batch_id)
    .outerjoin(_SIGNATURE, _SIGNATURE.id == _REVIEW.signature_id)
    .outerjoin(LedgerEntry, release_entries_of(SerialUnit.batch_id))
    .outerjoin(SiteKey, SiteKey.key_id == LedgerEntry.key_id)
    .where(SerialUnit.gtin == bindparam("gtin"), SerialUnit.serial == bindparam("serial"))
)
# where each part of a row starts
_REF = len(_UNIT_KEYS)
_REVIEW_AT = _REF + 1
_BATCH_AT = _REVIEW_AT + len(_REVIEW_KEYS)
_ORDER_SITE = _BATCH_AT + len(_BATCH_KEYS)
_SIGNATURE_AT = _ORDER_SITE + 1
_USABLE = _SIGNATURE_AT + len(_SIGNATURE_KEYS)
_ENTRY_START = _USABLE + 1  # where a row's release entry starts
_ENTRY_END = _ENTRY_START + len(ENTRY_COLUMNS)  # where the record's documents start


_TELEMETRY = _RECORD_DOCUMENTS.index("telemetry")


def _row_values(mapper: Mapper[Any], keys: Sequence[str], values: Sequence[Any]) -> Any:
    """A row read as columns, as a read-only value of its mapped class: an instance in no
    session (transient), its attributes the row's values, set without the ORM's attribute
    events, so nothing about it is ever written or loaded. Attributes not read (the record's
    telemetry) are absent: `BatchRecord.telemetry_unloaded` is true, and the QP signature
    check's full way reads the record from the database (`QualityService.signature_valid`)."""
    obj = mapper.class_manager.new_instance()
    obj.__dict__.update(zip(keys, values, strict=True))
    return obj


def _load_record(batch: Any, documents: Sequence[str | None]) -> None:
    """The record's JSON documents, read as text with the pack, decoded as its JSON columns
    would have been. Not the telemetry (thousands of readings): the QP signature check
    hashes its stored text as it is (`QualityService.signature_valid`), and reads the record
    whole only when that does not match."""
    for name, text in zip(_RECORD_DOCUMENTS, documents, strict=True):
        if name != "telemetry":
            batch.__dict__[name] = None if text is None else json.loads(text)


class Verifier:
    def __init__(
        self,
        packs: Packs,
        release: ReleaseCheck,
        usable: Callable[[UnitOfWork, SerialUnit, str], None] | None = None,
    ) -> None:
        self._packs = packs
        self._release = release
        # the chain-of-identity check dispense makes (HandOvers.check_usable): verification
        # answers what dispense would, so "check only" never says yes to a held unit
        self._usable = usable
        self.verification_log = VerificationLog()

    def verify(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        scan: str,
        patient_ref: str | None = None,
        patient: PresentedIdentifiers | None = None,
    ) -> Verification:
        """One status for a scanned pack (and, if given, the patient it is for). A scan that is
        not GS1 data is refused (`validation_failed`, field `scan`). An unknown pack raises a
        suspected-falsification alert, committed at once. Every verification is logged (audit
        action `verify`); apart from that alert the check is read-only and its log row is
        written by the group-commit `verification_log` (`flush_verification_log`).

        `patient`: the identifiers the hospital knows the patient by (NHS number, MRN,
        wristband, prescription ID, birth date): matched once the pack itself is fine, through
        the orders service (its look-up audited, and committed with the answer); a mismatch
        answers `wrong_patient` naming the identifier."""
        authorize(actor, Permission.PACK_VERIFY)
        if patient is None and patient_ref and not patient_ref.strip().upper().startswith("PT-"):
            # not nearfab's pseudonym: an identifier the hospital knows, read by its form
            patient = PresentedIdentifiers(patient_ref=patient_ref)
        if patient is not None and patient.given():
            if patient_ref and not patient.patient_ref:
                patient = replace(patient, patient_ref=patient_ref)
            patient_ref = None  # compared by the orders service, with the rest
        else:
            patient = None
        ident = parse_scan(scan)
        # one round trip: the pack, its patient reference, its batch record and ordering site
        # (the sites it belongs to), the QP's review and signature (the review's and record's
        # versions key the signature check; a first check of the batch is handed them), and
        # the signed release entries of its batch with their keys (a verification answers
        # while others wait for the GIL); one row per release entry (usually one)
        if uow.session.autoflush:
            # the session's pending changes first, as an ORM query's autoflush would (a
            # statement of plain columns on the session's connection does not flush)
            uow.session.flush()
        rows = (
            uow.session.connection()
            .execute(_PACK_QUERY, {"gtin": ident.gtin, "serial": ident.serial})
            .all()
        )
        row = rows[0] if rows else None
        unit: SerialUnit | None = None
        may_be_unusable = True
        facts = None
        problem: str | None = None
        in_scope = True
        if row is not None:
            unit = _row_values(_UNIT_MAPPER, _UNIT_KEYS, row[:_REF])
            ref = row[_REF]
            review = (
                _row_values(_REVIEW_MAPPER, _REVIEW_KEYS, row[_REVIEW_AT:_BATCH_AT])
                if row[_REVIEW_AT] is not None
                else None
            )
            batch = _row_values(_BATCH_MAPPER, _BATCH_KEYS, row[_BATCH_AT:_ORDER_SITE])
            ordering_site = row[_ORDER_SITE]
            sig = (
                _row_values(_SIGNATURE_MAPPER, _SIGNATURE_KEYS, row[_SIGNATURE_AT:_USABLE])
                if row[_SIGNATURE_AT] is not None
                else None
            )
            may_be_unusable = row[_USABLE]
            entries = [r[_ENTRY_START:_ENTRY_END] for r in rows if r[_ENTRY_START] is not None]
            # a verifier answers only for packs of the sites they serve (making or ordering
            # site): for any other pack the answer is the one for an unknown pack, so nobody
            # learns from it whether a pack is for some patient of another site
            in_scope = self._serves(actor, batch.site_id, ordering_site)
            record_ok = True
            if in_scope and unit.status == UnitStatus.RELEASED.value:
                problem = self._release.signed_facts.check(
                    uow,
                    self._packs.ledger,
                    unit,
                    signature_facts(
                        review.decision if review is not None else None,
                        review.signature_id if review is not None else None,
                        sig,
                    ),
                    rows=entries,
                )
                documents = row[_ENTRY_END:]
                record_ok = review is not None and self._release.loaded_signature_ok(
                    uow,
                    review,
                    batch,
                    load_record=lambda: _load_record(batch, documents),
                    stored_telemetry=documents[_TELEMETRY],
                    sig=sig,
                )
            facts = PackFacts(
                status=unit.status,
                expiry=unit.expiry,
                record_matches_signature=record_ok,
                patient_ref=ref,
                batch_matches=unit.batch_number == ident.batch and unit.expiry == ident.expiry,
                integrity_problem=problem,
                in_scope=in_scope,
            )
        status = decide(facts, uow.clock.now().date(), patient_ref)
        match = None
        if status == VerifyStatus.OK and unit is not None and patient is not None:
            # the patient is identified for the site that ordered (its patient), never for the
            # making site: it would answer yes/no to another site's patient identifiers
            if not self._serves(actor, ordering_site):
                raise Forbidden(
                    "the patient is identified by the site that ordered the pack; check the"
                    " pack here without the patient's identifiers",
                    field="patient",
                    code="other_site",
                )
            match = self._packs.orders.match_patient(
                uow,
                actor,
                unit.order_id,
                patient,
                purpose="verify",
                permission=Permission.PACK_VERIFY,
                one_of=[ordering_site],
            )
            if not match.matched:
                status = VerifyStatus.WRONG_PATIENT
        if (
            status == VerifyStatus.OK
            and unit is not None
            and self._usable is not None
            # read with the pack: no open hold and no in-use period with an end, nothing for
            # the check to refuse on (it reads the same rows in the same transaction)
            and may_be_unusable
        ):
            try:
                self._usable(uow, unit, "scan")
            except DomainError as exc:
                if exc.code not in (VerifyStatus.HELD.value, VerifyStatus.IN_USE_EXPIRED.value):
                    raise
                status, problem = VerifyStatus(exc.code), exc.message
        if not in_scope:
            unit = None  # nothing about another site's pack leaves this call
        dispensed_at = None
        if unit is not None and status == VerifyStatus.ALREADY_DISPENSED:
            dispensed_at = uow.session.scalar(
                select(Dispense.dispensed_at).where(Dispense.unit_id == unit.id)
            )
        message = _verify_message(status, ident.serial, unit, dispensed_at, patient_ref, problem)
        if match is not None and not match.matched:  # names the identifier, not the patient
            message = (
                f"pack {ident.serial}: {match.message}"
                if match.code == "birth_date_required"
                else f"pack {ident.serial} is for another patient: {match.message}"
            )
        entity_id = unit.id if unit else ident.serial[:64]
        logged: dict[str, Any] = {
            "status": status.value,
            "gtin": ident.gtin,
            "serial": ident.serial,
        }
        if not in_scope:
            logged["out_of_scope"] = True  # a probe of another site's pack, for QA to see
        if problem is not None:
            logged["integrity_problem"] = problem
        if match is not None:  # the kinds of identifier compared, never their values
            logged["patient_checked"] = list(match.checked)
            logged["patient_failed"] = match.failed
        alert = None
        if status == VerifyStatus.INTEGRITY_FAILURE:
            # the pack's record was tampered with: an alert for QA, committed now
            alert = self._packs.raise_alert(uow, actor, AlertKind.INTEGRITY_FAILURE, scan, message)
            audit(uow, actor, "verify", "unit", entity_id, new=logged, site_id=actor.site_id)
            uow.commit()
        elif status == VerifyStatus.UNKNOWN:
            # a suspected falsified pack: the alert and its log row are committed now
            alert = self._packs.raise_alert(
                uow, actor, AlertKind.SUSPECTED_FALSIFIED, scan, message
            )
            audit(uow, actor, "verify", "unit", entity_id, new=logged, site_id=actor.site_id)
            uow.commit()
        read_only = alert is None
        if read_only:
            # read-only: the log row goes through the group-commit writer
            self.verification_log.submit(
                uow.session.get_bind(),  # type: ignore[arg-type]
                {
                    "at": uow.clock.now(),
                    "actor_id": actor.user_id,
                    "actor_name": actor.full_name,
                    "action": "verify",
                    "entity_type": "unit",
                    "entity_id": entity_id,
                    "old": None,
                    "new": logged,
                    "reason": None,
                    "site_id": actor.site_id,
                },
            )
        answer = Verification(
            status=status,
            message=message,
            unit_id=unit.id if unit else None,
            gtin=ident.gtin,
            serial=ident.serial,
            batch=ident.batch,
            expiry=ident.expiry,
            unit_status=unit.status if unit else None,
            dispensed_at=dispensed_at,
            alert_id=alert.id if alert else None,
            patient=match.to_dict() if match is not None else None,
        )
        if read_only:
            # the answer is complete: end the read transaction here, which hands the database
            # connection back to the pool at once instead of when the caller tears down
            uow.commit()
        return answer

    @staticmethod
    def _serves(actor: Actor, *site_ids: str | None) -> bool:
        """Whether the actor may verify at one of these sites (a pack's making and ordering
        site). No site named means no site-bound verifier serves it."""
        try:
            authorize(actor, Permission.PACK_VERIFY, one_of=[s for s in site_ids if s])
        except Forbidden:
            return False
        return True


def _verify_message(
    status: VerifyStatus,
    serial: str,
    unit: SerialUnit | None,
    dispensed_at: datetime | None,
    patient_ref: str | None,
    problem: str | None = None,
) -> str:
    if status == VerifyStatus.OK:
        return f"pack {serial} may be handed over"
    if status == VerifyStatus.HELD:
        return f"{problem or f'pack {serial} is held'}: do not hand over until a QP decides"
    if status == VerifyStatus.IN_USE_EXPIRED:
        return f"{problem or f'pack {serial}: its in-use period has ended'}: do not hand over"
    if status == VerifyStatus.INTEGRITY_FAILURE:
        return (
            f"{problem or f'pack {serial}: its record differs from the signed release'}: the "
            "record was tampered with; do not hand over, hold it and tell QA"
        )
    if status == VerifyStatus.UNKNOWN:
        if unit is not None and unit.status == UnitStatus.DESTROYED.value:
            return (
                f"pack {serial} was destroyed: this pack should not exist; suspected "
                "falsified or diverted, do not hand over"
            )
        if unit is None:  # never made, or not a pack of a site the verifier serves
            return (
                f"pack {serial} is not known at your sites (never made in this network, or "
                "not yours to check): suspected falsified, do not hand over"
            )
        return (
            f"pack {serial}: the label's batch or expiry does not match the record: "
            "suspected falsified, do not hand over"
        )
    if status == VerifyStatus.ALREADY_DISPENSED:
        when = f" on {dispensed_at:%Y-%m-%d %H:%M %Z}" if dispensed_at else ""
        return f"pack {serial} was already dispensed{when}"
    if status == VerifyStatus.WRONG_PATIENT:
        return f"pack {serial} is for another patient, not {patient_ref}"
    if status == VerifyStatus.EXPIRED and unit is not None:
        return f"pack {serial} expired on {unit.expiry}"
    if status == VerifyStatus.NOT_RELEASED and unit is not None:
        if unit.status == UnitStatus.RELEASED.value:
            return (
                f"pack {serial}: its batch record no longer matches the QP's release "
                "signature; hold it and investigate"
            )
        return f"pack {serial} is {unit.status}, not released by a QP"
    if status == VerifyStatus.REJECTED:
        return f"pack {serial} belongs to a rejected batch"
    return f"pack {serial} is {status.value}"
