"""The demo's cell therapy story: two patients of the demo's cell product (MF-CART-CMF, the
micro-factory at GSTT-PH), played on the platform's clock through the services a person uses.

- Patient A: prescribed (dose per kg and body weight, the collection's DIN), scheduled (the
  collection booked against the run's slot), eligibility and consent e-signed, collected (the
  patient and the DIN checked), a 7-day culture, the QC laboratory's endotoxin and mycoplasma
  results, released by the QP autopilot with sterility pending, handed over collection ->
  micro-factory -> cryostore (its storage log at -180 °C) -> infusion (the DIN on both sides,
  the patient at the bedside), thawed and infused; two or three days later the sterility
  culture reads positive: a deviation on the batch and a notice to the prescribing site.
- Patient B: the first run grows slowly (a `slow_growth` fault on the micro-factory's twin): at
  the longest validated culture it is harvested short of the dose, RTRT proposes rejection and
  the autopilot rejects it. A rejected order is final, so the prescriber sends a new
  prescription for a new collection (a new DIN), booked against the micro-factory's next slot
  and left for the people of the demo (eligibility, consent, the collection, then the QP).

Automated actions sign under accounts that say so: "Demo clinician (automated)" records
eligibility, consent and the collection, "Demo operator (automated)" performs the batch steps,
"Demo pharmacist (automated)" verifies critical entries and moves, logs, thaws and hands over
the bag, and the QP autopilot ("QP autopilot (demo only, not a person)") enters the
laboratory's results, reviews the audit trail and certifies. Prescriptions come from the demo
prescriber and plans and tickets from the platform's own components (system actors), as in the
demo loop. `nearfab demo` plays it when it seeds a new database, on a manual clock started
STORY_DAYS before now (seed_with_cell_story): the culture's days are platform days, and the story
ends before the live demo's clock begins.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings
from nearfab.db import make_engine
from nearfab.demo import (
    AUTOMATED_OPERATOR_NAME,
    AUTOMATED_OPERATORS,
    AUTOPILOT,
    CAR_T,
    CELL_MACHINE,
    CELL_SITE,
    DemoSeed,
    automated_operator,
    cell_therapy_bundle,
    complete_record,
    is_seeded,
    seed,
)
from nearfab.identity import Actor, AuditEntry, Role, actor_of, system_actor
from nearfab.production import Fault

# how far back the seed starts (at 07:00 UTC): from there to patient A's infusion the story
# takes 21.6 days of platform time whatever the weekday (runs of 7 and 12 days on the one
# micro-factory, after the collections' notice and lead), leaving 2 to 3 days before the real
# time, where its last events are played (the sterility result 15-16 days after harvest)
STORY_DAYS = 24
# one culture day of the micro-factory's twin is one day of the platform's clock (the fleet's
# 60 s of machine work per unit, scaled)
DAY_SPEED = 60.0 / 86400.0

CLINICIAN_AUTO = "clinician-auto"
OPERATOR_AUTO = AUTOMATED_OPERATORS[CELL_SITE]  # made by nearfab.demo.automated_operator
PHARMACIST_AUTO = "pharmacist-auto"
AUTOMATED_USERS = [  # (username, name, role): at the cell site, never a person's account
    (CLINICIAN_AUTO, "Demo clinician (automated)", Role.CLINICIAN),
    (OPERATOR_AUTO, AUTOMATED_OPERATOR_NAME, Role.OPERATOR),
    (PHARMACIST_AUTO, "Demo pharmacist (automated)", Role.PHARMACIST),
]
# what the clinician records before each collection (the family's pre-collection records)
PRE_COLLECTION = {
    "eligibility": (
        "Eligibility assessment EA-CART-v3",
        "The patient meets the apheresis criteria (blood counts, venous access, no active "
        "infection)",
    ),
    "consent": (
        "Consent form CF-CART-v2",
        "The patient gave informed consent to the collection and the autologous product",
    ),
}
# the QC laboratory's results before release (sterility reads later: pending at release)
LAB_RESULTS = {"endotoxin_eu_per_ml": 0.5, "mycoplasma": "negative"}
LAB_METHOD = "QC laboratory: Ph. Eur. 2.6.14 (LAL, kinetic chromogenic) and 2.6.7 (NAT)"
# the collections' ISBT 128 DINs (facility G1234, 2026, flags 00), as scanned
DIN_A, DIN_B, DIN_B_AGAIN = "=G12342600010100", "=G12342600010200", "=G12342600010300"
# the story's last events (the sterility result, patient B's new prescription) end this long
# before the live demo starts
FINALE = timedelta(hours=3)
SLOW_GROWTH = Fault("slow_growth", 0.6)  # the culture grows at 40 % of its rate
CRYOSTORE_C = -180.0  # vapour phase of liquid nitrogen (the label's limit: -150 °C)
STERILITY_DETAIL = (
    "Ph. Eur. 2.6.1 sterility test of the harvest sample (14-day incubation): growth in the "
    "aerobic medium; organism identification requested"
)
B_REJECTION = (
    "viable cell dose below specification: the culture grew slowly and was harvested short at "
    "the longest validated culture; a new collection is needed"
)


@dataclass(frozen=True)
class CellStory:
    """What the story made (ids), for the tests and the README's walk-through."""

    order_a: str
    batch_a: str
    unit_a: str
    order_b: str
    batch_b: str
    order_b_again: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def seed_with_cell_story(settings: Settings, password: str | None = None) -> DemoSeed | None:
    """Seed the demo network on a manual clock STORY_DAYS before now and play the cell story
    on it (`nearfab demo` on a new database); None when the database holds the demo already.
    Nothing is written after the real time: the live platform (its own clock) carries on from
    there. Telemetry stays in-process."""
    if _seeded_already(settings):
        return None  # without building a second platform on every restart
    real_now = datetime.now(UTC)
    start = (real_now - timedelta(days=STORY_DAYS)).replace(hour=7, minute=0, second=0)
    clock = ManualClock(start.replace(microsecond=0))
    story_settings = settings.model_copy(update={"mqtt_url": None})
    app = build_app(story_settings, clock=clock, machine_speed=DAY_SPEED)
    try:
        if is_seeded(app):
            return None
        result = seed(app, password)
        play_cell_story(app, result.password, latest=real_now)
    finally:
        app.shutdown()
        app.engine.dispose()
    automated = [username for username, _, _ in AUTOMATED_USERS]
    return replace(result, usernames=[*result.usernames, *automated])


