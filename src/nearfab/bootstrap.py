"""Composition root: settings -> engine, clock, keys, services and event wiring."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from nearfab.bus import EventBus
from nearfab.common.clock import Clock, SystemClock
from nearfab.common.node import NodeRole
from nearfab.comparability import ComparabilityService
from nearfab.config import Settings
from nearfab.custody import CustodyChain, CustodyService, KeyRing
from nearfab.custody.kit import LabelKit
from nearfab.db import make_engine, make_session_factory
from nearfab.designs import DesignService, FamilyRegistry, ProductFamily
from nearfab.families.bioprint import BioprintFamily
from nearfab.families.cell_therapy import CellTherapyFamily
from nearfab.families.device import DeviceFamily
from nearfab.families.solid_dose import SolidDoseFamily
from nearfab.identity import (
    AccountPolicy,
    Actor,
    SecretBox,
    SignatureService,
    UserService,
    check_platform_keys,
    system_actor,
)
from nearfab.identity.services.audit import AuditKeys, checkpoint_if_due, install_audit_keys
from nearfab.identity.services.keys import AuditChainKey, load_retired_keys
from nearfab.identity.services.nodekeys import (
    RekeyResult,
    SigningKey,
    rekey_node,
    settle_pending_keys,
)
from nearfab.masterfiles import ChangeControlService, MasterFileService
from nearfab.materials import MaterialService
from nearfab.monitoring import Monitor, MonitoringModelsChanged, MonitoringService, RunCharts
from nearfab.network import Machine, NetworkService
from nearfab.orders import DoseAdjustment, IdentityVault, OrderService, check_dose_rule
from nearfab.orders.kit import PrescriptionKit
from nearfab.production import (
    BatchCompleted,
    MachineFleet,
    ProductionService,
    TicketSigner,
)
from nearfab.production.kit import MachineKit
from nearfab.production.runner import NetworkRunner
from nearfab.quality import (
    BatchDispositioned,
    QmsService,
    QualityService,
    validate_release_rule,
    work_in_progress,
)
from nearfab.quality.kit import FamilyLotRules, ReleaseKit, release_kit
from nearfab.replication import ReplicationService, install_capture, node_capture
from nearfab.replication.batches import received_batches
from nearfab.replication.link import NodeLink
from nearfab.replication.releases import (
    ControlReleases,
    SiteDossiers,
    hand_over_cancellations,
    hand_over_orders,
    sign_decisions,
)
from nearfab.replication.transfers import ControlTransfers, SiteReleases
from nearfab.scheduling import SchedulingService
from nearfab.simulation.kit import SimulationKit
from nearfab.telemetry import (
    BrokerAddress,
    LocalPublisher,
    MachineGateway,
    MqttPublisher,
    MqttSubscriber,
    Publisher,
    TelemetryIngestor,
    TelemetryService,
)
from nearfab.uow import UnitOfWork
from nearfab.vigilance import VigilanceService

log = logging.getLogger(__name__)


@dataclass
class App:
    """Every service, built once per process (or per test)."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Any]
    clock: Clock
    bus: EventBus
    signer: TicketSigner
    fleet: MachineFleet
    families: FamilyRegistry
    users: UserService
    signatures: SignatureService
    network: NetworkService
    master_files: MasterFileService
    materials: MaterialService
    orders: OrderService
    dose_adjustment: DoseAdjustment
    designs: DesignService
    scheduling: SchedulingService
    production: ProductionService
    quality: QualityService
    custody: CustodyService
    custody_chain: CustodyChain
    vigilance: VigilanceService  # adverse events traced (docs/pharmacovigilance.md)
    runner: NetworkRunner
    telemetry: TelemetryService
    ingestor: TelemetryIngestor
    monitor: Monitor
    monitoring: MonitoringService
    charts: RunCharts
    comparability: ComparabilityService
    qms: QmsService  # the network's quality system (docs/central-qa.md)
    change_controls: ChangeControlService
    subscriber: MqttSubscriber | None = None
    # sites as nodes: this node's outbox and inbox (docs/replication.md); None: one database
    replication: ReplicationService | None = None
    link: NodeLink | None = None  # the serving node's replicator and inbox (start_replication)
    # release across the network (replication/releases.py): a site node sends its batches'
    # dossiers; the control node's QP decides on them
    dossiers: SiteDossiers | None = None
    remote_releases: ControlReleases | None = None
    # orders moved between site nodes (replication/transfers.py): the control node's side
    transfers: ControlTransfers | None = None

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, self.clock, self.bus)

    def start_telemetry(self) -> None:
        """Networked mode: subscribe to the broker (persistent QoS 1 session). A no-op in the
        embedded default, where machines deliver in-process."""
        url = self.settings.mqtt_url
        if url and self.subscriber is None:
            self.subscriber = MqttSubscriber(BrokerAddress.parse(url), self.ingestor.ingest)
            self.subscriber.start()

    def stop_telemetry(self) -> None:
        if self.subscriber is not None:
            self.subscriber.stop()
            self.subscriber = None
        self.ingestor.flush()

    def start_replication(self) -> None:
        """A serving node with a replication broker (NEARFAB_REPLICATION_URL): replicate its
        outbox and apply what it receives in the background. A no-op otherwise (not a node,
        or no broker named: `nearfab node replicate|receive` do it by hand)."""
        url = self.settings.replication_url
        if self.replication is None or not url or self.link is not None:
            return
        from nearfab.network.reads import control_site

        with self.uow() as uow:
            hub = control_site(uow.session)
            control = hub.id if hub is not None else None
        before_pass = self.dossiers.send_ready if self.dossiers is not None else None
        after_receive = None
        if self.transfers is not None:  # the control: hand over orders given up for a transfer
            before_pass = after_receive = self.transfers.hand_over_released
        self.link = NodeLink(
            self.replication,
            self.uow,
            BrokerAddress.parse(url),
            self.clock,
            control_site_id=control,
            before_pass=before_pass,
            after_receive=after_receive,
        )
        self.link.start()

    def stop_replication(self) -> None:
        if self.link is not None:
            self.link.stop()
            self.link = None

    def shutdown(self) -> None:
        """Write what is still buffered (telemetry, the verification log) before exit."""
        self.stop_replication()
        self.stop_telemetry()
        self.custody.flush_verification_log()


