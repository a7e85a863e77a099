"""Records an order's family requires before its collection (scheduling.kit): e.g. the
patient's eligibility for the collection and the patient's informed consent.

Each is one row per order and kind, e-signed by a clinician of the ordering site (user ID and
password, the site's TOTP when it demands one; 21 CFR 11), with the reference of the document
it rests on (the consent form and its version, the eligibility assessment) and what the
clinician states. Recorded once: a second record of the same kind is refused. Every refusal is
audited (`pre_collection` entity). The collection is refused until every kind is on record
(`SchedulingService.record_collected`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearfab.common.errors import DomainError, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity import Actor, AuditAction, Role, SignatureService, audit, refuse
from nearfab.scheduling.models import PreCollectionRecord
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.orders import Order

REFERENCE_MAX = 200
STATEMENT_MAX = 2000


def _text(value: str | None, field: str, limit: int, what: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ValidationFailed(f"{field}: give {what}", field=field)
    if len(text) > limit:
        raise ValidationFailed(f"{field} has more than {limit} characters", field=field)
    return text


def record_dict(row: PreCollectionRecord) -> dict[str, Any]:
    """A pre-collection record as the API and the CLI show it."""
    return {
        "id": row.id,
        "order_id": row.order_id,
        "kind": row.kind,
        "reference": row.reference,
        "statement": row.statement,
        "recorded_at": row.recorded_at.isoformat(),
        "recorded_by": row.recorded_by,
        "recorded_by_name": row.recorded_by_name,
        "signature_id": row.signature_id,
    }


class PreCollection:
    """`SchedulingService.pre_collection`: the records, signed; the caller authorises."""

    def __init__(self, signatures: SignatureService | None) -> None:
        self._signatures = signatures

    def of_order(self, uow: UnitOfWork, order_id: str) -> list[PreCollectionRecord]:
        return list(
            uow.session.scalars(
                select(PreCollectionRecord)
                .where(PreCollectionRecord.order_id == order_id)
                .order_by(PreCollectionRecord.recorded_at, PreCollectionRecord.id)
            )
        )

    def missing(self, uow: UnitOfWork, order_id: str, required: tuple[str, ...]) -> list[str]:
        """The required kinds not yet on record, in the family's order."""
        done = {r.kind for r in self.of_order(uow, order_id)}
        return [k for k in required if k not in done]

    def record(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        required: tuple[str, ...],
        *,
        kind: str,
        reference: str,
        statement: str,
        password: str,
        username: str | None,
        totp: str | None,
        meaning: str | None,
    ) -> PreCollectionRecord:
        """Sign and store one record (audited) and commit; refusals audited."""
        try:
            row = self._record(
                uow, actor, order, required, kind, reference, statement, password, username,
                totp, meaning,
            )  # fmt: skip
        except DomainError as exc:
            refuse(uow, actor, exc, "pre_collection", order.id, site_id=order.site_id)
        uow.commit()
        return row

    def _record(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        required: tuple[str, ...],
        kind: str,
        reference: str,
        statement: str,
        password: str,
        username: str | None,
        totp: str | None,
        meaning: str | None,
    ) -> PreCollectionRecord:
        if Role.CLINICIAN.value not in actor.roles or actor.site_id != order.site_id:
            raise Refused(
                f"{actor.full_name} is not a clinician of the patient's site; a clinician of "
                "the ordering site signs what is recorded before the collection",
                field="signer",
                code="not_treating_site",
            )
        if not required:
            raise Refused(
                f"order {order.id}'s product requires no record before its collection",
                field="kind",
                code="not_required",
            )
        if kind not in required:
            raise ValidationFailed(
                f"kind must be one of {', '.join(required)}, got {kind!r}", field="kind"
            )
        ref = _text(reference, "reference", REFERENCE_MAX, "the document it rests on")
        said = _text(statement, "statement", STATEMENT_MAX, "what you confirm")
        if kind not in self.missing(uow, order.id, required):
            raise Refused(
                f"the {kind} record of order {order.id} is already on record",
                field="kind",
                code="already_recorded",
            )
        if self._signatures is None:
            raise Refused("e-signatures are not wired", field="password", code="no_signatures")
        row = PreCollectionRecord(
            id=new_id("pcr"),
            order_id=order.id,
            kind=kind,
            reference=ref,
            statement=said,
            site_id=order.site_id,
            recorded_at=uow.clock.now(),
            recorded_by=actor.user_id,
            recorded_by_name=actor.full_name,
            signature_id="",
        )
        sig = self._signatures.sign(
            uow,
            actor,
            password=password,
            meaning=(meaning or f"{kind} confirmed before collection").strip(),
            record_type="pre_collection",
            record_id=row.id,
            content=row.signed_content(),
            username=username,
            totp=totp,
            site_id=order.site_id,
        )
        row.signature_id, row.recorded_by_name = sig.id, sig.signer_name
        uow.session.add(row)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "pre_collection",
            row.id,
            new={
                "order_id": order.id,
                "kind": kind,
                "reference": ref,
                "signature_id": sig.id,
            },
            reason=said,
            site_id=order.site_id,
        )
        return row