def _seeded_already(settings: Settings) -> bool:
    """The demo's seed marker is in the database (read only; no database: False)."""
    engine = make_engine(settings.resolved_database_url())
    marker = select(AuditEntry.id).where(
        AuditEntry.entity_type == "platform", AuditEntry.entity_id == "demo-seed"
    )
    try:
        with engine.connect() as connection:
            return connection.execute(marker.limit(1)).first() is not None
    except SQLAlchemyError:  # a new database: no tables yet
        return False
    finally:
        engine.dispose()


def play_cell_story(app: App, password: str, *, latest: datetime | None = None) -> CellStory:
    """Play the story on the demo network `app` (its clock must be a ManualClock: the story
    moves it on, to `latest` at most)."""
    clock = app.clock
    if not isinstance(clock, ManualClock):
        raise TypeError("the cell story moves the platform's clock: it needs a ManualClock")
    story = _Story(app, clock, password, latest)
    return story.play()


class _Story:
    def __init__(
        self, app: App, clock: ManualClock, password: str, latest: datetime | None
    ) -> None:
        self.app = app
        self.clock = clock
        self.password = password
        self.latest = latest
        self.rng = random.Random(15)
        self.prescriber = system_actor("demo-prescriber")
        self.planner = system_actor("planner")
        self.control = system_actor("control-site")
        self.agent = system_actor("site-agent")

    # --- the clock ------------------------------------------------------------------------------
    def at(self, when: datetime) -> None:
        """Move the clock on to `when` (never back)."""
        if when > self.clock.now():
            self.clock.advance((when - self.clock.now()).total_seconds())

    def wait(self, hours: float) -> None:
        self.clock.advance(hours * 3600.0)

    # --- accounts -------------------------------------------------------------------------------
    def actor(self, username: str) -> Actor:
        with self.app.uow() as uow:
            user = self.app.users.by_username(uow, username)
            if user is None:
                raise RuntimeError(f"the demo network has no account {username!r}")
            return actor_of(user, uow.session)

    def set_up(self) -> None:
        """The story's automated accounts at the cell site (the operator trained on the cell
        product), and the QP autopilot named for it (an administrator asks, the second
        approves)."""
        app, boot = self.app, system_actor("demo-seed")
        with app.uow() as uow:
            site_id = app.network.get_site(uow, CELL_SITE).id
        for username, full_name, role in AUTOMATED_USERS:
            if username == OPERATOR_AUTO:
                automated_operator(app, site_id, CAR_T, self.password)  # trained on it
                continue
            with app.uow() as uow:
                app.users.create_user(
                    uow,
                    boot,
                    username=username,
                    full_name=full_name,
                    roles=[role],
                    password=self.password,
                    home_site_id=site_id,
                    temporary=False,
                )
        autopilot = self.actor(AUTOPILOT)
        with app.uow() as uow:
            request = app.master_files.assign_qp(
                uow,
                self.actor("admin"),
                CAR_T,
                autopilot.user_id,
                reason="demo only: the QP autopilot certifies the scripted cell therapy story",
            )
        with app.uow() as uow:
            app.users.decide_request(
                uow, self.actor("admin-two"), request.id, approve=True, reason="demo story"
            )

    # --- the steps ------------------------------------------------------------------------------
    def prescribe(self, bundle: dict[str, Any]) -> str:
        with self.app.uow() as uow:
            [order] = self.app.orders.submit(uow, self.prescriber, bundle, site_id=CELL_SITE)
            if order.status != "designed":
                raise RuntimeError(f"the story's prescription stopped: {order.stop_reason}")
            return order.id

    def schedule(self, order_id: str) -> str:
        """Planned onto the micro-factory; the collection is booked against the run's slot."""
        with self.app.uow() as uow:
            return self.app.scheduling.schedule(uow, self.planner, order_id).id

    def patient_ref(self, order_id: str) -> str:
        with self.app.uow() as uow:
            order = self.app.orders.get(uow, order_id)
            return self.app.orders.patient(uow, order.patient_id).ref

    def before_collection(self, order_id: str) -> None:
        """The clinician records (e-signed) the patient's eligibility and consent."""
        clinician = self.actor(CLINICIAN_AUTO)
        for kind, (reference, statement) in PRE_COLLECTION.items():
            with self.app.uow() as uow:
                self.app.scheduling.record_pre_collection(
                    uow,
                    clinician,
                    order_id,
                    kind=kind,
                    reference=reference,
                    statement=statement,
                    password=self.password,
                )

    def collect(self, order_id: str, din: str) -> None:
        """On the booked day: the collection, recorded with the patient as presented and the
        DIN scanned off the collection bag's label."""
        with self.app.uow() as uow:
            booked = self.app.scheduling.collections.open_for(uow, order_id)
            if booked is None:
                raise RuntimeError(f"order {order_id} has no collection booked")
            self.at(booked.collection_at)
        patient = self.patient_ref(order_id)
        with self.app.uow() as uow:
            self.app.scheduling.record_collected(
                uow, self.actor(CLINICIAN_AUTO), order_id, identifier=din, patient=patient
            )

    def make(self, job_id: str, fault: Fault | None = None) -> str:
        """At the run's planned start (or now, when later): ticketed, started by the automated
        operator, run by the micro-factory's twin (the culture's days pass on the clock) and
        its evidence recorded. Returns the batch id."""
        app = self.app
        with app.uow() as uow:
            self.at(app.scheduling.get(uow, job_id).planned_start)
        with app.uow() as uow:
            app.production.issue_ticket(uow, self.control, job_id)
        with app.uow() as uow:
            batch_id = app.production.start_batch(uow, self.actor(OPERATOR_AUTO), job_id).id
        # the steps the machine waits for (line clearance, the collection received) signed,
        # then the ticket handed to the micro-factory
        complete_record(app, batch_id, self.password, verifier=PHARMACIST_AUTO, before_start=True)
        with app.uow() as uow:
            app.production.hand_over(uow, self.agent, batch_id)
        with app.uow() as uow:
            machine = next(m for m in app.network.list_machines(uow) if m.name == CELL_MACHINE)
            uow.session.expunge(machine)
        app.fleet.clear_faults(machine)
        if fault is not None:
            app.fleet.inject_fault(machine, fault)
        try:
            with app.uow() as uow:
                outcome = app.production.execute(uow, batch_id)
        finally:
            app.fleet.clear_faults(machine)
        with app.uow() as uow:
            app.production.record_run(uow, self.agent, batch_id, outcome)
        return batch_id

    def lab_results(self, batch_id: str) -> None:
        """The QC laboratory's results known before release (the analyst: the autopilot)."""
        with self.app.uow() as uow:
            self.app.quality.lab_results.enter(
                uow,
                self.actor(AUTOPILOT),
                batch_id,
                results=LAB_RESULTS,
                method=LAB_METHOD,
                password=self.password,
                meaning="results entered by (demo autopilot, for the QC laboratory)",
            )

    def record_steps(self, batch_id: str) -> None:
        """The manual steps, signed by the automated operator; critical entries verified by
        the automated pharmacist."""
        complete_record(self.app, batch_id, self.password, verifier=PHARMACIST_AUTO)

    def release(self, batch_id: str) -> None:
        """The autopilot reviews the audit trail and certifies the RTRT proposal (release, with
        sterility pending: the signature's meaning says so and opens its follow-up)."""
        autopilot = self.actor(AUTOPILOT)
        with self.app.uow() as uow:
            self.app.quality.records.review_audit_trail(
                uow,
                autopilot,
                batch_id,
                password=self.password,
                meaning="audit trail reviewed (demo autopilot)",
            )
        with self.app.uow() as uow:
            self.app.quality.decide(
                uow,
                autopilot,
                batch_id,
                decision="release",
                password=self.password,
                meaning="QP release (demo autopilot: the RTRT proposal accepted)",
            )

    def reject(self, batch_id: str, reason: str) -> None:
        """The RTRT rule proposed rejection: the autopilot signs it (a rejection needs no
        complete record nor audit-trail review; the record stays as the machine left it)."""
        with self.app.uow() as uow:
            self.app.quality.decide(
                uow,
                self.actor(AUTOPILOT),
                batch_id,
                decision="reject",
                password=self.password,
                meaning="QP reject (demo autopilot: the RTRT proposal accepted)",
                reason=reason,
            )

    def unit_and_scan(self, batch_id: str) -> tuple[str, str]:
        """The batch's one bag and what a scanner reads off its label."""
        with self.app.uow() as uow:
            [unit] = self.app.custody.units_of_batch(uow, batch_id)
            [label] = self.app.custody.labels(uow, unit.id)
            return unit.id, label.identifier.element_string()

    def hand_over(
        self, scan: str, src: str, dst: str, din: str, patient: str | None = None
    ) -> None:
        """Both sides scan the bag and its DIN (the demo's automated pharmacist, for each
        side); at the bedside, with the patient as presented."""
        with self.app.uow() as uow:
            self.app.custody.hand_over(
                uow,
                self.actor(PHARMACIST_AUTO),
                scan=scan,
                from_step=src,
                to_step=dst,
                received_scan=scan,
                identifier=din,
                received_identifier=din,
                patient=patient,
            )

    def log_cryostore(self, unit_id: str, since: datetime) -> None:
        """The cryostore's logger, downloaded: one reading a day since the bag went in."""
        readings, at = [], since
        while at <= self.clock.now():
            readings.append((at, CRYOSTORE_C))
            at += timedelta(days=1)
        with self.app.uow() as uow:
            self.app.custody.log_storage(
                uow, self.actor(PHARMACIST_AUTO), unit_ids=[unit_id], readings=readings
            )

    def infuse(self, order_id: str, unit_id: str, scan: str) -> None:
        """Thawed at the bedside (the in-use period starts), then handed over for infusion to
        the patient the order names."""
        pharmacist = self.actor(PHARMACIST_AUTO)
        with self.app.uow() as uow:
            self.app.custody.prepare(uow, pharmacist, scan=scan, unit_id=unit_id)
        self.wait(0.5)
        patient_ref = self.patient_ref(order_id)
        with self.app.uow() as uow:
            self.app.custody.dispense(uow, pharmacist, scan=scan, patient_ref=patient_ref)

    def sterility_fails(self, batch_id: str) -> None:
        with self.app.uow() as uow:
            self.app.quality.followups.enter_result(
                uow,
                self.actor(AUTOPILOT),
                batch_id,
                "sterility",
                outcome="fail",
                detail=STERILITY_DETAIL,
                password=self.password,
                meaning="sterility result entered (demo autopilot, for the QC laboratory)",
            )

    # --- the story ------------------------------------------------------------------------------
    def play(self) -> CellStory:
        self.set_up()
        self.wait(2)
        today = self.clock.now().date()
        order_a = self.prescribe(
            cell_therapy_bundle(self.rng, today=today, dose_per_kg=2.0e6, weight_kg=70.0, din=DIN_A)
        )
        job_a = self.schedule(order_a)
        self.wait(1)
        first_b = cell_therapy_bundle(
            self.rng, today=today, dose_per_kg=3.0e6, weight_kg=55.0, din=DIN_B
        )
        order_b = self.prescribe(first_b)
        job_b = self.schedule(order_b)
        self.wait(2)
        self.before_collection(order_a)
        self.before_collection(order_b)

        # patient A: collected, 7 days of culture, the laboratory's results, released with
        # sterility pending, into the cryostore
        self.collect(order_a, DIN_A)
        batch_a = self.make(job_a)
        self.wait(2)
        self.record_steps(batch_a)
        self.wait(4)
        self.lab_results(batch_a)
        self.wait(1)
        self.release(batch_a)
        unit_a, scan_a = self.unit_and_scan(batch_a)
        self.wait(1)
        self.hand_over(scan_a, "collection", "micro_factory", DIN_A)
        self.wait(0.5)
        self.hand_over(scan_a, "micro_factory", "cryostore", DIN_A)
        stored_at = self.clock.now()

        # patient B: the micro-factory's next run grows slowly: harvested short of the dose,
        # the RTRT rule proposes rejection and the autopilot rejects it
        self.collect(order_b, DIN_B)
        batch_b = self.make(job_b, SLOW_GROWTH)
        self.wait(3)
        self.reject(batch_b, B_REJECTION)

        # patient A is ready for the cells: out of the cryostore to the bedside (the patient
        # checked), thawed, infused
        self.wait(1)
        self.log_cryostore(unit_a, stored_at)
        patient_a = self.patient_ref(order_a)
        self.hand_over(scan_a, "cryostore", "infusion", DIN_A, patient=patient_a)
        self.wait(0.5)
        self.infuse(order_a, unit_a, scan_a)

        # a day or so later (just before the live demo starts), patient A's sterility culture
        # reads positive: a deviation and a notice to the prescribing site
        self.wait(20)
        if self.latest is not None:
            self.at(self.latest - FINALE)
        self.sterility_fails(batch_a)

        # patient B: the prescriber asks for a new collection (a new prescription, a new DIN);
        # it is booked against the micro-factory's next slot, for the people of the demo to
        # carry on (eligibility, consent and the collection, then the QP's release)
        self.wait(1)
        again = _again(first_b, self.rng, today=self.clock.now().date(), din=DIN_B_AGAIN)
        order_b_again = self.prescribe(again)
        self.schedule(order_b_again)
        if self.latest is not None and self.clock.now() > self.latest:
            raise RuntimeError(
                f"the cell story ran on to {self.clock.now().isoformat()}, past the real time "
                f"{self.latest.isoformat()}: raise STORY_DAYS"
            )
        return CellStory(
            order_a=order_a,
            batch_a=batch_a,
            unit_a=unit_a,
            order_b=order_b,
            batch_b=batch_b,
            order_b_again=order_b_again,
        )


def _again(first: dict[str, Any], rng: random.Random, *, today: Any, din: str) -> dict[str, Any]:
    """A new prescription for the patient of `first`: the same Patient and weight, a new
    MedicationRequest (its own id) naming the new collection's DIN."""
    fresh = cell_therapy_bundle(rng, today=today, din=din)
    patient = first["entry"][0]["resource"]
    request = fresh["entry"][1]["resource"]
    weight = first["entry"][2]["resource"]
    request["subject"] = {"reference": f"Patient/{patient['id']}"}
    request["dosageInstruction"] = first["entry"][1]["resource"]["dosageInstruction"]
    fresh["entry"][0] = first["entry"][0]
    fresh["entry"][2] = {
        **first["entry"][2],
        "resource": {**weight, "id": f"{weight['id']}-again"},
    }
    fresh["entry"][2]["fullUrl"] = f"urn:uuid:{weight['id']}-again"
    return fresh