def _new_signing_key(path: Path) -> SigningKey:
    signer = TicketSigner.load_or_create(path)  # made: the path is new
    return SigningKey(signer.key_id, signer.public_key_pem, lambda b: signer.sign(b).signature)


def rekey(app: App, actor: Actor, reason: str, *, keep_old_audit_key: bool = False) -> RekeyResult:
    """`nearfab node rekey`: this data folder's own audit HMAC key and ticket/checkpoint
    signing key (identity/services/nodekeys.py). The app's ticket signer and machines keep
    the old key: build the app again (restart the node) before it signs tickets."""
    with app.uow() as uow:
        return rekey_node(
            uow,
            actor,
            Path(app.settings.data_dir) / "keys",
            reason=reason,
            make_signing_key=_new_signing_key,
            keep_old_audit_key=keep_old_audit_key,
        )


# each part of a product family, and the Protocol of the domain that calls it (docs/families.md)
FAMILY_PARTS: dict[str, type] = {
    "prescription": PrescriptionKit,
    "machines": MachineKit,
    "release": ReleaseKit,
    "labels": LabelKit,
    "simulation": SimulationKit,
}


def _members(protocol: type) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_")}
    return names | set(getattr(protocol, "__annotations__", {}))


def check_family_parts(family: ProductFamily) -> None:
    """Refuse to register a family that lacks a part, or a part that lacks a member its domain
    calls (TypeError naming the family, the part and the members), before any batch needs it."""
    own = _members(ProductFamily) - set(FAMILY_PARTS)
    problems = [f"{name}" for name in sorted(own) if not hasattr(family, name)]
    for part, protocol in FAMILY_PARTS.items():
        found = getattr(family, part, None)
        if found is None:
            problems.append(f"part {part!r} ({protocol.__module__}.{protocol.__name__})")
            continue
        missing = sorted(n for n in _members(protocol) if not hasattr(found, n))
        if missing:
            problems.append(f"{part}: {', '.join(missing)} ({protocol.__name__})")
    if problems:
        name = getattr(family, "name", type(family).__name__)
        raise TypeError(f"product family {name!r} is incomplete: " + "; ".join(problems))


def product_families() -> FamilyRegistry:
    """The product families this platform makes, registered once: the app's services and the
    network simulator (`nearfab simulate`, no database needed) reach them only through it."""
    families = FamilyRegistry(check=check_family_parts)
    families.register(SolidDoseFamily())
    families.register(CellTherapyFamily())
    families.register(BioprintFamily())
    families.register(DeviceFamily())
    return families


def account_policy(settings: Settings) -> AccountPolicy:
    """The account rules from the settings (docs/accounts-and-signatures.md)."""
    return AccountPolicy(
        min_length=settings.password_min_length,
        history=settings.password_history,
        max_age=timedelta(days=settings.password_max_age_days),
        lockout_after=settings.lockout_after_failures,
        idle_timeout=timedelta(minutes=settings.session_idle_minutes),
        lifetime=timedelta(hours=settings.session_lifetime_hours),
        totp_issuer=settings.totp_issuer,
    )


