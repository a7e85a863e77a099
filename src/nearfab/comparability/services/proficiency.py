"""Proficiency testing: rounds of blind reference samples, ISO 13528 z-scores, suspensions and
the CAPA that lifts them. Every change is audited in its transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from nearfab.common.errors import Conflict, NotFound, Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.comparability import logic
from nearfab.comparability.enums import (
    ROUND_TRANSITIONS,
    SUSPENSION_TRANSITIONS,
    RoundStatus,
    SuspensionStatus,
)
from nearfab.comparability.models import ProficiencyResult, ProficiencyRound, Suspension
from nearfab.comparability.schemas import CapaCloseIn, ResultIn, RoundIn
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    audited_transition,
    authorize,
    authorize_network,
    is_network_wide,
    site_filter,
)
from nearfab.masterfiles import MasterFileService, pydantic_to_domain
from nearfab.network import NetworkService
from nearfab.quality.reads import capas_by_id, capas_raised_by
from nearfab.uow import UnitOfWork


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


class Proficiency:
    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService,
        signatures: SignatureService,
    ) -> None:
        self._network = network
        self._master_files = master_files
        self._signatures = signatures

    # --- the hold production and scheduling ask through the network (wired in bootstrap) -----
    def suspension_reason(self, uow: UnitOfWork, site_id: str, master_file_code: str) -> str | None:
        """Why the site may not make the master file (an active proficiency suspension), or
        None."""
        row = uow.session.scalar(
            select(Suspension).where(
                Suspension.site_id == site_id,
                Suspension.master_file_code == master_file_code,
                Suspension.status == SuspensionStatus.ACTIVE.value,
            )
        )
        if row is None:
            return None
        return (
            f"site suspended from {master_file_code} by proficiency round {row.round_id} "
            f"(z = {row.z:.2f}) until its CAPA is closed"
        )

    # --- proficiency rounds --------------------------------------------------------------------
    def open_round(
        self, uow: UnitOfWork, actor: Actor, data: Mapping[str, Any]
    ) -> ProficiencyRound:
        """The control site sends blind reference samples (or prints) to the sites named."""
        authorize_network(actor, Permission.PROFICIENCY_ROUND)
        try:
            spec = RoundIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "round") from None
        mf = self._master_files.effective_for_code(uow, spec.master_file_code)
        site_ids = []
        for i, name in enumerate(spec.site_ids):
            try:
                site_ids.append(self._network.get_site(uow, name).id)
            except NotFound:
                raise ValidationFailed(
                    f"site_ids[{i}]: no site {name!r}", field=f"site_ids.{i}"
                ) from None
        if len(set(site_ids)) != len(site_ids):
            raise ValidationFailed("a site is named twice", field="site_ids")
        row = ProficiencyRound(
            id=new_id("ptr"),
            master_file_code=mf.code,
            attribute=spec.attribute,
            unit=spec.unit,
            reference=spec.reference,
            site_ids=site_ids,
            assigned_value=spec.assigned_value,
            sd_pt=spec.sd_pt,
            status=RoundStatus.OPEN.value,
            opened_at=uow.clock.now(),
            opened_by=actor.user_id,
            scored_at=None,
            scored_by=None,
            robust_mean=None,
            robust_sd=None,
        )
        uow.session.add(row)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "proficiency_round",
            row.id,
            new={**spec.model_dump(), "site_ids": site_ids},
            reason=f"proficiency round for {mf.code}",
        )
        uow.commit()
        return row

    def _round(self, uow: UnitOfWork, round_id: str) -> ProficiencyRound:
        row = uow.session.get(ProficiencyRound, round_id)
        if row is None:
            raise NotFound(f"no proficiency round {round_id}", field="round_id")
        return row

    def enter_result(
        self, uow: UnitOfWork, actor: Actor, round_id: str, data: Mapping[str, Any]
    ) -> ProficiencyResult:
        """A site reports what it measured on the blind sample (once)."""
        authorize(actor, Permission.PROFICIENCY_RESULT_ENTER)
        try:
            spec = ResultIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "result") from None
        round_ = self._round(uow, round_id)
        site = self._network.get_site(uow, spec.site_id)
        authorize(actor, Permission.PROFICIENCY_RESULT_ENTER, site_id=site.id)
        if site.id not in round_.site_ids:
            raise Refused(
                f"site {site.code} takes no part in this round",
                field="site_id",
                code="not_in_round",
            )
        if round_.status != RoundStatus.OPEN.value:
            raise Refused(
                f"the round is {round_.status}; results are entered while it is open",
                field="round_id",
                code="round_closed",
            )
        if not (spec.value == spec.value and abs(spec.value) != float("inf")):
            raise ValidationFailed("value must be a finite number", field="value")
        existing = uow.session.scalar(
            select(ProficiencyResult).where(
                ProficiencyResult.round_id == round_.id, ProficiencyResult.site_id == site.id
            )
        )
        if existing is not None:
            raise Conflict(
                f"site {site.code} has already reported {existing.value:g} for this round",
                field="site_id",
            )
        row = ProficiencyResult(
            id=new_id("ptres"),
            round_id=round_.id,
            site_id=site.id,
            value=float(spec.value),
            entered_at=uow.clock.now(),
            entered_by=actor.user_id,
            z=None,
            verdict=None,
        )
        uow.session.add(row)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "proficiency_result",
            row.id,
            new={"round_id": round_.id, "site_id": site.id, "value": row.value},
            site_id=site.id,
        )
        uow.commit()
        return row

    def score_round(self, uow: UnitOfWork, actor: Actor, round_id: str) -> ProficiencyRound:
        """ISO 13528 z-scores (x_pt, σ_pt: the round's, else Algorithm A's x*, s*); every site
        with |z| > 3 is suspended from the master file until its CAPA is closed."""
        authorize_network(actor, Permission.PROFICIENCY_ROUND)
        round_ = self._round(uow, round_id)
        results = list(
            uow.session.scalars(
                select(ProficiencyResult).where(ProficiencyResult.round_id == round_.id)
            )
        )
        if len(results) < 3:
            raise Refused(
                f"{len(results)} result(s) in: scoring needs at least 3",
                field="round_id",
                code="too_few_results",
            )
        robust = logic.algorithm_a([r.value for r in results])
        assigned = round_.assigned_value if round_.assigned_value is not None else robust.mean
        sd_pt = round_.sd_pt if round_.sd_pt is not None else robust.sd
        zs = logic.z_scores([r.value for r in results], assigned, sd_pt)
        audited_transition(
            uow,
            actor,
            round_,
            RoundStatus.SCORED,
            ROUND_TRANSITIONS,
            entity_type="proficiency_round",
            label="proficiency round",
            reason="scored with ISO 13528 z-scores",
            extra={"x_pt": assigned, "sd_pt": sd_pt, "robust_mean": robust.mean},
        )
        round_.robust_mean, round_.robust_sd = robust.mean, robust.sd
        round_.scored_at, round_.scored_by = uow.clock.now(), actor.user_id
        for result, z in zip(results, zs, strict=True):
            result.z, result.verdict = z, logic.z_verdict(z)
            if (
                abs(z) > 3.0
                and self.suspension_reason(uow, result.site_id, round_.master_file_code) is None
            ):
                row = Suspension(
                    id=new_id("susp"),
                    site_id=result.site_id,
                    master_file_code=round_.master_file_code,
                    round_id=round_.id,
                    z=z,
                    status=SuspensionStatus.ACTIVE.value,
                    opened_at=uow.clock.now(),
                    capa_reference=None,
                    capa_summary=None,
                    closed_at=None,
                    closed_by=None,
                    signature_id=None,
                )
                uow.session.add(row)
                audit(
                    uow,
                    actor,
                    AuditAction.CREATE,
                    "proficiency_suspension",
                    row.id,
                    new={
                        "site_id": row.site_id,
                        "master_file_code": row.master_file_code,
                        "round_id": round_.id,
                        "z": z,
                    },
                    reason=f"|z| = {abs(z):.2f} > 3 in proficiency round {round_.id}",
                    site_id=row.site_id,
                )
        uow.commit()
        return round_

    def close_capa(
        self, uow: UnitOfWork, actor: Actor, suspension_id: str, data: Mapping[str, Any]
    ) -> Suspension:
        """The control site's QP closes the site's CAPA with an e-signature: the suspension is
        lifted and the site may make the master file again."""
        authorize_network(actor, Permission.PROFICIENCY_CAPA_CLOSE)
        try:
            spec = CapaCloseIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "capa") from None
        row = uow.session.get(Suspension, suspension_id)
        if row is None:
            raise NotFound(f"no suspension {suspension_id}", field="suspension_id")
        if row.status != SuspensionStatus.ACTIVE.value:
            raise Refused("the suspension is already lifted", field="status", code="lifted")
        self._check_quality_capa(uow, row, spec.capa_reference)
        signature = self._signatures.sign(
            uow,
            actor,
            password=spec.password,
            meaning=spec.meaning,
            username=spec.username,
            totp=spec.totp,
            record_type="proficiency_suspension",
            record_id=row.id,
            content={
                "site_id": row.site_id,
                "master_file_code": row.master_file_code,
                "round_id": row.round_id,
                "capa_reference": spec.capa_reference,
                "summary": spec.summary,
            },
            site_id=row.site_id,
        )
        audited_transition(
            uow,
            actor,
            row,
            SuspensionStatus.LIFTED,
            SUSPENSION_TRANSITIONS,
            entity_type="proficiency_suspension",
            label="suspension",
            reason=f"CAPA {spec.capa_reference} closed",
            site_id=row.site_id,
            extra={"capa_reference": spec.capa_reference, "signature_id": signature.id},
        )
        row.capa_reference, row.capa_summary = spec.capa_reference, spec.summary
        row.closed_at, row.closed_by, row.signature_id = (
            uow.clock.now(),
            actor.user_id,
            signature.id,
        )
        uow.commit()
        return row

    @staticmethod
    def _check_quality_capa(uow: UnitOfWork, row: Suspension, reference: str) -> None:
        """When the quality system holds CAPAs raised by this suspension (quality.Capa,
        source proficiency_suspension), each must be closed (its QP's effectiveness check) before
        the suspension is lifted; a reference naming a quality CAPA must name one of them."""
        raised = capas_raised_by(uow.session, "proficiency_suspension", row.id)
        still_open = [c.id for c in raised if c.status == "open"]
        if still_open:
            raise Refused(
                f"CAPA {', '.join(still_open)} raised by this suspension is still open: "
                "close it in the quality system first",
                field="capa_reference",
                code="capa_open",
            )
        named = capas_by_id(uow.session, [reference]).get(reference)
        if named is not None and named.id not in {c.id for c in raised}:
            raise Refused(
                f"CAPA {reference} was not raised by this suspension",
                field="capa_reference",
                code="capa_not_of_suspension",
            )
        if named is not None and named.status != "closed":
            raise Refused(
                f"CAPA {reference} is {named.status}, not closed",
                field="capa_reference",
                code="capa_open",
            )

    # --- reads ---------------------------------------------------------------------------------
    def rounds(self, uow: UnitOfWork, actor: Actor) -> list[dict[str, Any]]:
        """The rounds the actor's site takes part in (every round for the network), each with
        the results the actor may see (their own site's; every site's for the network)."""
        authorize(actor, Permission.COMPARABILITY_READ)
        rows = uow.session.scalars(
            select(ProficiencyRound).order_by(ProficiencyRound.opened_at.desc())
        )
        wide = is_network_wide(actor, Permission.COMPARABILITY_READ)
        return [
            self._round_dict(uow, actor, r)
            for r in rows
            if wide or actor.site_id in (r.site_ids or [])
        ]

    def round(self, uow: UnitOfWork, actor: Actor, round_id: str) -> dict[str, Any]:
        row = self._round(uow, round_id)
        authorize(actor, Permission.COMPARABILITY_READ, one_of=row.site_ids)
        return self._round_dict(uow, actor, row)

    def _round_dict(self, uow: UnitOfWork, actor: Actor, row: ProficiencyRound) -> dict[str, Any]:
        wide = is_network_wide(actor, Permission.COMPARABILITY_READ)
        codes = {s.id: s.code for s in self._network.list_sites(uow)}
        results = uow.session.scalars(
            select(ProficiencyResult)
            .where(ProficiencyResult.round_id == row.id)
            .order_by(ProficiencyResult.entered_at)
        )
        return {
            "id": row.id,
            "master_file_code": row.master_file_code,
            "attribute": row.attribute,
            "unit": row.unit,
            "reference": row.reference,
            "site_ids": list(row.site_ids or []),
            "status": row.status,
            "assigned_value": row.assigned_value,
            "sd_pt": row.sd_pt,
            "robust_mean": row.robust_mean,
            "robust_sd": row.robust_sd,
            "opened_at": _iso(row.opened_at),
            "scored_at": _iso(row.scored_at),
            "results": [
                {
                    "id": r.id,
                    "site_id": r.site_id,
                    "site_code": codes.get(r.site_id, r.site_id),
                    "value": r.value,
                    "entered_at": _iso(r.entered_at),
                    "entered_by": r.entered_by,
                    "z": r.z,
                    "verdict": r.verdict,
                }
                for r in results
                if wide or r.site_id == actor.site_id
            ],
        }

    def suspensions(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        site_id: str | None = None,
        master_file_code: str | None = None,
    ) -> list[dict[str, Any]]:
        """Suspensions (active and lifted), of the actor's own site for site staff."""
        scope = site_filter(actor, Permission.COMPARABILITY_READ, site_id)
        stmt = select(Suspension).order_by(Suspension.opened_at.desc())
        if scope is not None:
            stmt = stmt.where(Suspension.site_id == scope)
        if master_file_code is not None:
            stmt = stmt.where(Suspension.master_file_code == master_file_code)
        codes = {s.id: s.code for s in self._network.list_sites(uow)}
        return [
            {
                "id": s.id,
                "site_id": s.site_id,
                "site_code": codes.get(s.site_id, s.site_id),
                "master_file_code": s.master_file_code,
                "round_id": s.round_id,
                "z": s.z,
                "status": s.status,
                "opened_at": _iso(s.opened_at),
                "capa_reference": s.capa_reference,
                "capa_summary": s.capa_summary,
                "closed_at": _iso(s.closed_at),
                "closed_by": s.closed_by,
                "signature_id": s.signature_id,
            }
            for s in uow.session.scalars(stmt)
        ]
