"""Order use cases: take FHIR prescriptions in, keep patients pseudonymised, design each order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm.attributes import flag_modified

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.common.errors import (
    Conflict,
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
    audit,
    audited_transition,
    authorize,
    visible_sites,
)
from nearfab.masterfiles import MasterFileService
from nearfab.network import SiteKind
from nearfab.network.reads import sites_by_code, sites_by_id
from nearfab.orders.enums import ORDER_TRANSITIONS, OrderStatus
from nearfab.orders.fhir import (
    DEFAULT_MAX_ENTRIES,
    SITE_SYSTEM,
    PrescriptionIn,
    parse_prescriptions,
)
from nearfab.orders.handover import check_handed_over_cancellation, install_handover
from nearfab.orders.identification import (
    PatientIdentification,
    PatientMatch,
    PresentedIdentifiers,
)
from nearfab.orders.kit import PrescriptionKit, PrescriptionKits
from nearfab.orders.models import Order, Patient, PatientIdentity, Prescription
from nearfab.orders.vault import IdentityVault
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.masterfiles import MasterFile
    from nearfab.network import Site

DEFAULT_LEAD_TIME = timedelta(days=3)
IDENTIFIER_MAX = 255  # identifier system and value columns
UNIT_MAX = 32  # the order's dose_unit column


def add_order(
    uow: UnitOfWork,
    mf: MasterFile,
    *,
    prescription_id: str,
    patient_id: str,
    site_id: str,
    medication: str,
    dose: Quantity,
    doses_per_day: float | None,
    units: int,
    now: datetime,
    resubmit_of: str | None = None,
    supersedes: str | None = None,
    prescription_version: int = 1,
) -> Order:
    """A new order, RECEIVED under master file `mf` (its code, version and family), due
    DEFAULT_LEAD_TIME after `now`, added and flushed; its audit row is the caller's to write."""
    order = Order(
        id=new_id("ord"),
        prescription_id=prescription_id,
        patient_id=patient_id,
        site_id=site_id,
        resubmit_of=resubmit_of,
        supersedes=supersedes,
        prescription_version=prescription_version,
        master_file_id=mf.id,
        master_file_code=mf.code,
        master_file_version=mf.version,
        product_family=mf.product_family,
        status=OrderStatus.RECEIVED.value,
        medication=medication,
        dose_value=dose.value,
        dose_unit=dose.unit,
        doses_per_day=doses_per_day,
        units=units,
        patient_group=None,
        design=None,
        stop_reason=None,
        need_by=now + DEFAULT_LEAD_TIME,
        created_at=now,
        updated_at=now,
    )
    uow.session.add(order)
    uow.flush()
    return order


@dataclass(frozen=True)
class _Plan:
    """One prescription of a submission, checked and ready to store."""

    rx: PrescriptionIn
    master_file: MasterFile
    site_id: str
    identifier: tuple[str, str] | None
    # the dose and course size as the master file's product family accepted them
    dose: Quantity
    units: int
    resubmission: int = 0
    replaces: Order | None = None


@dataclass(frozen=True)
class DesignRequest:
    master_file: MasterFile
    # the dose as the family's prescription part accepted it (value and unit)
    dose: Quantity
    units: int
    birth_date: date | None
    on: date
    # the patient's body weight (kg) when the prescription carries it: a family that takes a
    # dose per kg of body weight checks it against its envelope and keeps it in the design
    weight: Quantity | None = None
    # the MedicationRequest's identifiers ("system|value"): a family may read one it knows
    # (e.g. the identity of starting material collected from the patient) into its design
    identifiers: tuple[str, ...] = ()


class Designer(Protocol):
    """Turns a prescription into a personalised design; raises Refused when outside the envelope."""

    def __call__(self, request: DesignRequest) -> tuple[dict[str, Any], str | None]:
        """Return (design, patient_group)."""
        ...


def dose_text(dose: Quantity) -> str:
    """A dose for the audit trail, exact (no rounding): "5 mg", "0.075 mg"."""
    value = dose.value
    number = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return f"{number} {dose.unit}"


