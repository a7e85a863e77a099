"""Custody use cases on packs, one module per cluster, behind one service:

- `packs`          what they share: pack look-ups, audited transitions, a pack step's EPCIS
                   event, alerts, the family's label kit (Packs)
- `releasecheck`   whether a pack may leave: its row against the signed release, its batch
                   record against the QP's signature (ReleaseCheck)
- `commissioning`  every pack of a made batch gets its identity, quarantined (Commissioning)
- `disposition`    packs follow the QP's decision; the release's signed facts (Dispositions)
- `labelling`      a released pack's label content (Labelling)
- `verification`   verification at dispense: one status per scan, logged (Verifier)
- `dispensing`     the hand-over to the patient, and its undo (Dispensing)
- `movements`      ship, receive, destroy, cold-chain readings (Movements)
- `containers`     shipping containers (SSCC): pack and unpack (Containers)
- `handovers`      the chain of identity: hand-overs checked on both sides, the storage log,
                   holds a QP judges, the in-use period of a prepared unit (HandOvers)

Each step is an EPCIS event chained in the site's ledger in the same transaction as the
change. `CustodyService` is what the other domains and the entry points hold: it builds the
clusters and forwards each use case to its own.
"""

from __future__ import annotations

from datetime import datetime

from nearfab.custody.labels import LabelContent
from nearfab.custody.models import (
    Container,
    CustodyAlert,
    EpcisEvent,
    HandOver,
    InUsePeriod,
    SerialUnit,
    UnitHold,
)
from nearfab.custody.services.alerts import AlertActions
from nearfab.custody.services.commissioning import Commissioning
from nearfab.custody.services.containers import Containers
from nearfab.custody.services.dispensing import UNDO_WINDOW, DispenseResult, Dispensing
from nearfab.custody.services.disposition import Dispositions
from nearfab.custody.services.epcis import EpcisStore
from nearfab.custody.services.handovers import HandOvers, StorageLogResult, UnitChain
from nearfab.custody.services.labelling import Labelling
from nearfab.custody.services.ledger import CustodyLedger
from nearfab.custody.services.movements import Movements
from nearfab.custody.services.packs import AlertRow, Packs
from nearfab.custody.services.releasecheck import SIGNATURE_CACHE_SIZE, ReleaseCheck
from nearfab.custody.services.verification import Verification, Verifier
from nearfab.designs import FamilyRegistry
from nearfab.identity import Actor
from nearfab.masterfiles import MasterFileService
from nearfab.orders import OrderService, PresentedIdentifiers
from nearfab.production import ProductionService
from nearfab.quality import QualityService
from nearfab.scheduling import SchedulingService
from nearfab.uow import UnitOfWork

__all__ = [
    "SIGNATURE_CACHE_SIZE",
    "UNDO_WINDOW",
    "AlertRow",
    "CustodyService",
    "DispenseResult",
    "Verification",
]


