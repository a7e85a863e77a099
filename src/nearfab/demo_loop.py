"""The demo's background activity: a stream of prescriptions, machines advancing, an injected
fault, and a QP autopilot that signs only batches the RTRT rule proposed for release."""

from __future__ import annotations

import logging
import random
import threading
import time

from nearfab.bootstrap import App
from nearfab.common.errors import DomainError
from nearfab.demo import (
    AUTOPILOT,
    HYDROCORTISONE,
    PROPRANOLOL,
    automated_operator,
    complete_record,
    prescription_bundle,
)
from nearfab.identity import actor_of, system_actor
from nearfab.network import SiteKind, SiteStatus
from nearfab.production import Fault

log = logging.getLogger(__name__)


class DemoLoop:
    def __init__(
        self,
        app: App,
        *,
        qp_password: str | None,
        tick_s: float = 2.0,
        prescription_every_s: float = 8.0,
        fault_machine: str = "GSTT printer A",
        seed: int = 7,
        max_orders: int = 60,
    ) -> None:
        self.app = app
        self._password = qp_password
        self._tick = tick_s
        self._rx_every = prescription_every_s
        self._fault_machine = fault_machine
        self._rng = random.Random(seed)
        self._max_orders = max_orders
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nearfab-demo", daemon=True)
        self._submitted = 0
        self._fault_pending = True
        self._not_signed: set[str] = set()  # refused once: left for a person, not retried
        self._qualified = False
        # a node of a replicated network (`nearfab demo --nodes`) works for its own site only:
        # a site node takes its own site's prescriptions and leaves release to the control
        # site; the control node takes one central prescription for a site, which it hands
        # over to that site's node (docs/replication.md, "Orders handed over to the sites")
        self._node_site = app.replication.site_id if app.replication is not None else None
        self._site_node = app.network.node.site_node
        self._central = self._node_site is not None and not self._site_node
        if self._central:
            self._max_orders = min(self._max_orders, 1)

    def start(self) -> None:
        self.inject_fault()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def inject_fault(self) -> None:
        """A partial nozzle clog on the demo's fault machine, from the fifth tablet on."""
        with self.app.uow() as uow:
            machines = [
                m for m in self.app.network.list_machines(uow) if m.name == self._fault_machine
            ]
        if machines:
            self.app.fleet.inject_fault(machines[0], Fault("nozzle_clog", 0.3, from_unit=4))

    def _run(self) -> None:
        last_rx = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            due = now - last_rx >= self._rx_every and self._submitted < self._max_orders
            try:
                self.tick(submit=due)
            except Exception:  # keep the demo alive; the error is in the log
                log.exception("demo loop step failed")
            if due:
                last_rx = now
            self._stop.wait(self._tick)

    def tick(self, *, submit: bool) -> None:
        """One round: maybe a new prescription, the machines, the fault's end, the autopilot."""
        if submit:
            self.submit_one()
        self.app.runner.step()
        self.sign_before_start()
        self._clear_fault_after_first_hit()
        self.autopilot()
        self.autopilot_remote()
        self.qualify_monitoring()

    def submit_one(self) -> None:
        medication = "hydrocortisone" if self._rng.random() < 0.75 else "propranolol"
        bundle = prescription_bundle(
            self._rng, today=self.app.clock.now().date(), medication=medication
        )
        try:
            with self.app.uow() as uow:
                # every order belongs to a site: the demo's point-of-care sites take turns
                sites = sorted(
                    s.code
                    for s in self.app.network.list_sites(uow)
                    if s.kind != SiteKind.CONTROL.value
                    and s.status == SiteStatus.ACTIVE.value
                    and (self._central or self._node_site in (None, s.id))
                )
                if not sites:
                    log.warning("demo prescription not sent: no active point-of-care site")
                    return
                site = sites[self._submitted % len(sites)]
                self.app.orders.submit(uow, system_actor("demo-prescriber"), bundle, site_id=site)
            self._submitted += 1
        except DomainError as exc:
            log.warning("demo prescription refused: %s", exc.message)

    def _clear_fault_after_first_hit(self) -> None:
        if not self._fault_pending:
            return
        with self.app.uow() as uow:
            for review in self.app.quality.pending(uow):
                batch = self.app.production.get(uow, review.batch_id)
                machine = self.app.network.get_machine(uow, batch.machine_id)
                if machine.name == self._fault_machine and review.proposed_decision != "release":
                    self.app.fleet.clear_faults(machine)
                    self._fault_pending = False

    def qualify_monitoring(self) -> None:
        """Once a product has three released runs on a machine type, fit its SPC and MSPC models
        (as the demo admin) and approve them (signed by the QP autopilot): from then on its
        telemetry is scored live. A real site does this from its performance-qualification runs."""
        if self._password is None or self._qualified:
            return
        with self.app.uow() as uow:
            admin_user = self.app.users.by_username(uow, "admin")
            qp_user = self.app.users.by_username(uow, AUTOPILOT)  # signs, not a person
            in_force = {
                (m.kind, m.master_file_code, m.machine_type)
                for m in self.app.monitoring.active_models(uow)
            }
            # the demo's RTRT stream: its printlet products (the cell product's runs are made
            # only when a person prescribes one)
            products = {HYDROCORTISONE, PROPRANOLOL} & {
                mf.code for mf in self.app.master_files.effective(uow)
            }
            if admin_user is None or qp_user is None:
                return
            admin, qp = actor_of(admin_user, uow.session), actor_of(qp_user, uow.session)
        done = True
        for code in sorted(products):
            for kind in ("spc", "mspc"):
                if (kind, code, "tablet_printer") in in_force:
                    continue
                with self.app.uow() as uow:
                    runs = self.app.monitoring.qualified_runs(uow, code, "tablet_printer")
                if len(runs) < 3:
                    done = False
                    continue
                try:
                    with self.app.uow() as uow:
                        model = self.app.monitoring.train(
                            uow,
                            admin,
                            kind=kind,
                            master_file_code=code,
                            machine_type="tablet_printer",
                            runs=runs[:5],
                        )
                    with self.app.uow() as uow:
                        self.app.monitoring.approve(
                            uow,
                            qp,
                            model.id,
                            password=self._password,
                            meaning="QP approval of monitoring model (demo autopilot set-up)",
                        )
                except DomainError as exc:
                    log.warning("demo could not qualify %s %s: %s", kind, code, exc.message)
        self._qualified = done

    def sign_before_start(self) -> None:
        """The steps the machine waits for (line clearance, filament loaded) of the printlet
        batches the runner opened, signed under the site's "Demo operator (automated)" and
        the critical entry verified by the autopilot: the next runner step hands the batch to
        its machine. A cell product's steps wait for a person, as its release does. Off when
        the demo users' password is not known."""
        if self._password is None:
            return
        with self.app.uow() as uow:
            waiting = [
                (b.id, b.site_id, b.master_file_code)
                for b in self.app.production.batches(uow, status="in_progress")
                if b.handed_over_at is None
                and b.id not in self._not_signed
                and b.master_file_code in (HYDROCORTISONE, PROPRANOLOL)
                and self.app.production.steps_before_start(uow, b)
            ]
        for batch_id, site_id, code in waiting:
            try:
                performer = automated_operator(self.app, site_id, code, self._password)
                complete_record(
                    self.app,
                    batch_id,
                    self._password,
                    verifier=AUTOPILOT,
                    performer=performer,
                    before_start=True,
                )
            except DomainError as exc:
                self._not_signed.add(batch_id)
                log.warning("demo could not sign the steps before %s starts: %s", batch_id, exc)

    def autopilot_remote(self) -> None:
        """At the control node of `demo --nodes`: sign, as the demo QP, the site nodes'
        dossiers the RTRT rule proposed for release and the site reports ready
        (replication/releases.py); the decision goes back to the site node, which records it.
        Everything else waits for a person."""
        queue = self.app.remote_releases
        if self._password is None or queue is None:
            return
        with self.app.uow() as uow:
            qp_user = self.app.users.by_username(uow, AUTOPILOT)
            if qp_user is None:
                return
            qp = actor_of(qp_user, uow.session)
            ready = [
                (d.record_id, d.dossier["batch_id"], d.dossier["shown_hash"])
                for d in queue.read(uow, qp)
                if d.dossier["proposed_decision"] == "release"
                and not d.dossier["blockers"]
                and d.dossier["master_file_code"] in (HYDROCORTISONE, PROPRANOLOL)
                and d.record_id not in self._not_signed
            ]
        for record_id, batch_id, shown in ready:
            try:
                with self.app.uow() as uow:
                    queue.decide(
                        uow,
                        qp,
                        batch_id,
                        decision="release",
                        password=self._password,
                        meaning="QP release (demo autopilot: RTRT proposal accepted)",
                        shown_hash=shown,
                    )
            except DomainError as exc:  # this dossier is left for a person; a newer one is tried
                self._not_signed.add(record_id)
                log.warning("autopilot could not sign %s: %s", batch_id, exc.message)

    def autopilot(self) -> None:
        """Sign RTRT 'release' proposals as the demo QP; leave everything else for a person.
        Before that, the batch's manual steps are signed under the site's automated operator
        (the critical entry verified by the autopilot) and the autopilot signs its audit-trail
        review.
        Off when the demo users' password is not known (an existing demo database)."""
        if self._password is None:
            return
        with self.app.uow() as uow:
            qp_user = self.app.users.by_username(uow, AUTOPILOT)
            # only the printlet products the autopilot is named for: a cell product waits for
            # the QP (its steps and audit-trail review are not signed by software either)
            batch_ids = [
                r.batch_id
                for r in self.app.quality.pending(uow)
                if r.proposed_decision == "release"
                and r.batch_id not in self._not_signed
                and self.app.production.get(uow, r.batch_id).master_file_code
                in (HYDROCORTISONE, PROPRANOLOL)
            ]
            if qp_user is None:
                return
            qp = actor_of(qp_user, uow.session)
        for batch_id in batch_ids:
            try:
                # the steps under the site's "Demo operator (automated)", each critical entry
                # verified by the autopilot: no person's account signs for the software
                with self.app.uow() as uow:
                    batch = self.app.production.get(uow, batch_id)
                    site_id, code = batch.site_id, batch.master_file_code
                performer = automated_operator(self.app, site_id, code, self._password)
                complete_record(
                    self.app, batch_id, self._password, verifier=AUTOPILOT, performer=performer
                )
                with self.app.uow() as uow:
                    self.app.quality.records.review_audit_trail(
                        uow,
                        qp,
                        batch_id,
                        password=self._password,
                        meaning="audit trail reviewed (demo autopilot)",
                    )
                if self._site_node:  # the release is the control site's: the dossier goes there
                    self._not_signed.add(batch_id)
                    continue
                with self.app.uow() as uow:
                    self.app.quality.decide(
                        uow,
                        qp,
                        batch_id,
                        decision="release",
                        password=self._password,
                        meaning="QP release (demo autopilot: RTRT proposal accepted)",
                    )
            except DomainError as exc:
                self._not_signed.add(batch_id)
                log.warning("autopilot could not sign %s: %s", batch_id, exc.message)
