"""Comparability use cases: the cross-site report (services/report.py) and proficiency testing
(services/proficiency.py: rounds, results, z-scores, suspensions, CAPA). Every state change goes
through this service with its audit row in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nearfab.comparability.models import ProficiencyResult, ProficiencyRound, Suspension
from nearfab.comparability.services.proficiency import Proficiency
from nearfab.comparability.services.report import Reports
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor, SignatureService
from nearfab.masterfiles import MasterFileService
from nearfab.network import NetworkService
from nearfab.uow import UnitOfWork


class ComparabilityService:
    def __init__(
        self,
        network: NetworkService,
        master_files: MasterFileService,
        families: FamilyRegistry,
        signatures: SignatureService,
    ) -> None:
        self.reports = Reports(network, master_files, families)
        self.proficiency = Proficiency(network, master_files, signatures)

    # --- the hold production and scheduling ask through the network (wired in bootstrap) -----
    def suspension_reason(self, uow: UnitOfWork, site_id: str, master_file_code: str) -> str | None:
        """Why the site may not make the master file (an active proficiency suspension), or
        None."""
        return self.proficiency.suspension_reason(uow, site_id, master_file_code)

    # --- the cross-site report ----------------------------------------------------------------
    def report(
        self, uow: UnitOfWork, actor: Actor, master_file_code: str, by: str = "site"
    ) -> dict[str, Any]:
        """Each site (machine, material lot or month) against the rest of the network; site
        staff see their own site's rows (Reports.report)."""
        return self.reports.report(uow, actor, master_file_code, by, self.suspensions)

    # --- proficiency ----------------------------------------------------------------------------
    def open_round(
        self, uow: UnitOfWork, actor: Actor, data: Mapping[str, Any]
    ) -> ProficiencyRound:
        return self.proficiency.open_round(uow, actor, data)

    def enter_result(
        self, uow: UnitOfWork, actor: Actor, round_id: str, data: Mapping[str, Any]
    ) -> ProficiencyResult:
        return self.proficiency.enter_result(uow, actor, round_id, data)

    def score_round(self, uow: UnitOfWork, actor: Actor, round_id: str) -> ProficiencyRound:
        return self.proficiency.score_round(uow, actor, round_id)

    def close_capa(
        self, uow: UnitOfWork, actor: Actor, suspension_id: str, data: Mapping[str, Any]
    ) -> Suspension:
        return self.proficiency.close_capa(uow, actor, suspension_id, data)

    def rounds(self, uow: UnitOfWork, actor: Actor) -> list[dict[str, Any]]:
        return self.proficiency.rounds(uow, actor)

    def round(self, uow: UnitOfWork, actor: Actor, round_id: str) -> dict[str, Any]:
        return self.proficiency.round(uow, actor, round_id)

    def suspensions(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        site_id: str | None = None,
        master_file_code: str | None = None,
    ) -> list[dict[str, Any]]:
        return self.proficiency.suspensions(
            uow, actor, site_id=site_id, master_file_code=master_file_code
        )


__all__ = ["ComparabilityService"]
