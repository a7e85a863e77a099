"""Whether a released pack may leave: its row matches what the QP's release signed into the
custody ledger (else an integrity failure), and its batch record still matches the QP's
release signature (else the record changed after the QP signed). Labels, dispense, packing
and verification ask this before a pack is handed on."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import Refused
from nearfab.custody.logic.verify import SignatureFacts
from nearfab.custody.models import SerialUnit
from nearfab.custody.services.packs import Packs
from nearfab.custody.services.signedfacts import SignedFacts
from nearfab.identity import signature_hash
from nearfab.identity.reads import signature_entity_view
from nearfab.production.reads import batch_view
from nearfab.quality.reads import review_view
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import Signature
    from nearfab.production import BatchRecord
    from nearfab.quality import ReleaseReview

SIGNATURE_CACHE_SIZE = 10_000
# the owners' read views the checks join (built once)
_BATCH = batch_view()
_REVIEW = review_view()
_SIGNATURE = signature_entity_view()


class ReleaseCheck:
    def __init__(self, packs: Packs) -> None:
        self._packs = packs
        # (review id, signature id, review version, batch id, batch version) whose signature
        # was found valid: neither row changes through the application without a new version
        self._valid_signatures: OrderedDict[tuple[str, str, int, str, int], bool] = OrderedDict()
        self._signatures_lock = threading.Lock()
        # the packs' facts as the QP's release ledgered them (signed, verified, cached)
        self.signed_facts = SignedFacts()

    def signature_known(self, key: tuple[Any, ...]) -> bool:
        with self._signatures_lock:
            if key in self._valid_signatures:
                self._valid_signatures.move_to_end(key)
                return True
        return False

    def release_signature_ok(self, uow: UnitOfWork, batch_id: str) -> bool:
        """Whether the batch record still matches the QP's release signature. A positive answer
        is remembered per (review, signature, review row_version, batch row_version): the
        signed content (batch record, proposal, deviations raised at review) cannot change
        through the application without bumping one of those versions, so only the versions
        are read again. Direct-SQL tampering that keeps the versions is the ledger's and the
        audit check's to find (docs/custody.md)."""
        review = self._packs.quality.review_for(uow, batch_id)
        if review is None or not review.signature_id:
            return False
        version = uow.session.scalar(select(_BATCH.c.row_version).where(_BATCH.c.id == batch_id))
        if version is None:
            return False
        return self._signature_valid(uow, review, review.signature_id, version)

    def loaded_signature_ok(
        self,
        uow: UnitOfWork,
        review: ReleaseReview,
        batch: BatchRecord,
        *,
        load_record: Callable[[], None] | None = None,
        stored_telemetry: str | None = None,
        sig: Signature | None = None,
    ) -> bool:
        """`release_signature_ok` for a caller that read the batch's review, record and
        signature in its own query (verification reads them with the pack, as plain values):
        the QP signature check is handed them. `load_record`: completes the record
        (verification reads its JSON documents as text), called only when the signature is
        checked, not when a check of the same versions is remembered. `stored_telemetry`: the
        record's telemetry column as stored, read undecoded with the record
        (`QualityService.signature_valid`)."""
        if not review.signature_id or review.batch_id != batch.id:
            return False
        return self._signature_valid(
            uow,
            review,
            review.signature_id,
            batch.row_version,
            load_record,
            stored_telemetry,
            batch=batch,
            sig=sig,
        )

    def _signature_valid(
        self,
        uow: UnitOfWork,
        review: ReleaseReview,
        signature_id: str,
        batch_version: int,
        load_record: Callable[[], None] | None = None,
        stored_telemetry: str | None = None,
        *,
        batch: BatchRecord | None = None,
        sig: Signature | None = None,
    ) -> bool:
        key = (review.id, signature_id, review.row_version, review.batch_id, batch_version)
        if self.signature_known(key):
            return True
        if load_record is not None:
            load_record()
        valid = self._packs.quality.signature_valid(
            uow, review, stored_telemetry=stored_telemetry, batch=batch, sig=sig
        )
        if valid is not True:
            return False
        with self._signatures_lock:
            self._valid_signatures[key] = True
            while len(self._valid_signatures) > SIGNATURE_CACHE_SIZE:
                self._valid_signatures.popitem(last=False)
        return True

    def integrity_problem(self, uow: UnitOfWork, unit: SerialUnit) -> str | None:
        """None when the pack's row (patient, GTIN, lot, serial, expiry, order) and the QP's
        decision match what the release signed into the custody ledger; else what differs."""
        row = uow.session.execute(
            select(_REVIEW.c.decision, _REVIEW.c.signature_id, _SIGNATURE)
            .outerjoin(_SIGNATURE, _SIGNATURE.id == _REVIEW.c.signature_id)
            .where(_REVIEW.c.batch_id == unit.batch_id)
        ).first()
        decision, signature_id, sig = row if row is not None else (None, None, None)
        return self.signed_facts.check(
            uow, self._packs.ledger, unit, signature_facts(decision, signature_id, sig)
        )

    def require(self, uow: UnitOfWork, unit: SerialUnit, field: str) -> None:
        """A pack leaves quarantine only while its row matches what the QP's release signed
        (else an integrity failure) and its batch record matches the QP's signature."""
        problem = self.integrity_problem(uow, unit)
        if problem is not None:
            raise Refused(
                f"{problem}: the record was tampered with; do not hand the pack over, hold it "
                "and tell QA",
                field=field,
                code="integrity_failure",
            )
        if not self.release_signature_ok(uow, unit.batch_id):
            raise Refused(
                f"pack {unit.serial}: its batch record no longer matches the QP's release "
                "signature; hold it and investigate",
                field=field,
                code="record_changed",
            )


def signature_facts(
    decision: str | None, signature_id: str | None, sig: Signature | None
) -> SignatureFacts:
    return SignatureFacts(
        review_decision=decision,
        review_signature_id=signature_id,
        signature_hash=sig.signature_hash if sig is not None else None,
        signature_hash_recomputed=_recomputed_hash(
            sig.signer_id,
            sig.signer_name,
            sig.meaning,
            sig.signed_at,
            sig.record_type,
            sig.record_id,
            sig.record_hash,
        )
        if sig is not None
        else None,
        signed_record_hash=sig.record_hash if sig is not None else None,
    )


@lru_cache(maxsize=SIGNATURE_CACHE_SIZE)
def _recomputed_hash(
    signer_id: str,
    signer_name: str,
    meaning: str,
    signed_at: datetime,
    record_type: str,
    record_id: str,
    record_hash: str,
) -> str:
    """A signature row's hash recomputed from the fields it covers (identity's
    `signature_hash`); remembered by those fields, so equal fields give the hash at once."""
    return signature_hash(
        signer_id=signer_id,
        signer_name=signer_name,
        meaning=meaning,
        signed_at=signed_at,
        record_type=record_type,
        record_id=record_id,
        record_hash=record_hash,
    )