def build_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    machine_speed: float = 1.0,
    migrate: bool = True,
) -> App:
    """Wire the application. `machine_speed` > 1 makes simulated printers faster than real ones
    (demo, `network run`); they share the platform clock, so timestamps and expiries agree."""
    settings = settings or Settings()
    # the folder holds the database, keys and patient data: its owner only
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    if migrate:
        from nearfab.migrations import upgrade

        upgrade(url)
    engine = make_engine(url)
    session_factory = make_session_factory(engine)
    clock = clock or SystemClock()
    bus = EventBus()
    keys = Path(settings.data_dir) / "keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    # a rekey a crash cut short between its commit and its key files (identity/nodekeys.py)
    settle_pending_keys(keys, session_factory, lambda p: TicketSigner.load_or_create(p).key_id)
    signer = TicketSigner.load_or_create(keys / "control_site_ed25519.pem")
    vault = IdentityVault.load_or_create(keys / "patient_identity.key")
    totp_box = SecretBox.load_or_create(keys / "totp_secrets.key")
    # the audit rows' HMAC key and the control site's checkpoint signature (docs/audit-trail.md)
    audit_key = AuditChainKey.load_or_create(keys / "audit_chain.key")
    retired_mac, retired_signing = load_retired_keys(keys)  # a rekeyed node's earlier keys
    audit_keys = AuditKeys(
        mac_key=audit_key.key,
        key_id=signer.key_id,
        public_key_pem=signer.public_key_pem,
        sign=lambda body: signer.sign(body).signature,
        retired_mac=retired_mac,
        retired_signing=retired_signing,
    )
    install_audit_keys(engine, audit_keys)
    check_platform_keys(
        session_factory,
        clock,
        {
            "control_site_ed25519": signer.key_id,
            "patient_identity": vault.fingerprint,
            # seals the sites' ledger signing keys; every worker must share it
            "custody_ledger": KeyRing.load_or_create(keys / "custody_ledger.key").fingerprint,
            # encrypts users' TOTP secrets at rest
            "totp_secrets": totp_box.fingerprint,
            # the audit rows' MAC key
            "audit_chain": audit_key.fingerprint,
        },
    )
    families = product_families()
    fleet = MachineFleet(clock, signer.public_key_pem, families, time_scale=machine_speed)

    def uow() -> UnitOfWork:
        return UnitOfWork(session_factory, clock, bus)

    users = UserService(account_policy(settings), totp_box)
    signatures = SignatureService(users)
    node = NodeRole()  # a site node refuses the control site's use cases (common/node.py)
    network = NetworkService(node)
    telemetry = TelemetryService()
    ingestor = TelemetryIngestor(uow, network)
    fleet.telemetry = _gateways(settings, clock, ingestor)
    designs = DesignService(families)
    master_files = MasterFileService(
        signatures,
        network,
        node=node,
        checks=(
            lambda spec: designs.check_envelope(spec.product_family, spec.design_envelope),
            lambda spec: validate_release_rule(
                spec.release_rule, release_kit(families, spec.product_family)
            ),
            # a dose rule is judged by the family's prescription kit (docs/dose-adjustment.md)
            lambda spec: check_dose_rule(designs, spec.product_family, spec.dose_rule),
        ),
    )
    materials = MaterialService(network, master_files, FamilyLotRules(families))
    orders = OrderService(
        master_files,
        vault,
        designs,
        prescriptions=designs,
        max_bundle_entries=settings.bundle_max_entries,
    )
    dose_adjustment = DoseAdjustment(orders, master_files, designs, designs, vault, signatures)
    scheduling = SchedulingService(
        network, master_files, materials, orders, families, signatures=signatures
    )
    production = ProductionService(
        network, master_files, materials, orders, scheduling, families, signer, fleet, signatures
    )
    custody_ref: list[CustodyService] = []

    def packs_ready(u: UnitOfWork, batch_id: str) -> str | None:
        if custody_ref and not custody_ref[0].units_of_batch(u, batch_id):
            return "the batch's packs are not serialised yet; try again in a moment"
        return None

    monitoring = MonitoringService(telemetry, production, network, signatures, master_files)
    monitor = Monitor(network, telemetry)
    ingestor.on_points(monitor.on_points)

    # a machine that reports is alive: its running batch's lease is renewed (issue 12 item 10)
    def machine_reported(u: UnitOfWork, machine_id: str, _run: str, _points: Any) -> None:
        production.machine_report(u, machine_id)

    ingestor.on_points(machine_reported)
    ingestor.on_run_end(monitor.on_run_end)
    # batch-evolution MSPC: a running batch's trajectory against released runs' (docs/monitoring.md)
    ingestor.on_points(monitoring.on_batch_points)
    ingestor.on_run_end(monitoring.on_batch_run_end)
    quality = QualityService(
        production,
        master_files,
        materials,
        orders,
        signatures,
        families,
        release_check=packs_ready,
        open_alarms=monitoring.release_blockers,
        node=node,
    )
    custody = CustodyService(
        production, master_files, orders, quality, families=families, scheduling=scheduling
    )
    custody_chain = CustodyChain.build(custody, keys, materials, node)
    # every checkpoint carries the ledger heads and is itself an entry of the control chain
    audit_keys.ledger_heads = custody_chain.ledger.heads
    audit_keys.on_checkpoint = custody_chain.ledger.record_audit_checkpoint
    audit_keys.ledger_checkpoints = custody_chain.ledger.audit_checkpoints
    custody_ref.append(custody)
    # a site suspended by a proficiency round makes nothing of that master file (issue 19)
    comparability = ComparabilityService(network, master_files, families, signatures)
    network.site_holds.append(comparability.suspension_reason)
    # the network's quality system: CAPAs, complaints, change control (docs/central-qa.md)
    qms = QmsService(network, signatures)
    qms.look_up_packs_with(_pack_batch)
    change_controls = ChangeControlService(master_files, network, signatures)
    change_controls.count_work_with(work_in_progress)

    rtrt, serialiser = system_actor("rtrt"), system_actor("serialiser")
    planner = system_actor("planner")

    def serialise(event: BatchCompleted) -> None:
        with uow() as u:
            custody.commission(u, serialiser, event.batch_id)

    def evaluate(event: BatchCompleted) -> None:
        with uow() as u:
            quality.evaluate(u, rtrt, event.batch_id)

    def on_dispositioned(event: BatchDispositioned) -> None:
        with uow() as u:
            custody.apply_disposition(u, serialiser, event.batch_id, event.decision)

    def sweep() -> None:
        """Retry what a failed reaction left undone for made batches (runs each runner step)."""
        with uow() as u:
            # a site node sweeps its own site's batches only (its copy holds the others')
            made = [
                b for b in production.batches(u, status="completed") if node.works_for(b.site_id)
            ]
            unserialised = [b.id for b in made if not custody.units_of_batch(u, b.id)]
            unevaluated = [b.id for b in made if quality.review_for(u, b.id) is None]
        with uow() as u:
            lagging = [
                (b, d)
                for b, d in custody.lagging_dispositions(u)
                if node.works_for(production.get(u, b).site_id)
            ]
        retries: list[tuple[Callable[[Any], None], object]] = [
            *((serialise, BatchCompleted(b)) for b in unserialised),
            *((evaluate, BatchCompleted(b)) for b in unevaluated),
            *((on_dispositioned, BatchDispositioned(b, d)) for b, d in lagging),
        ]
        for reaction, event in retries:
            try:
                reaction(event)
            except Exception:  # still failing: logged, tried again next step
                log.exception("retrying %s for %r failed", reaction.__name__, event)
        try:  # replan when a machine failed, a lot was recalled, a site paused (no-op otherwise)
            with uow() as u:
                scheduling.refresh(u, planner)
        except Exception:
            log.exception("replanning failed")
        try:  # the control site anchors every site's ledger head in its own chain
            if not node.site_node:  # a site node's chains are anchored as the control gets them
                with uow() as u:
                    custody_chain.ledger.anchor(u, system_actor("ledger"))
        except Exception:
            log.exception("anchoring the custody ledger failed")
        try:  # a signed checkpoint of the audit and ledger heads when due (docs/audit-trail.md)
            with uow() as u:
                checkpoint_if_due(u)
        except Exception:
            log.exception("the audit checkpoint failed")

    runner = NetworkRunner(uow, network, master_files, orders, scheduling, production, sweep=sweep)

    # each reaction on its own, so one failing leaves the others done (sweep retries it)
    bus.subscribe(BatchCompleted, serialise)
    bus.subscribe(BatchCompleted, evaluate)
    bus.subscribe(BatchDispositioned, on_dispositioned)
    bus.subscribe(MonitoringModelsChanged, monitor.models_changed)

    replication = _replication(settings, engine, session_factory, clock)
    if replication is not None:  # its anchors signed in this node's chain
        replication.ledger = custody_chain.ledger
    dossiers: SiteDossiers | None = None
    remote_releases: ControlReleases | None = None
    transfers: ControlTransfers | None = None
    if replication is not None:  # a site node: the control's decisions, its use cases refused
        from nearfab.network.reads import control_site
        from nearfab.replication.decisions import wire_site_node

        with session_factory() as session:
            hub = control_site(session)
        wire_site_node(
            replication,
            hub.id if hub is not None else None,
            recalls=custody_chain.recalls,
            alerts=custody.packs,
            node=node,
            releases=quality.remote,
            master_files=master_files,
            orders=orders,
            plans=scheduling,
            transfers=SiteReleases(replication, scheduling, custody_chain.ledger),
        )
        if node.site_node:  # its batches' dossiers go to the control site's QP
            dossiers = SiteDossiers(
                replication, quality.remote, quality.pending, custody_chain.ledger
            )
        else:  # the control node: its QP decides on the sites' dossiers, and it makes
            # nothing for another site (its copy's orders and machines are theirs)
            remote_releases = ControlReleases(replication, quality.remote, custody_chain.ledger)
            node.site_id = replication.site_id
            ledger, control_id = custody_chain.ledger, replication.site_id
            master_files.on_published(sign_decisions(ledger, control_id, "published"))
            master_files.on_withdrawn(sign_decisions(ledger, control_id, "withdrawn"))
            custody_chain.recalls.on_created(sign_decisions(ledger, control_id, "recall"))
            orders.on_taken(hand_over_orders(ledger, control_id))
            orders.on_cancelled(hand_over_cancellations(ledger, control_id))
            transfers = ControlTransfers(replication, orders, ledger)  # orders between sites
            comparability.reports.received_batches = received_batches  # the sites' batches

    return App(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        clock=clock,
        bus=bus,
        signer=signer,
        fleet=fleet,
        families=families,
        users=users,
        signatures=signatures,
        network=network,
        master_files=master_files,
        materials=materials,
        orders=orders,
        dose_adjustment=dose_adjustment,
        designs=designs,
        scheduling=scheduling,
        production=production,
        quality=quality,
        custody=custody,
        custody_chain=custody_chain,
        vigilance=VigilanceService(custody_chain.trace),
        runner=runner,
        dossiers=dossiers,
        remote_releases=remote_releases,
        transfers=transfers,
        telemetry=telemetry,
        ingestor=ingestor,
        monitor=monitor,
        monitoring=monitoring,
        charts=RunCharts(telemetry, network),
        comparability=comparability,
        qms=qms,
        change_controls=change_controls,
        replication=replication,
    )