def _identifier_of(rx: PrescriptionIn) -> tuple[str, str] | None:
    """The MedicationRequest's business identifier: its first identifier with a system."""
    for index, joined in enumerate(rx.identifiers):
        system, _, value = joined.partition("|")
        if not system or not value.strip():
            continue
        for part, text in (("system", system), ("value", value)):
            if len(text) > IDENTIFIER_MAX:
                where = f"{rx.fhir_path}.identifier[{index}].{part}"
                raise ValidationFailed(
                    f"{where}: {len(text)} characters; at most {IDENTIFIER_MAX}", field=where
                )
        return system, value
    return None


class OrderService:
    def __init__(
        self,
        master_files: MasterFileService,
        vault: IdentityVault,
        designer: Designer,
        *,
        prescriptions: PrescriptionKits,
        max_bundle_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._master_files = master_files
        self._vault = vault
        self._designer = designer
        # each product family's prescription part, found by the master file's family
        self._prescriptions = prescriptions
        self._max_entries = max_bundle_entries
        self._identification = PatientIdentification(vault)
        # called with (uow, actor, order) for each order taken, in the intake's transaction:
        # the control node hands a site's order over to that site's node (bootstrap)
        self._on_taken: list[Callable[[UnitOfWork, Actor, Order], None]] = []
        # called with (uow, actor, order, reason) for each order cancelled, in its transaction
        self._on_cancelled: list[Callable[[UnitOfWork, Actor, Order, str], None]] = []

    def on_cancelled(self, hook: Callable[[UnitOfWork, Actor, Order, str], None]) -> None:
        """Call `hook(uow, actor, order, reason)` for every order cancelled (`cancel`), in the
        transaction that cancels it: at the control node, a handed-over order's cancellation
        is handed over to its site's node (bootstrap)."""
        self._on_cancelled.append(hook)

    def check_handed_over_cancellation(
        self, uow: UnitOfWork, body: dict[str, Any], *, site_id: str
    ) -> Order | None:
        """At a site node: the order a cancellation made at the control names, if this site's
        rules let it be cancelled (orders/handover.py); None if cancelled here already."""
        return check_handed_over_cancellation(uow, body, site_id=site_id)

    def on_taken(self, hook: Callable[[UnitOfWork, Actor, Order], None]) -> None:
        """Call `hook` for every order taken (a new version of an order too: a dose adjusted),
        in the transaction that stores it."""
        self._on_taken.append(hook)

    def taken(self, uow: UnitOfWork, actor: Actor, order: Order) -> None:
        """Tell the `on_taken` hooks of an order just stored, in the caller's transaction: at
        the control node, an order for a site (or its new version) is handed over to that
        site's node (docs/replication.md, "Orders handed over to the sites")."""
        for hook in self._on_taken:
            hook(uow, actor, order)

    def take_handed_over(
        self, uow: UnitOfWork, actor: Actor, body: dict[str, Any], *, site_id: str, note: str
    ) -> tuple[Order, bool]:
        """At a site node: store an order the control node took for this site, or a new
        version of one it handed over (a dose adjusted there), with its ids (orders/handover.py
        `install_handover`), in the caller's transaction. A refusal whose code is in
        `HANDOVER_WAITS` may come right by itself here (the version not yet effective): the
        caller tries again later; any other refusal is final."""
        return install_handover(
            uow,
            actor,
            body,
            site_id=site_id,
            vault=self._vault,
            master_files=self._master_files,
            note=note,
        )

    # --- intake ------------------------------------------------------------------------------
    def submit(
        self,
        uow: UnitOfWork,
        actor: Actor,
        document: str | bytes | Mapping[str, Any],
        *,
        site_id: str | None = None,
        resubmit_of: str | None = None,
    ) -> list[Order]:
        """Accept a FHIR MedicationRequest or Bundle: all its prescriptions or none of them.

        Every order belongs to a site (docs/prescriptions.md): the site named here (`site_id`,
        an id or a code), else the prescriber's organisation (an Organization identifier in
        SITE_SYSTEM), else the submitting user's own point-of-care site; with none of them the
        submission is refused (field `site`). Site staff order for their own site only.

        The same prescription (identifier system + value) for the same patient is taken once:
        a second submission is refused naming the existing order (409), unless that order was
        cancelled and `resubmit_of` names it (audited on both orders)."""
        authorize(actor, Permission.ORDER_SUBMIT)  # the role; the site once it is known
        named = self._named_site(uow, site_id) if site_id is not None else None
        prescriptions = parse_prescriptions(document, max_entries=self._max_entries)
        # check every prescription before storing anything
        plans: list[_Plan] = []
        for rx in prescriptions:
            ordering = self._ordering_site(uow, actor, rx, named)
            authorize(actor, Permission.ORDER_SUBMIT, site_id=ordering)
            mf, kit = self._master_file_for(uow, rx)
            dose, units = self._accepted(rx, mf, kit)
            plans.append(_Plan(rx, mf, ordering, _identifier_of(rx), dose, units))
        plans = self._check_duplicates(uow, plans, resubmit_of)
        try:
            orders = [self._store(uow, actor, plan) for plan in plans]
            for order in orders:
                self.taken(uow, actor, order)
            uow.commit()
        except Conflict:
            # a concurrent submission of the same prescription won the unique key: name it
            uow.session.rollback()
            self._check_duplicates(uow, plans, resubmit_of)
            raise
        return orders

    # --- the ordering site --------------------------------------------------------------------
    @staticmethod
    def _named_site(uow: UnitOfWork, ref: str) -> Site:
        """The site named at intake, by id or by code; a point-of-care site."""
        site = sites_by_id(uow.session, [ref]).get(ref)
        site = site or sites_by_code(uow.session, [ref]).get(ref)
        if site is None:
            raise ValidationFailed(f"site: no site {ref!r} (give a site id or code)", field="site")
        if site.kind == SiteKind.CONTROL.value:
            raise ValidationFailed(
                f"site: {site.code} is the control site; an order belongs to the point-of-care "
                "site that orders it",
                field="site",
            )
        return site

    def _ordering_site(
        self, uow: UnitOfWork, actor: Actor, rx: PrescriptionIn, named: Site | None
    ) -> str:
        where = f"{rx.fhir_path}.requester"
        from_org: Site | None = None
        if len(rx.prescriber_site_codes) > 1:
            raise ValidationFailed(
                f"{where}: the prescriber's organisation names several sites "
                f"({', '.join(rx.prescriber_site_codes)}); it must name one",
                field=where,
            )
        if rx.prescriber_site_codes:
            code = rx.prescriber_site_codes[0]
            from_org = sites_by_code(uow.session, [code]).get(code)
            if from_org is None or from_org.kind == SiteKind.CONTROL.value:
                raise ValidationFailed(
                    f"{where}: the prescriber's organisation names site {code!r} "
                    f"({SITE_SYSTEM}), which is not a point-of-care site of this network",
                    field=where,
                )
        if named is not None and from_org is not None and named.id != from_org.id:
            raise ValidationFailed(
                f"site: {named.code} was named, but the prescriber's organisation is site "
                f"{from_org.code}; an order belongs to one site",
                field="site",
            )
        if named is not None:
            return named.id
        if from_org is not None:
            return from_org.id
        home = (
            sites_by_id(uow.session, [actor.site_id]).get(actor.site_id) if actor.site_id else None
        )
        if home is not None and home.kind != SiteKind.CONTROL.value:
            return home.id
        raise ValidationFailed(
            "site: every order belongs to a point-of-care site; name it (site=<id or code>), "
            f"or send the prescriber's organisation as an Organization identifier in "
            f"{SITE_SYSTEM}",
            field="site",
        )

    # --- duplicates -----------------------------------------------------------------------------
    def _check_duplicates(
        self, uow: UnitOfWork, plans: list[_Plan], resubmit_of: str | None
    ) -> list[_Plan]:
        """Refuse a prescription already taken (naming its order); number an explicit
        resubmission of a cancelled order. Returns the plans with that numbering."""
        seen: dict[tuple[str, str, str], str] = {}
        out: list[_Plan] = []
        used = False
        for plan in plans:
            rx, ident = plan.rx, plan.identifier
            key = self._patient_key(rx)
            if ident is None or key is None:
                out.append(plan)
                continue
            field = f"{rx.fhir_path}.identifier"
            lookup = self._vault.lookup_hash(key)
            seen_key = (lookup, *ident)
            if seen_key in seen:
                raise ValidationFailed(
                    f"{field}: prescription {ident[0]}|{ident[1]} appears twice in this "
                    f"submission (also at {seen[seen_key]})",
                    field=field,
                )
            seen[seen_key] = rx.fhir_path
            patient = uow.session.scalar(select(Patient).where(Patient.lookup_hash == lookup))
            latest = (
                None
                if patient is None
                else uow.session.scalar(
                    select(Prescription)
                    .where(
                        Prescription.patient_id == patient.id,
                        Prescription.identifier_system == ident[0],
                        Prescription.identifier_value == ident[1],
                    )
                    .order_by(Prescription.resubmission.desc())
                    .limit(1)
                )
            )
            if latest is None:
                out.append(plan)
                continue
            # the latest version of its order (a dose adjusted makes a new one: 0027)
            existing = uow.session.scalar(
                select(Order)
                .where(Order.prescription_id == latest.id)
                .order_by(Order.prescription_version.desc())
                .limit(1)
            )
            existing_id = existing.id if existing is not None else "(none)"
            status = existing.status if existing is not None else "unknown"
            if resubmit_of is None or resubmit_of != existing_id:
                hint = (
                    f"; to make it again, resubmit with resubmit_of={existing_id}"
                    if status == OrderStatus.CANCELLED.value
                    else "; cancel that order first to submit it again"
                )
                raise Conflict(
                    f"{field}: prescription {ident[0]}|{ident[1]} for this patient was already "
                    f"received: order {existing_id} ({status}){hint}",
                    field=field,
                    code="duplicate_prescription",
                )
            if existing is None or status != OrderStatus.CANCELLED.value:
                raise Refused(
                    f"resubmit_of: order {existing_id} is {status}; only a cancelled order is "
                    "submitted again",
                    field="resubmit_of",
                    code="not_cancelled",
                )
            used = True
            out.append(
                _Plan(
                    rx,
                    plan.master_file,
                    plan.site_id,
                    ident,
                    plan.dose,
                    plan.units,
                    resubmission=latest.resubmission + 1,
                    replaces=existing,
                )
            )
        if resubmit_of is not None and not used:
            raise ValidationFailed(
                f"resubmit_of: order {resubmit_of} is not an earlier order of this prescription "
                "(same identifier, same patient)",
                field="resubmit_of",
            )
        return out

    @staticmethod
    def _patient_key(rx: PrescriptionIn) -> str | None:
        """What finds the same patient again (business identifiers); None: a new patient."""
        return "|".join(sorted(rx.patient_identifiers)) or None

    def _master_file_for(
        self, uow: UnitOfWork, rx: PrescriptionIn
    ) -> tuple[MasterFile, PrescriptionKit]:
        """The one effective master file that accepts one of the medication's codings: an
        ingredient code, or a product code the master file declares it makes (which codings
        name a product is its product family's knowledge: orders/kit.py). A prescribed product
        it does not declare is refused even when an ingredient coding matches: it may be
        another form or release. Returned with its family's prescription part, looked up once
        for the prescription."""
        field = rx.medication_field
        codings = [(c.system, c.code) for c in rx.medication_codes]
        matches = self._master_files.accepting(uow, codings)
        named = rx.medication_text or ", ".join(
            f"{c.display or c.code} ({c.system} {c.code})" for c in rx.medication_codes
        )
        if not matches:
            raise ValidationFailed(
                f"{field}: no effective master file accepts the medication {named}",
                field=field,
                code="medication_not_accepted",
            )
        if len(matches) > 1:
            names = ", ".join(f"{m.code} v{m.version}" for m in matches)
            raise Refused(
                f"{field}: more than one master file accepts this medication ({names})",
                field=field,
                code="ambiguous_master_file",
            )
        mf = matches[0]
        kit = self._prescriptions.prescription(mf.product_family)
        for product in kit.product_codes(rx.medication_codes):
            if not mf.accepts(product.system, product.code):
                raise ValidationFailed(
                    f"{field}: the prescribed product {product.display} ({product.system} "
                    f"{product.code}) is not one master file {mf.code} makes; it declares the "
                    "products it makes among its accepted codes",
                    field=field,
                    code="medication_not_accepted",
                )
        return mf, kit

    def _accepted(
        self, rx: PrescriptionIn, mf: MasterFile, kit: PrescriptionKit
    ) -> tuple[Quantity, int]:
        """The dose and the number of units, as the master file's product family takes them
        from this prescription (orders/kit.py); its refusal names the FHIR field. The dose
        must agree with the strength of a product the medication's codings name
        (`check_product`); a dose counted in units of that product is first turned into an
        amount by the family (`product_dose`)."""
        codings = rx.medication_codes
        asked, per_dose = kit.product_dose(rx.dose, codings, medication_field=rx.medication_field)
        if isinstance(per_dose, bool) or not isinstance(per_dose, int) or per_dose < 1:
            raise ValidationFailed(
                f"{rx.medication_field}: product family {mf.product_family} counted one dose as "
                f"{per_dose!r} units of the product: at least 1 is required",
                field=rx.medication_field,
            )
        dose = kit.accept_dose(asked)
        stated = rx.units_for_course
        if per_dose > 1 and stated is not None and rx.units_dispensed:
            # the course counted in units of the product (60 dispensed, 2 a dose): one made
            # unit holds a whole dose, so it takes 30
            stated = -(-stated // per_dose)
        units = kit.units_for_course(stated, field=f"{rx.fhir_path}.dispenseRequest")
        # what the order's columns hold: a family that answers otherwise is refused, not stored
        if not dose.value > 0 or len(dose.unit) > UNIT_MAX:
            raise ValidationFailed(
                f"{rx.dose_field}: product family {mf.product_family} accepted the dose as "
                f"{dose.value!r} {dose.unit!r}: a positive value with a unit of at most "
                f"{UNIT_MAX} characters is required",
                field=rx.dose_field,
            )
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValidationFailed(
                f"{rx.fhir_path}.dispenseRequest: product family {mf.product_family} worked out "
                f"{units!r} units for the course: at least 1 is required",
                field=f"{rx.fhir_path}.dispenseRequest",
            )
        kit.check_product(
            dose, codings, medication_field=rx.medication_field, dose_field=rx.dose_field
        )
        return dose, units

    def _patient(self, uow: UnitOfWork, actor: Actor, rx: PrescriptionIn) -> Patient:
        # match only on business identifiers (NHS number...): a sender's "Patient/1" is not
        # unique across hospitals, so without identifiers each prescription gets its own patient
        key = self._patient_key(rx) or f"unmatched:{new_id('x', 16)}"
        lookup = self._vault.lookup_hash(key)
        patient = uow.session.scalar(select(Patient).where(Patient.lookup_hash == lookup))
        now = uow.clock.now()
        identity = {
            "name": rx.patient_name,
            "identifiers": list(rx.patient_identifiers),
            "birth_date": rx.patient_birth_date,
            "reference": rx.patient_reference,
            "display": rx.patient_display,
        }
        if patient is None:
            patient = Patient(
                id=new_id("pat"),
                ref=new_id("PT", 8).replace("_", "-"),
                lookup_hash=lookup,
                created_at=now,
            )
            uow.session.add(patient)
            uow.flush()
            uow.session.add(
                PatientIdentity(
                    patient_id=patient.id, ciphertext=self._vault.encrypt(identity), updated_at=now
                )
            )
            # the audit names the pseudonym only; identifying data stays encrypted apart
            audit(
                uow,
                actor,
                AuditAction.CREATE,
                "patient",
                patient.id,
                new={"ref": patient.ref, "identity": "encrypted"},
            )
        return patient

    def _store(self, uow: UnitOfWork, actor: Actor, plan: _Plan) -> Order:
        rx, mf, site_id = plan.rx, plan.master_file, plan.site_id
        now = uow.clock.now()
        patient = self._patient(uow, actor, rx)
        raw = canonical_json(rx.raw)
        prescription = Prescription(
            id=new_id("rx"),
            source_id=rx.source_id,
            identifier_system=plan.identifier[0] if plan.identifier else None,
            identifier_value=plan.identifier[1] if plan.identifier else None,
            resubmission=plan.resubmission,
            patient_id=patient.id,
            received_at=now,
            received_by=actor.user_id,
            prescriber_reference=rx.prescriber_reference,
            prescriber_display=rx.prescriber_display,
            authored_on=rx.authored_on,
            medication_codes=[
                {"system": c.system, "code": c.code, "display": c.display}
                for c in rx.medication_codes
            ],
            medication_text=rx.medication_text,
            dose_value=rx.dose_value,
            dose_unit=rx.dose_unit,
            doses_per_day=rx.doses_per_day,
            quantity_value=rx.quantity_value,
            quantity_unit=rx.quantity_unit,
            supply_days=rx.supply_days,
            raw_ciphertext=self._vault.encrypt(rx.raw),
            raw_sha256=sha256_hex(raw),
        )
        uow.session.add(prescription)
        uow.flush()
        # keyed hashes of the identifiers the hospital knows the patient by (never in clear)
        self._identification.record(uow, patient, prescription, rx, site_id)
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "prescription",
            prescription.id,
            new={
                "source_id": rx.source_id,
                "identifier": "|".join(plan.identifier) if plan.identifier else None,
                "resubmission": plan.resubmission,
                "patient_ref": patient.ref,
                "medication_codes": prescription.medication_codes,
                "dose": dose_text(plan.dose),
                "doses_per_day": rx.doses_per_day,
                "units": plan.units,
                "raw_sha256": prescription.raw_sha256,
            },
            site_id=site_id,
        )
        # name the medicine by the coding the master file accepted, not by free text
        medication = next(
            (c.display for c in rx.medication_codes if c.display and mf.accepts(c.system, c.code)),
            None,
        )
        medication = (medication or rx.medication_text or mf.title).strip()
        medication = medication[:1].upper() + medication[1:]
        order = add_order(
            uow,
            mf,
            prescription_id=prescription.id,
            patient_id=patient.id,
            site_id=site_id,
            medication=medication,
            dose=plan.dose,
            doses_per_day=rx.doses_per_day,
            units=plan.units,
            now=now,
            resubmit_of=plan.replaces.id if plan.replaces is not None else None,
        )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "order",
            order.id,
            new={
                "status": order.status,
                "master_file": f"{mf.code} v{mf.version}",
                "dose": dose_text(order.dose),
                "units": order.units,
                "patient_ref": patient.ref,
                "site_id": site_id,
                "resubmit_of": order.resubmit_of,
            },
            site_id=site_id,
        )
        if plan.replaces is not None:
            # the cancelled order's own trail says what took its place, and who decided
            audit(
                uow,
                actor,
                "resubmitted",
                "order",
                plan.replaces.id,
                new={"resubmitted_as": order.id, "prescription_id": prescription.id},
                reason=f"prescription submitted again after cancellation, as order {order.id}",
                site_id=plan.replaces.site_id,
            )
        request = DesignRequest(
            master_file=mf,
            dose=plan.dose,
            units=plan.units,
            birth_date=rx.patient_birth_date,
            on=now.date(),
            weight=rx.dose.weight,
            identifiers=rx.identifiers,
        )
        try:
            design, group = self._designer(request)
        except DomainError as exc:
            order.stop_reason = exc.message
            self.transition(uow, actor, order, OrderStatus.STOPPED, reason=exc.message)
        else:
            order.design, order.patient_group = design, group
            self.transition(
                uow,
                actor,
                order,
                OrderStatus.DESIGNED,
                reason="design within the master file's envelope",
                extra={"design": design, "patient_group": group},
            )
        return order

    # --- lifecycle ---------------------------------------------------------------------------
    def touch(self, uow: UnitOfWork, order: Order) -> None:
        """Bump the order's version now, even if nothing else changes (two last packs dispensed
        at once: each touches the order, so one of them must conflict)."""
        order.updated_at = uow.clock.now()
        flag_modified(order, "updated_at")

    def transition(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order,
        target: OrderStatus,
        *,
        reason: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Move an order on, audited in the caller's transaction (the caller commits)."""
        audited_transition(
            uow,
            actor,
            order,
            target,
            ORDER_TRANSITIONS,
            entity_type="order",
            label=f"order {order.id}",
            reason=reason,
            extra=extra,
        )
        order.updated_at = uow.clock.now()

    def cancel(self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str) -> Order:
        order = self.get(uow, order_id)
        authorize(actor, Permission.ORDER_CANCEL, site_id=order.site_id)
        require_reason(reason, "cancelling an order")
        if order.status == OrderStatus.SCHEDULED.value:
            # its job must go with it: SchedulingService.cancel_order does both
            raise Refused(
                f"order {order.id} is scheduled; cancel it with its job",
                field="order_id",
                code="scheduled",
            )
        self.transition(uow, actor, order, OrderStatus.CANCELLED, reason=reason)
        for hook in self._on_cancelled:  # the control node hands it over to the order's site
            hook(uow, actor, order, reason)
        uow.commit()
        return order

    def replan(self, uow: UnitOfWork, actor: Actor, order_id: str, *, reason: str) -> Order:
        """Send a failed order back to planning; a new batch will be made from scratch."""
        order = self.get(uow, order_id)
        authorize(actor, Permission.ORDER_REPLAN, site_id=order.site_id)
        require_reason(reason, "re-planning an order")
        if order.status != OrderStatus.FAILED.value:
            raise Refused(
                f"order {order.id} is {order.status}; only failed orders are re-planned",
                field="order_id",
                code="not_failed",
            )
        self.transition(uow, actor, order, OrderStatus.DESIGNED, reason=reason)
        uow.commit()
        return order

    # --- positive patient identification -----------------------------------------------------
    def match_patient(
        self,
        uow: UnitOfWork,
        actor: Actor,
        order: Order | str,
        presented: PresentedIdentifiers,
        *,
        purpose: str,
        permission: Permission,
        one_of: list[str | None] | None = None,
    ) -> PatientMatch:
        """Whether the identifiers presented at a hand-over are those of `order`'s patient
        (docs/patient-identification.md). For dispense, collection, bedside checks.

        `presented` may hold the NHS number (its modulus-11 check digit must hold), the
        hospital number (MRN) of the order's site, a scanned wristband (GS1 AI 8018 GSRN, or a
        plain NHS-number barcode), the prescription ID (the MedicationRequest identifier: it
        must be this order's prescription), nearfab's pseudonym (PT-…), and the birth date.
        Each one given must agree; at least one besides the birth date is required; where
        the order's site requires it (`Site.birth_date_required`) the birth date must be given
        and agree too. Matching compares keyed hashes stored at intake (a patient taken in
        before them is matched from its encrypted identity, in memory).

        Authorises `permission` for the order's site (or for one of `one_of`); raises
        Forbidden otherwise, and ValidationFailed (field = the identifier) for an identifier
        that cannot be one (a wrong check digit, an unreadable barcode, none given). A
        mismatch does not raise: the answer says which identifier failed (`failed`,
        `message`, never whose it is); `PatientMatch.require()` turns it into Refused
        (code `wrong_patient`). On a match, a role that may read identity
        (PATIENT_IDENTITY_READ at the order's site) gets the name and birth date to confirm
        by eye (`identity`); others the result only. Writes one audit row (action
        `identify_patient`, entity the order: the kinds presented and the outcome, never
        the values) in the caller's transaction; the caller commits."""
        row = order if isinstance(order, Order) else self.get(uow, order)
        return self._identification.match(
            uow, actor, row, presented, purpose=purpose, permission=permission, one_of=one_of
        )

    # --- queries -----------------------------------------------------------------------------
    def get(self, uow: UnitOfWork, order_id: str) -> Order:
        order = uow.session.get(Order, order_id)
        if order is None:
            raise NotFound(f"no order {order_id!r}", field="order_id")
        return order

    def list_orders(
        self,
        uow: UnitOfWork,
        status: str | None = None,
        limit: int = 200,
        *,
        actor: Actor | None = None,
        prescription_id: str | None = None,
    ) -> list[Order]:
        """Newest first; for an `actor`, only the orders of the sites they may see.
        `prescription_id`: only the orders of the prescription with this identifier (the
        MedicationRequest identifier, as on a paper copy; docs/patient-identification.md);
        such a look-up needs an actor and is audited (the number of orders found, never the
        identifier)."""
        stmt = select(Order).order_by(Order.created_at.desc(), Order.id).limit(limit)
        if actor is not None:
            authorize(actor, Permission.ORDER_READ)
            sites = visible_sites(actor)
            if sites is not None:
                stmt = stmt.where(Order.site_id.in_(sites))
        if status:
            stmt = stmt.where(Order.status == status)
        if prescription_id is not None:
            if actor is None:
                raise ValidationFailed(
                    "prescription_id: a look-up by prescription ID is made by a person",
                    field="prescription_id",
                )
            stmt = stmt.where(self._identification.prescription_ids_filter(prescription_id))
            found = list(uow.session.scalars(stmt))
            audit(
                uow,
                actor,
                "find_order",
                "order",
                "(by prescription ID)",
                new={"by": "prescription_id", "found": [o.id for o in found]},
                site_id=actor.site_id,
            )
            uow.commit()
            return found
        return list(uow.session.scalars(stmt))

    def count_by_status(self, uow: UnitOfWork) -> dict[str, int]:
        rows = uow.session.execute(select(Order.status, func.count()).group_by(Order.status))
        return {status: int(n) for status, n in rows}

    def by_status(self, uow: UnitOfWork, status: OrderStatus) -> list[Order]:
        stmt = select(Order).where(Order.status == status.value).order_by(Order.need_by, Order.id)
        return list(uow.session.scalars(stmt))

    def patient(self, uow: UnitOfWork, patient_id: str) -> Patient:
        patient = uow.session.get(Patient, patient_id)
        if patient is None:
            raise NotFound(f"no patient {patient_id!r}", field="patient_id")
        return patient

    def prescriber(self, uow: UnitOfWork, order: Order) -> tuple[str | None, str | None]:
        """The order's prescriber as its prescription named them: (FHIR reference, name)."""
        rx = uow.session.get(Prescription, order.prescription_id)
        return (rx.prescriber_reference, rx.prescriber_display) if rx else (None, None)

    def patient_by_ref(self, uow: UnitOfWork, ref: str) -> Patient | None:
        return uow.session.scalar(select(Patient).where(Patient.ref == ref))

    def patient_identity(self, uow: UnitOfWork, actor: Actor, patient_id: str) -> dict[str, Any]:
        """Identifying data, for roles that need it; the read itself is audited."""
        # a patient may be treated at several sites: staff of any one of them may read it
        sites = set(
            uow.session.scalars(select(Order.site_id).where(Order.patient_id == patient_id))
        )
        authorize(actor, Permission.PATIENT_IDENTITY_READ, one_of=sites)
        row = uow.session.get(PatientIdentity, patient_id)
        if row is None:
            raise NotFound(f"no identity held for patient {patient_id!r}", field="patient_id")
        audit(uow, actor, "read_identity", "patient", patient_id)
        uow.commit()
        data: dict[str, Any] = self._vault.decrypt(row.ciphertext)
        return data
