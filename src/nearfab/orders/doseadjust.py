"""Dose adjusted from outcomes (issue 19 part 5; docs/dose-adjustment.md).

Observations of a patient (FHIR Observation: body weight, height, a drug level) are recorded
against one of their orders and kept against the order's pseudonymous patient. When the
order's master file declares a `dose_rule`, its product family (the prescription kit's
optional `DoseRuleKit` part) turns the latest observations into a proposed dose. A proposal
changes nothing by itself: a clinician of the order's site accepts it with an e-signature,
which makes a new version of the order (`supersedes` the old one, `prescription_version` + 1)
for the batches still to come, or rejects it with an e-signature and a reason. Each step is
audited in the transaction that makes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import select

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.common.errors import (
    DomainError,
    NotFound,
    Refused,
    ValidationFailed,
    require_reason,
)
from nearfab.common.ids import new_id
from nearfab.common.quantity import Quantity
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    audited_transition,
    authorize,
    record_signed_decision,
    refuse,
)
from nearfab.masterfiles import MasterFileService, pydantic_to_domain
from nearfab.orders.dose_models import DoseProposal, PatientObservation
from nearfab.orders.dose_schemas import DoseDecisionIn
from nearfab.orders.enums import ENDED_STATES, NOT_STARTED_STATES, OrderStatus
from nearfab.orders.kit import DoseRuleKit, ObservationIn, PrescriptionKits
from nearfab.orders.models import Order, PatientIdentity
from nearfab.orders.observations import read_observations
from nearfab.orders.services import (
    UNIT_MAX,
    Designer,
    DesignRequest,
    OrderService,
    add_order,
    dose_text,
)
from nearfab.orders.vault import IdentityVault
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import Signature

__all__ = ["DoseAdjustment", "ProposalStatus", "check_dose_rule"]


class ProposalStatus(StrEnum):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # a newer proposal for the same order replaced it


PROPOSAL_TRANSITIONS: dict[ProposalStatus, frozenset[ProposalStatus]] = {
    ProposalStatus.PROPOSED: frozenset(
        {ProposalStatus.ACCEPTED, ProposalStatus.REJECTED, ProposalStatus.SUPERSEDED}
    ),
    ProposalStatus.ACCEPTED: frozenset(),
    ProposalStatus.REJECTED: frozenset(),
    ProposalStatus.SUPERSEDED: frozenset(),
}
# an order no batch will come from any more: nothing to propose for it
ENDED = ENDED_STATES
# an order that has not started a batch: its new version takes its place (it is cancelled)
NOT_STARTED = NOT_STARTED_STATES


def check_dose_rule(kits: PrescriptionKits, family: str, rule: Mapping[str, Any] | None) -> None:
    """A master file's draft check: a `dose_rule` is judged by its product family; a family
    that adjusts no dose refuses any."""
    if rule is None:
        return
    kit = kits.prescription(family)
    if not isinstance(kit, DoseRuleKit):
        raise ValidationFailed(
            f"dose_rule: product family {family} adjusts no dose from observations",
            field="dose_rule",
        )
    kit.check_dose_rule(rule)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def observation_dict(row: PatientObservation) -> dict[str, Any]:
    return {
        "id": row.id,
        "patient_id": row.patient_id,
        "order_id": row.order_id,
        "site_id": row.site_id,
        "system": row.system,
        "code": row.code,
        "display": row.display,
        "value": row.value,
        "unit": row.unit,
        "effective_at": _iso(row.effective_at),
        "source_id": row.source_id,
        "recorded_at": _iso(row.recorded_at),
        "recorded_by": row.recorded_by,
    }


def proposal_dict(row: DoseProposal) -> dict[str, Any]:
    return {
        "id": row.id,
        "order_id": row.order_id,
        "site_id": row.site_id,
        "master_file_id": row.master_file_id,
        "status": row.status,
        "current_value": row.current_value,
        "current_unit": row.current_unit,
        "proposed_value": row.proposed_value,
        "proposed_unit": row.proposed_unit,
        "rule": row.rule,
        "working": row.working,
        "observation_ids": list(row.observation_ids),
        "created_at": _iso(row.created_at),
        "created_by": row.created_by,
        "decided_at": _iso(row.decided_at),
        "decided_by": row.decided_by,
        "decision_reason": row.decision_reason,
        "signature_id": row.signature_id,
        "new_order_id": row.new_order_id,
    }


@dataclass(frozen=True)
class Recorded:
    observations: list[PatientObservation]
    proposal: DoseProposal | None
    note: str | None


class DoseAdjustment:
    def __init__(
        self,
        orders: OrderService,
        master_files: MasterFileService,
        kits: PrescriptionKits,
        designer: Designer,
        vault: IdentityVault,
        signatures: SignatureService,
    ) -> None:
        self._orders = orders
        self._master_files = master_files
        self._kits = kits
        self._designer = designer
        self._vault = vault
        self._signatures = signatures

    # --- observations ------------------------------------------------------------------------
    def record_observations(
        self, uow: UnitOfWork, actor: Actor, order_id: str, document: Any
    ) -> Recorded:
        """Keep the observations (an Observation or a Bundle of them: all or none) against
        the order's patient; then, when the order's master file has a dose rule, the proposal
        it gives (None and the reason when it gives none). One transaction."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_OBSERVATION_RECORD, site_id=order.site_id)
        now = uow.clock.now()
        reads = read_observations(document, now=now)
        raw = sha256_hex(canonical_json(document))
        patient = self._orders.patient(uow, order.patient_id)
        rows: list[PatientObservation] = []
        for read in reads:
            row = PatientObservation(
                id=new_id("obs"),
                patient_id=order.patient_id,
                order_id=order.id,
                site_id=order.site_id,
                system=read.system,
                code=read.code,
                display=read.display,
                value=read.value,
                unit=read.unit,
                effective_at=read.effective_at,
                source_id=read.source_id,
                raw_sha256=raw,
                recorded_at=now,
                recorded_by=actor.user_id,
            )
            uow.session.add(row)
            rows.append(row)
        uow.flush()
        for row in rows:
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "patient_observation",
                row.id,
                new={
                    "patient_ref": patient.ref,
                    "order_id": order.id,
                    "code": f"{row.system}|{row.code}",
                    "value": row.value,
                    "unit": row.unit,
                    "effective_at": row.effective_at.isoformat(),
                    "raw_sha256": raw,
                },
                site_id=order.site_id,
            )
        proposal: DoseProposal | None = None
        note: str | None = None
        current = self._in_force(uow, order)
        if current is None:
            note = f"order {order.id} is {order.status}: no dose is proposed for it"
        elif self._rule(uow, current) is None:
            note = f"master file {current.master_file_code} has no dose rule"
        else:
            try:
                proposal = self._propose(uow, actor, current)
            except (ValidationFailed, Refused) as exc:
                note = exc.message
        uow.commit()
        return Recorded(rows, proposal, note)

    def observations(self, uow: UnitOfWork, actor: Actor, order_id: str) -> list[dict[str, Any]]:
        """The order's patient's observations, newest first."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_READ, site_id=order.site_id)
        return [observation_dict(r) for r in self._patient_observations(uow, order.patient_id)]

    @staticmethod
    def _patient_observations(uow: UnitOfWork, patient_id: str) -> list[PatientObservation]:
        stmt = (
            select(PatientObservation)
            .where(PatientObservation.patient_id == patient_id)
            .order_by(PatientObservation.effective_at.desc(), PatientObservation.id)
        )
        return list(uow.session.scalars(stmt))

    # --- proposals ---------------------------------------------------------------------------
    def propose(self, uow: UnitOfWork, actor: Actor, order_id: str) -> DoseProposal:
        """The dose the rule gives now from the patient's latest observations (refused, naming
        what is missing, when it gives none)."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_OBSERVATION_RECORD, site_id=order.site_id)
        current = self._in_force(uow, order)
        if current is None:
            raise Refused(
                f"order {order.id} is {order.status}: no batch will follow it",
                field="order_id",
                code="order_ended",
            )
        proposal = self._propose(uow, actor, current)
        uow.commit()
        return proposal

    def _in_force(self, uow: UnitOfWork, order: Order) -> Order | None:
        """The order's latest version, if batches may still follow it."""
        seen = {order.id}
        while True:
            newer = uow.session.scalar(select(Order).where(Order.supersedes == order.id))
            if newer is None or newer.id in seen:
                break
            seen.add(newer.id)
            order = newer
        return None if order.status in ENDED else order

    def _rule(self, uow: UnitOfWork, order: Order) -> dict[str, Any] | None:
        return self._master_files.get(uow, order.master_file_id).dose_rule

    def _propose(self, uow: UnitOfWork, actor: Actor, order: Order) -> DoseProposal:
        rule = self._rule(uow, order)
        if not rule:
            raise ValidationFailed(
                f"dose_rule: master file {order.master_file_code} v{order.master_file_version} "
                "declares no dose rule; its doses are not adjusted from observations",
                field="dose_rule",
            )
        kit = self._kits.prescription(order.product_family)
        if not isinstance(kit, DoseRuleKit):
            raise Refused(
                f"product family {order.product_family} adjusts no dose from observations",
                field="dose_rule",
                code="no_dose_rule",
            )
        now = uow.clock.now()
        held = [
            ObservationIn(r.id, r.system, r.code, r.value, r.unit, r.effective_at)
            for r in self._patient_observations(uow, order.patient_id)
        ]
        answer = kit.propose_dose(
            rule,
            current=order.dose,
            doses_per_day=order.doses_per_day,
            observations=held,
            on=now,
        )
        dose = answer.dose
        if not dose.value > 0 or len(dose.unit) > UNIT_MAX:
            raise ValidationFailed(
                f"dose_rule: product family {order.product_family} proposed {dose.value!r} "
                f"{dose.unit!r}: a positive value with a short unit is required",
                field="dose_rule",
            )
        if dose == order.dose:
            raise Refused(
                f"the rule gives the order's current dose, {dose_text(dose)}: nothing to change",
                field="dose",
                code="no_change",
            )
        for older in uow.session.scalars(
            select(DoseProposal).where(
                DoseProposal.order_id == order.id,
                DoseProposal.status == ProposalStatus.PROPOSED.value,
            )
        ):
            audited_transition(
                uow,
                actor,
                older,
                ProposalStatus.SUPERSEDED,
                PROPOSAL_TRANSITIONS,
                entity_type="dose_proposal",
                label=f"dose proposal {older.id}",
                reason="a newer proposal from newer observations",
                site_id=order.site_id,
            )
        row = DoseProposal(
            id=new_id("dp"),
            order_id=order.id,
            patient_id=order.patient_id,
            site_id=order.site_id,
            master_file_id=order.master_file_id,
            status=ProposalStatus.PROPOSED.value,
            current_value=order.dose_value,
            current_unit=order.dose_unit,
            proposed_value=dose.value,
            proposed_unit=dose.unit,
            rule=dict(rule),
            working=dict(answer.working),
            observation_ids=list(answer.used),
            created_at=now,
            created_by=actor.user_id,
            decided_at=None,
            decided_by=None,
            decision_reason=None,
            signature_id=None,
            new_order_id=None,
        )
        uow.session.add(row)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "dose_proposal",
            row.id,
            new={
                "order_id": order.id,
                "current": dose_text(order.dose),
                "proposed": dose_text(dose),
                "observations": list(answer.used),
                "working": dict(answer.working),
            },
            site_id=order.site_id,
        )
        return row

    def proposals(self, uow: UnitOfWork, actor: Actor, order_id: str) -> list[dict[str, Any]]:
        """The proposals made for the order, newest first."""
        order = self._orders.get(uow, order_id)
        authorize(actor, Permission.ORDER_READ, site_id=order.site_id)
        stmt = (
            select(DoseProposal)
            .where(DoseProposal.order_id == order.id)
            .order_by(DoseProposal.created_at.desc(), DoseProposal.id)
        )
        return [proposal_dict(r) for r in uow.session.scalars(stmt)]

    def get(self, uow: UnitOfWork, actor: Actor, proposal_id: str) -> DoseProposal:
        row = uow.session.get(DoseProposal, proposal_id)
        if row is None:
            raise NotFound(f"no dose proposal {proposal_id!r}", field="proposal_id")
        authorize(actor, Permission.ORDER_READ, site_id=row.site_id)
        return row

    # --- decisions ---------------------------------------------------------------------------
    def _decision(
        self, uow: UnitOfWork, actor: Actor, proposal_id: str, data: Mapping[str, Any]
    ) -> tuple[DoseProposal, DoseDecisionIn]:
        row = uow.session.get(DoseProposal, proposal_id)
        if row is None:
            raise NotFound(f"no dose proposal {proposal_id!r}", field="proposal_id")
        authorize(actor, Permission.DOSE_DECIDE, site_id=row.site_id)
        try:
            spec = DoseDecisionIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "decision") from None
        if not spec.password:
            raise ValidationFailed(
                "decision.password: a decision is signed: type your password",
                field="decision.password",
            )
        if row.status != ProposalStatus.PROPOSED.value:
            raise Refused(
                f"dose proposal {row.id} is {row.status}; only a proposed dose is decided",
                field="proposal_id",
                code="decided",
            )
        return row, spec

    def _sign(
        self,
        uow: UnitOfWork,
        actor: Actor,
        row: DoseProposal,
        spec: DoseDecisionIn,
        decision: str,
    ) -> Signature:
        """The clinician's e-signature of `decision` on the proposal; a failed signing attempt
        is on record too (refused, rolled back, raised)."""
        try:
            return self._signatures.sign(
                uow,
                actor,
                **spec.signing(),
                record_type="dose_proposal",
                record_id=row.id,
                content=self._signed(row, decision, spec.reason),
                site_id=row.site_id,
            )
        except DomainError as exc:
            refuse(uow, actor, exc, "dose_proposal", row.id, site_id=row.site_id)

    def _signed(self, row: DoseProposal, decision: str, reason: str | None) -> dict[str, Any]:
        """What the clinician's signature is bound to."""
        return {
            "proposal_id": row.id,
            "order_id": row.order_id,
            "decision": decision,
            "current": f"{row.current_value!r} {row.current_unit}",
            "proposed": f"{row.proposed_value!r} {row.proposed_unit}",
            "observation_ids": list(row.observation_ids),
            "working": row.working,
            "reason": reason,
        }

    def accept(
        self, uow: UnitOfWork, actor: Actor, proposal_id: str, data: Mapping[str, Any]
    ) -> DoseProposal:
        """A clinician accepts the proposed dose with an e-signature: a new version of the
        order carries it (designed within the master file's envelope, or refused); the old
        version keeps the batches it has, and is cancelled if it has none started."""
        row, spec = self._decision(uow, actor, proposal_id, data)
        order = self._orders.get(uow, row.order_id)
        if self._in_force(uow, order) is not order:
            raise Refused(
                f"order {order.id} is no longer the version in force ({order.status}); "
                "propose again from the current version",
                field="proposal_id",
                code="order_not_in_force",
            )
        if order.status == OrderStatus.SCHEDULED.value:
            raise Refused(
                f"order {order.id} is scheduled: take it off the plan first (its job would "
                "make the old dose), then accept",
                field="order_id",
                code="scheduled",
            )
        now = uow.clock.now()
        mf = self._master_files.effective_for_code(uow, order.master_file_code)
        dose = Quantity(row.proposed_value, row.proposed_unit)
        identity = uow.session.get(PatientIdentity, order.patient_id)
        born = self._vault.decrypt(identity.ciphertext).get("birth_date") if identity else None
        request = DesignRequest(
            master_file=mf,
            dose=dose,
            units=order.units,
            birth_date=date.fromisoformat(born[:10]) if isinstance(born, str) else None,
            on=now.date(),
        )
        try:
            design, group = self._designer(request)
        except DomainError as exc:
            raise Refused(
                f"dose: {dose_text(dose)} cannot be made under {mf.code} v{mf.version}: "
                f"{exc.message}",
                field="dose",
                code="outside_envelope",
            ) from None
        signature = self._sign(uow, actor, row, spec, "accepted")
        new = add_order(
            uow,
            mf,
            prescription_id=order.prescription_id,
            patient_id=order.patient_id,
            site_id=order.site_id,
            medication=order.medication,
            dose=dose,
            doses_per_day=order.doses_per_day,
            units=order.units,
            now=now,
            supersedes=order.id,
            prescription_version=order.prescription_version + 1,
        )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "order",
            new.id,
            new={
                "status": new.status,
                "master_file": f"{mf.code} v{mf.version}",
                "dose": dose_text(dose),
                "units": new.units,
                "supersedes": order.id,
                "prescription_version": new.prescription_version,
                "dose_proposal": row.id,
                "signature_id": signature.id,
                "site_id": new.site_id,
            },
            site_id=new.site_id,
        )
        new.design, new.patient_group = design, group
        self._orders.transition(
            uow,
            actor,
            new,
            OrderStatus.DESIGNED,
            reason="design within the master file's envelope (dose adjusted)",
            extra={"design": design, "patient_group": group},
        )
        if order.status in NOT_STARTED:
            self._orders.transition(
                uow,
                actor,
                order,
                OrderStatus.CANCELLED,
                reason=f"superseded by order {new.id} (dose adjusted, proposal {row.id})",
            )
        else:
            audit(
                uow,
                actor,
                "superseded",
                "order",
                order.id,
                new={"superseded_by": new.id, "dose_proposal": row.id},
                reason="dose adjusted: the batches to come follow the new version",
                site_id=order.site_id,
            )
            self._orders.touch(uow, order)
        audited_transition(
            uow,
            actor,
            row,
            ProposalStatus.ACCEPTED,
            PROPOSAL_TRANSITIONS,
            entity_type="dose_proposal",
            label=f"dose proposal {row.id}",
            reason=spec.reason or spec.meaning,
            site_id=row.site_id,
            extra={"signature_id": signature.id, "new_order_id": new.id},
        )
        row.decided_at, row.decided_by = now, actor.user_id
        row.decision_reason, row.signature_id, row.new_order_id = (
            spec.reason,
            signature.id,
            new.id,
        )
        # a new version taken: at the control node, an order of a site is handed over to that
        # site's node again (docs/replication.md, "Orders handed over to the sites")
        self._orders.taken(uow, actor, new)
        uow.commit()
        return row

    def reject(
        self, uow: UnitOfWork, actor: Actor, proposal_id: str, data: Mapping[str, Any]
    ) -> DoseProposal:
        """A clinician rejects the proposed dose with an e-signature and a reason; the order
        is unchanged."""
        row, spec = self._decision(uow, actor, proposal_id, data)
        require_reason(spec.reason, "rejecting a dose proposal")
        signature = self._sign(uow, actor, row, spec, "rejected")
        record_signed_decision(
            uow,
            actor,
            row,
            ProposalStatus.REJECTED,
            PROPOSAL_TRANSITIONS,
            entity_type="dose_proposal",
            label=f"dose proposal {row.id}",
            reason=spec.reason,
            signature_id=signature.id,
            site_id=row.site_id,
        )
        uow.commit()
        return row