def _pack_batch(uow: UnitOfWork, serial: str) -> str | None:
    """A pack's serial -> its batch id (a complaint names the pack)."""
    from sqlalchemy import select

    from nearfab.custody import SerialUnit

    return uow.session.scalar(select(SerialUnit.batch_id).where(SerialUnit.serial == serial))


def _gateways(
    settings: Settings, clock: Clock, ingestor: TelemetryIngestor
) -> Callable[[Machine], MachineGateway]:
    """How simulated machines publish: in-process by default, over MQTT in networked mode
    (each machine its own connection, its death certificate registered as the will)."""

    def gateway(machine: Machine) -> MachineGateway:
        bd_seq = round(clock.now().timestamp() * 1000)
        publisher: Publisher
        if settings.mqtt_url:
            publisher = MqttPublisher(
                BrokerAddress.parse(settings.mqtt_url),
                f"nearfab-machine-{machine.id}",
                will=MachineGateway.death_certificate(machine.site_id, machine.id, bd_seq),
            )
        else:
            publisher = LocalPublisher(ingestor.submit)
        return MachineGateway(
            machine.site_id, machine.id, publisher, clock, bd_seq=bd_seq, firmware=machine.firmware
        )

    return gateway


def _replication(
    settings: Settings, engine: Engine, session_factory: sessionmaker[Any], clock: Clock
) -> ReplicationService | None:
    """A node (NEARFAB_NODE_SITE set): every transaction appends the records the node owns to
    its outbox (replication/capture.py). Unset: the network is one database, nothing to do."""
    if not settings.node_site:
        return None
    from sqlalchemy import select

    from nearfab.network import Site
    from nearfab.network.reads import control_site

    with session_factory() as session:
        found = session.scalar(
            select(Site).where((Site.code == settings.node_site) | (Site.id == settings.node_site))
        )
        if found is None:
            raise ValueError(f"node_site: no site {settings.node_site!r} (give its code or id)")
        hub = control_site(session)
        site_id, control = found.id, hub is not None and hub.id == found.id
    config = node_capture(site_id, clock, control=control)
    install_capture(engine, config)
    return ReplicationService(config)