class CustodyService:
    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        orders: OrderService,
        quality: QualityService,
        *,
        families: FamilyRegistry,
        epcis: EpcisStore | None = None,
        scheduling: SchedulingService | None = None,
    ) -> None:
        # without a ledger, events are still recorded; the composition root gives one
        self.epcis = epcis or EpcisStore()
        self.packs = Packs(production, master_files, orders, quality, families, self.epcis)
        self.release = ReleaseCheck(self.packs)
        self.commissioning = Commissioning(self.packs)
        self.dispositions = Dispositions(self.packs)
        self.hand_overs = HandOvers(self.packs, scheduling)
        self.labelling = Labelling(self.packs, self.release, self.hand_overs.expected_identifier)
        self.verifier = Verifier(self.packs, self.release, self.hand_overs.check_usable)
        self.dispensing = Dispensing(self.packs, self.release, self.hand_overs.check_usable)
        self.movements = Movements(self.packs)
        self.alert_actions = AlertActions()
        self.containers = Containers(self.packs, self.release)
        # the packs' facts as the QP's release ledgered them (signed, verified, cached)
        self.signed_facts = self.release.signed_facts
        self.verification_log = self.verifier.verification_log

    # --- the chain ---------------------------------------------------------------------------
    def use_ledger(self, ledger: CustodyLedger) -> None:
        """Chain every custody event from now on (composition roots that build the ledger
        after this service)."""
        self.epcis.ledger = ledger

    @property
    def ledger(self) -> CustodyLedger | None:
        return self.epcis.ledger

    @property
    def quality(self) -> QualityService:
        return self.packs.quality

    def flush_verification_log(self) -> int:
        """Commit every queued verification log row (tests, shutdown); the number written."""
        return self.verification_log.flush()

    # --- release checks ----------------------------------------------------------------------
    def release_signature_ok(self, uow: UnitOfWork, batch_id: str) -> bool:
        return self.release.release_signature_ok(uow, batch_id)

    def integrity_problem(self, uow: UnitOfWork, unit: SerialUnit) -> str | None:
        return self.release.integrity_problem(uow, unit)

    # --- a batch's packs ---------------------------------------------------------------------
    def commission(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> list[SerialUnit]:
        return self.commissioning.commission(uow, actor, batch_id)

    def apply_disposition(
        self, uow: UnitOfWork, actor: Actor, batch_id: str, decision: str
    ) -> list[SerialUnit]:
        return self.dispositions.apply_disposition(uow, actor, batch_id, decision)

    def lagging_dispositions(self, uow: UnitOfWork) -> list[tuple[str, str]]:
        return self.dispositions.lagging_dispositions(uow)

    def labels(self, uow: UnitOfWork, unit_or_batch_id: str) -> list[LabelContent]:
        return self.labelling.labels(uow, unit_or_batch_id)

    # --- at the pharmacy ---------------------------------------------------------------------
    def verify(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        scan: str,
        patient_ref: str | None = None,
        patient: PresentedIdentifiers | None = None,
    ) -> Verification:
        return self.verifier.verify(uow, actor, scan=scan, patient_ref=patient_ref, patient=patient)

    def dispense(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        scan: str,
        patient_ref: str | None = None,
        patient: PresentedIdentifiers | None = None,
    ) -> DispenseResult:
        return self.dispensing.dispense(
            uow, actor, scan=scan, patient_ref=patient_ref, patient=patient
        )

    def undo_dispense(
        self, uow: UnitOfWork, actor: Actor, *, unit_id: str, reason: str
    ) -> SerialUnit:
        return self.dispensing.undo_dispense(uow, actor, unit_id=unit_id, reason=reason)

    # --- movements and containers ------------------------------------------------------------
    def ship(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        from_site_id: str,
        to_site_id: str,
    ) -> EpcisEvent:
        return self.movements.ship(
            uow, actor, unit_ids=unit_ids, from_site_id=from_site_id, to_site_id=to_site_id
        )

    def receive(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        from_site_id: str,
        at_site_id: str,
    ) -> EpcisEvent:
        return self.movements.receive(
            uow, actor, unit_ids=unit_ids, from_site_id=from_site_id, at_site_id=at_site_id
        )

    def destroy(
        self, uow: UnitOfWork, actor: Actor, *, unit_ids: list[str], site_id: str, reason: str
    ) -> EpcisEvent:
        return self.movements.destroy(uow, actor, unit_ids=unit_ids, site_id=site_id, reason=reason)

    def record_temperature(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        site_id: str,
        readings: list[tuple[datetime, float]],
        device: str | None = None,
    ) -> EpcisEvent:
        return self.movements.record_temperature(
            uow, actor, unit_ids=unit_ids, site_id=site_id, readings=readings, device=device
        )

    def pack(
        self, uow: UnitOfWork, actor: Actor, *, unit_ids: list[str], to_site_id: str
    ) -> Container:
        return self.containers.pack(uow, actor, unit_ids=unit_ids, to_site_id=to_site_id)

    def unpack(
        self, uow: UnitOfWork, actor: Actor, *, sscc: str, at_site_id: str | None = None
    ) -> Container:
        return self.containers.unpack(uow, actor, sscc=sscc, at_site_id=at_site_id)

    def units_in_container(self, uow: UnitOfWork, sscc: str) -> list[SerialUnit]:
        return self.containers.units_in_container(uow, sscc)

    # --- the chain of identity ----------------------------------------------------------------
    def hand_over(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        scan: str,
        from_step: str,
        to_step: str,
        received_scan: str,
        identifier: str | None = None,
        received_identifier: str | None = None,
        patient: str | None = None,
    ) -> HandOver:
        return self.hand_overs.hand_over(
            uow,
            actor,
            scan=scan,
            from_step=from_step,
            to_step=to_step,
            received_scan=received_scan,
            identifier=identifier,
            received_identifier=received_identifier,
            patient=patient,
        )

    def log_storage(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        unit_ids: list[str],
        readings: list[tuple[datetime, float]],
        unit: str = "Cel",
    ) -> StorageLogResult:
        return self.hand_overs.log_storage(
            uow, actor, unit_ids=unit_ids, readings=readings, unit=unit
        )

    def judge_hold(
        self, uow: UnitOfWork, actor: Actor, *, hold_id: str, decision: str, reason: str
    ) -> UnitHold:
        return self.hand_overs.judge_hold(
            uow, actor, hold_id=hold_id, decision=decision, reason=reason
        )

    def prepare(
        self, uow: UnitOfWork, actor: Actor, *, scan: str, unit_id: str | None = None
    ) -> InUsePeriod:
        return self.hand_overs.prepare(uow, actor, scan=scan, unit_id=unit_id)

    def unit_chain(self, uow: UnitOfWork, actor: Actor, unit_id: str) -> UnitChain:
        return self.hand_overs.chain(uow, actor, unit_id)

    # --- queries -----------------------------------------------------------------------------
    def units_of_batch(self, uow: UnitOfWork, batch_id: str) -> list[SerialUnit]:
        return self.packs.units_of_batch(uow, batch_id)

    def units_of_order(self, uow: UnitOfWork, order_id: str) -> list[SerialUnit]:
        return self.packs.units_of_order(uow, order_id)

    def get_unit(self, uow: UnitOfWork, unit_id: str) -> SerialUnit:
        return self.packs.get_unit(uow, unit_id)

    def alerts(self, uow: UnitOfWork, actor: Actor, *, status: str = "all") -> list[AlertRow]:
        """The custody alerts `actor` may read, open ones first, then newest first: their own
        site's; every site's for a grant that reaches the network (`Packs.alerts`); `status`
        all, open or closed."""
        return self.packs.alerts(uow, actor, status=status)

    def alert(self, uow: UnitOfWork, actor: Actor, alert_id: str) -> AlertRow:
        """One alert as the list shows it, for a reader at its site (`NotFound` for an unknown
        id, `Forbidden` other_site for another site's)."""
        found = self.alert_actions.get(uow, actor, alert_id)
        (row,) = self.packs.alerts(uow, actor, alert_id=found.id)
        return row

    def update_alert(
        self,
        uow: UnitOfWork,
        actor: Actor,
        alert_id: str,
        *,
        status: str,
        note: str | None = None,
        outcome: str | None = None,
        expected_status: str | None = None,
    ) -> CustodyAlert:
        """Record a step of an alert's follow-up (`AlertActions.update`): a pharmacist of its
        site, a note, the outcome when closing; audited in the same transaction."""
        return self.alert_actions.update(
            uow,
            actor,
            alert_id,
            status=status,
            note=note,
            outcome=outcome,
            expected_status=expected_status,
        )
