"""Trace and recall: backward from a pack to everything it was made from and by; forward from a
material lot, a machine and time window, or a master-file version to every pack and patient
(pseudonymised reference); recalls that mark the packs, and their report (CSV, PDF)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from nearfab.common.errors import NotFound, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.custody.enums import UNIT_TRANSITIONS, BizStep, Disposition, RecallStatus, UnitStatus
from nearfab.custody.gs1 import parse_scan
from nearfab.custody.logic import epcis as ev
from nearfab.custody.models import (
    Dispense,
    EpcisEpc,
    Recall,
    RecallUnit,
    SerialUnit,
)
from nearfab.custody.services.epcis import EpcisStore
from nearfab.custody.services.scope import pack_sites
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    Role,
    audit,
    audited_transition,
    authorize,
    authorize_network,
    is_network_wide,
    system_actor,
    visible_sites,
)
from nearfab.identity.reads import users_by_id
from nearfab.materials import LotStatus, MaterialService
from nearfab.materials.enums import LOT_TRANSITIONS
from nearfab.materials.reads import lot as material_lot
from nearfab.materials.reads import lot_by_number
from nearfab.network import NetworkService
from nearfab.network.reads import machine as network_machine
from nearfab.network.reads import site as network_site
from nearfab.network.reads import site_view, sites
from nearfab.orders.reads import order_view, patient, patient_view
from nearfab.production.reads import batch_record, batch_view
from nearfab.quality import QualityService
from nearfab.uow import UnitOfWork

# the owners' read views the forward trace and the recall report join (built once)
_BATCH = batch_view()
_PATIENT = patient_view()
_ORDER = order_view()
_SITE = site_view()


@dataclass(frozen=True)
class TracedUnit:
    unit_id: str
    gtin: str
    serial: str
    batch_id: str
    batch_number: str
    expiry: str
    status: str
    patient_ref: str
    made_at_site: str
    dispensed_at: str | None
    dispensed_at_site: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TraceService:
    def __init__(self, epcis: EpcisStore, quality: QualityService) -> None:
        self._epcis = epcis
        self._quality = quality

    # --- backward ----------------------------------------------------------------------------
    @staticmethod
    def find_unit(uow: UnitOfWork, unit_or_scan: str) -> SerialUnit | None:
        """The pack named by its id or by a scan of its code (None: no such pack)."""
        unit = uow.session.get(SerialUnit, unit_or_scan)
        if unit is None and unit_or_scan.strip():
            try:
                ident = parse_scan(unit_or_scan)
            except ValueError:
                ident = None
            if ident is not None:
                unit = uow.session.scalar(
                    select(SerialUnit).where(
                        SerialUnit.gtin == ident.gtin, SerialUnit.serial == ident.serial
                    )
                )
        return unit

    def unit(self, uow: UnitOfWork, actor: Actor, unit_or_scan: str) -> dict[str, Any]:
        """Everything one pack came from: material lot, machine and firmware, job ticket, batch
        record, operator, site, master-file version, release, dispense and its EPCIS events."""
        authorize(actor, Permission.TRACE_READ)
        unit = self.find_unit(uow, unit_or_scan)
        if unit is None:
            raise NotFound(f"no pack {unit_or_scan!r}", field="unit")
        # the making site and the ordering site both see the pack's history (the API's check)
        authorize(actor, Permission.TRACE_READ, one_of=pack_sites(uow, unit))
        # each row exists (foreign keys of the pack and its batch record); read by the owners
        batch = batch_record(uow.session, unit.batch_id)
        lot = material_lot(uow.session, batch.material_lot_id)
        machine = network_machine(uow.session, batch.machine_id)
        site = network_site(uow.session, batch.site_id)
        pseudonym = patient(uow.session, unit.patient_id)
        review = self._quality.review_for(uow, batch.id)
        dispense = uow.session.scalar(select(Dispense).where(Dispense.unit_id == unit.id))
        operator = users_by_id(uow.session, [batch.operator_id]).get(batch.operator_id)
        location = self._epcis.site_location(uow, batch.site_id)
        events = self._epcis.query(uow, epc=ev.sgtin_dl(unit.gtin, unit.serial))
        return {
            "unit": {
                "id": unit.id,
                "gtin": unit.gtin,
                "serial": unit.serial,
                "batch_number": unit.batch_number,
                "expiry": unit.expiry.isoformat(),
                "status": unit.status,
                "pack_index": unit.pack_index,
                "quantity": unit.quantity,
                "epc": ev.sgtin_dl(unit.gtin, unit.serial),
            },
            "patient_ref": pseudonym.ref,
            "order_id": unit.order_id,
            "batch_record": {
                "id": batch.id,
                "batch_number": batch.batch_number,
                "status": batch.status,
                "started_at": batch.started_at.isoformat(),
                "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
            },
            "material_lots": [
                {
                    "id": batch.material_lot_id,
                    "lot_number": batch.material_lot_number,
                    "material_code": lot.material_code if lot else None,
                    "supplier": lot.supplier if lot else None,
                    "expiry": lot.expiry.isoformat() if lot else None,
                    "used_g": batch.material_used_g,
                }
            ],
            "machine": {
                "id": batch.machine_id,
                "name": machine.name if machine else None,
                "type": machine.machine_type if machine else None,
                "serial_number": machine.serial_number if machine else None,
                "firmware": batch.machine_firmware,
            },
            "job_ticket": {"job_id": batch.job_id, "ticket_hash": batch.ticket_hash},
            "operator": {
                "id": batch.operator_id,
                "name": operator.full_name if operator else None,
            },
            "site": {
                "id": batch.site_id,
                "code": site.code if site else None,
                "name": site.name if site else None,
                "gln": location.gln,
            },
            "master_file": {
                "id": batch.master_file_id,
                "code": batch.master_file_code,
                "version": batch.master_file_version,
            },
            "release": (
                None
                if review is None
                else {
                    "decision": review.decision,
                    "decided_by": review.decided_by,
                    "decided_at": review.decided_at.isoformat() if review.decided_at else None,
                    "signature_id": review.signature_id,
                }
            ),
            "dispense": (
                None
                if dispense is None
                else {
                    "at": dispense.dispensed_at.isoformat(),
                    "by": dispense.dispensed_by,
                    "site_id": dispense.site_id,
                }
            ),
            "events": events,
        }

    # --- forward -----------------------------------------------------------------------------
    def _units_of_batches(self, uow: UnitOfWork, batch_ids: Sequence[str]) -> list[TracedUnit]:
        if not batch_ids:
            return []
        return self._rows(uow, SerialUnit.batch_id.in_(list(batch_ids)))

    def _rows(self, uow: UnitOfWork, condition: Any) -> list[TracedUnit]:
        made = select(_SITE.c.code).where(_SITE.c.id == _BATCH.c.site_id).scalar_subquery()
        stmt = (
            select(
                SerialUnit,
                _PATIENT.c.ref,
                made,
                Dispense.dispensed_at,
                Dispense.site_id,
            )
            .join(_PATIENT, _PATIENT.c.id == SerialUnit.patient_id)
            .join(_BATCH, _BATCH.c.id == SerialUnit.batch_id)
            .outerjoin(Dispense, Dispense.unit_id == SerialUnit.id)
            .where(condition)
            .order_by(SerialUnit.batch_number, SerialUnit.pack_index)
        )
        out = []
        for unit, ref, site_code, dispensed_at, dispensed_site in uow.session.execute(stmt):
            out.append(
                TracedUnit(
                    unit_id=unit.id,
                    gtin=unit.gtin,
                    serial=unit.serial,
                    batch_id=unit.batch_id,
                    batch_number=unit.batch_number,
                    expiry=unit.expiry.isoformat(),
                    status=unit.status,
                    patient_ref=ref,
                    made_at_site=site_code,
                    dispensed_at=dispensed_at.isoformat() if dispensed_at else None,
                    dispensed_at_site=dispensed_site,
                )
            )
        return out

    @staticmethod
    def _visible(uow: UnitOfWork, actor: Actor, units: list[TracedUnit]) -> list[TracedUnit]:
        """Site staff see the packs their site made or handed over; the network sees all."""
        if is_network_wide(actor):
            return units
        ids = {u.batch_id for u in units}
        made_here = set(
            uow.session.scalars(
                select(_BATCH.c.id).where(_BATCH.c.id.in_(ids), _BATCH.c.site_id == actor.site_id)
            )
        )
        return [u for u in units if u.batch_id in made_here or u.dispensed_at_site == actor.site_id]

    def lot_units(self, uow: UnitOfWork, lot_number: str) -> list[TracedUnit]:
        """Packs made from a material lot: through the lot's TransformationEvents (indexed
        EPCIS identifiers), and the batch records for packs made before events existed."""
        if not lot_number.strip():
            raise ValidationFailed("give a material lot number", field="lot")
        uri = ev.lot_uri(lot_number)
        events = select(EpcisEpc.event_hash).where(EpcisEpc.epc == uri, EpcisEpc.role == "input")
        outputs = list(
            uow.session.scalars(
                select(EpcisEpc.epc).where(
                    EpcisEpc.event_hash.in_(events), EpcisEpc.role == "output"
                )
            )
        )
        units: list[TracedUnit] = []
        if outputs:
            pairs = [_gtin_serial(e) for e in outputs]
            serials = [s for _, s in pairs if s]
            units = self._rows(uow, SerialUnit.serial.in_(serials))
            wanted = set(pairs)
            units = [u for u in units if (u.gtin, u.serial) in wanted]
        known = {u.batch_id for u in units}
        legacy = (
            [
                b
                for b in uow.session.scalars(
                    select(_BATCH.c.id).where(_BATCH.c.material_lot_number == lot_number)
                )
                if b not in known
            ]
            if not units
            else []
        )
        return units + self._units_of_batches(uow, legacy)

    def lot(self, uow: UnitOfWork, actor: Actor, lot_number: str) -> dict[str, Any]:
        authorize(actor, Permission.TRACE_READ)
        units = self._visible(uow, actor, self.lot_units(uow, lot_number))
        return _forward("lot", lot_number, units)

    def machine(
        self, uow: UnitOfWork, actor: Actor, machine_id: str, start: datetime, end: datetime
    ) -> dict[str, Any]:
        authorize(actor, Permission.TRACE_READ)
        if end <= start:
            raise ValidationFailed("the window's end must be after its start", field="end")
        network_machine(uow.session, machine_id)  # NotFound naming machine_id
        batches = uow.session.scalars(
            select(_BATCH.c.id).where(
                _BATCH.c.machine_id == machine_id,
                _BATCH.c.started_at >= start,
                _BATCH.c.started_at < end,
            )
        ).all()
        units = self._visible(uow, actor, self._units_of_batches(uow, batches))
        return _forward("machine", f"{machine_id} {start.isoformat()}..{end.isoformat()}", units)

    def master_file(self, uow: UnitOfWork, actor: Actor, code: str, version: int) -> dict[str, Any]:
        authorize(actor, Permission.TRACE_READ)
        batches = uow.session.scalars(
            select(_BATCH.c.id).where(
                _BATCH.c.master_file_code == code, _BATCH.c.master_file_version == version
            )
        ).all()
        units = self._visible(uow, actor, self._units_of_batches(uow, batches))
        return _forward("master_file", f"{code} v{version}", units)


def _gtin_serial(epc: str) -> tuple[str, str]:
    from urllib.parse import unquote

    parts = epc.split("/")
    try:
        return parts[parts.index("01") + 1], unquote(parts[parts.index("21") + 1])
    except (ValueError, IndexError):
        return "", ""


def _forward(scope: str, ref: str, units: list[TracedUnit]) -> dict[str, Any]:
    patients = sorted({u.patient_ref for u in units})
    return {
        "scope": scope,
        "ref": ref,
        "units": [u.to_dict() for u in units],
        "patients": patients,
        "batches": sorted({u.batch_number for u in units}),
        "counts": {
            "units": len(units),
            "patients": len(patients),
            "dispensed": sum(1 for u in units if u.dispensed_at),
        },
    }


class RecallService:
    def __init__(
        self,
        trace: TraceService,
        epcis: EpcisStore,
        materials: MaterialService | None = None,
    ) -> None:
        self._trace = trace
        self._epcis = epcis
        # called with (uow, recall id, the recall's audit body) in the recall's transaction:
        # the control node of a replicated network signs it in its ledger chain (bootstrap)
        self._on_created: list[Callable[[UnitOfWork, str, dict[str, Any]], None]] = []
        # marks the recalled lot itself (its status change is the materials domain's own)
        self._materials = materials or MaterialService(NetworkService())

    def create(self, uow: UnitOfWork, actor: Actor, *, lot: str, reason: str) -> Recall:
        """Recall every pack made from a material lot: each pack -> `recalled` (so
        verification answers `recalled` and dispensing refuses it), with the EPCIS event
        (holding / recalled) per making site, and the material lot itself -> `recalled` (so no
        new batch uses it and no batch made from it is released), in one transaction."""
        # a recall reaches every site that made or holds packs of the lot: the network's call
        authorize_network(actor, Permission.RECALL_CREATE)
        if not reason.strip():
            raise ValidationFailed("give the reason for the recall", field="reason")
        if not lot.strip():
            raise ValidationFailed("give the material lot number", field="lot")
        traced = self._trace.lot_units(uow, lot)
        material = lot_by_number(uow.session, lot)
        if material is None and not traced:
            raise NotFound(f"no material lot {lot!r}", field="lot")
        # the lot moves to recalled when its state allows (approved, on hold); a lot already
        # recalled, rejected or expired is unusable already and keeps its state
        mark_lot = material is not None and LotStatus.RECALLED in LOT_TRANSITIONS.get(
            LotStatus(material.status), frozenset()
        )
        recall = Recall(
            id=new_id("rcl"),
            scope="lot",
            scope_ref=lot,
            reason=reason,
            status=RecallStatus.OPEN.value,
            created_at=uow.clock.now(),
            created_by=actor.user_id,
        )
        uow.session.add(recall)
        uow.flush()
        by_site: dict[str, list[SerialUnit]] = {}
        for t in traced:
            unit = uow.session.get(SerialUnit, t.unit_id)
            assert unit is not None
            before = unit.status
            uow.session.add(RecallUnit(recall_id=recall.id, unit_id=unit.id, status_before=before))
            if UnitStatus.RECALLED in UNIT_TRANSITIONS[UnitStatus(before)]:
                audited_transition(
                    uow,
                    actor,
                    unit,
                    UnitStatus.RECALLED,
                    UNIT_TRANSITIONS,
                    entity_type="unit",
                    label=f"pack {unit.serial}",
                    reason=f"recall {recall.id}: {reason}",
                )
                batch = batch_record(uow.session, unit.batch_id)
                by_site.setdefault(batch.site_id, []).append(unit)
        for site_id, units in sorted(by_site.items()):
            where = self._epcis.sgln(uow, site_id)
            event = ev.object_event(
                when=uow.clock.now(),
                epcs=[ev.sgtin_dl(u.gtin, u.serial) for u in units],
                action="OBSERVE",
                biz_step=BizStep.HOLDING,
                disposition=Disposition.RECALLED,
                read_point=where,
                biz_location=where,
                biz_transactions=[("rma", f"urn:nearfab:recall:{recall.id}")],
            )
            self._epcis.record(uow, event, site_id=site_id)
        body = {  # what the control signs for its site nodes: the reason with the rest
            "scope": "lot",
            "lot": lot,
            "reason": reason,
            "units": len(traced),
            "recalled": sum(len(v) for v in by_site.values()),
            "lot_status": LotStatus.RECALLED.value
            if mark_lot
            else (material.status if material is not None else None),
        }
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "recall",
            recall.id,
            new=body,
            reason=reason,
            site_id=actor.site_id,
        )
        for sign in self._on_created:
            sign(uow, recall.id, body)
        if mark_lot:
            assert material is not None
            # MaterialService.set_status commits, and so commits the whole recall at once.
            # Lot status changes are for QPs and pharmacists; an admin's recall marks the lot
            # as the recall component, naming the admin in the reason.
            by = actor if actor.has_any((Role.QP, Role.PHARMACIST)) else system_actor("recall")
            self._materials.set_status(
                uow,
                by,
                material.id,
                LotStatus.RECALLED,
                reason=f"recall {recall.id} by {actor.username}: {reason}",
            )
        else:
            uow.commit()
        return recall

    def on_created(self, hook: Callable[[UnitOfWork, str, dict[str, Any]], None]) -> None:
        """Call `hook` with (uow, recall id, the recall's audit body) in the transaction of
        every recall made here: the control node signs it for its site nodes (bootstrap)."""
        self._on_created.append(hook)

    def get(self, uow: UnitOfWork, recall_id: str) -> Recall:
        recall = uow.session.get(Recall, recall_id)
        if recall is None:
            raise NotFound(f"no recall {recall_id!r}", field="recall_id")
        return recall

    def report_rows(self, uow: UnitOfWork, actor: Actor, recall_id: str) -> list[dict[str, Any]]:
        """Affected patients by site (where each pack is now: dispensing site, else making
        site), with dispense status: the rows the reader may see (`report`)."""
        rows: list[dict[str, Any]] = self.report(uow, actor, recall_id)["rows"]
        return rows

    def report(self, uow: UnitOfWork, actor: Actor, recall_id: str) -> dict[str, Any]:
        """The recall report as `actor` may read it: `rows` holds only the packs of the sites
        the reader's grant serves (the pack's making, ordering or dispensing site); a grant
        that reaches the network (control-site staff, the auditor grant) sees every row.
        `totals` counts the whole recall (packs, patients, sites, dispensed) without naming
        any other site's patient or serial; `scoped` says whether rows were left out."""
        authorize(actor, Permission.RECALL_REPORT_READ)
        self.get(uow, recall_id)
        sites_seen = visible_sites(actor, Permission.RECALL_REPORT_READ)
        rows = []
        refs: set[str] = set()
        where: set[str] = set()
        dispensed = 0
        stmt = (
            select(
                RecallUnit,
                SerialUnit,
                _PATIENT.c.ref,
                Dispense,
                _BATCH.c.site_id,
                _ORDER.c.site_id,
            )
            .join(SerialUnit, SerialUnit.id == RecallUnit.unit_id)
            .join(_PATIENT, _PATIENT.c.id == SerialUnit.patient_id)
            .join(_BATCH, _BATCH.c.id == SerialUnit.batch_id)
            .outerjoin(_ORDER, _ORDER.c.id == SerialUnit.order_id)
            .outerjoin(Dispense, Dispense.unit_id == SerialUnit.id)
            .where(RecallUnit.recall_id == recall_id)
        )
        by_id = {s.id: s for s in sites(uow.session)}
        total = 0
        for ru, unit, ref, dispense, made_site, ordering_site in uow.session.execute(stmt):
            site_id = dispense.site_id if dispense and dispense.site_id else made_site
            total += 1
            refs.add(ref)
            where.add(site_id)
            dispensed += 1 if dispense else 0
            served = {made_site, ordering_site, dispense.site_id if dispense else None}
            if sites_seen is not None and not (served - {None}) & sites_seen:
                continue  # another site's pack: counted above, never named
            site = by_id.get(site_id)
            rows.append(
                {
                    "site": site.code if site else site_id,
                    "site_name": site.name if site else "",
                    "patient_ref": ref,
                    "serial": unit.serial,
                    "gtin": unit.gtin,
                    "batch": unit.batch_number,
                    "expiry": unit.expiry.isoformat(),
                    "status_before": ru.status_before,
                    "dispensed": "yes" if dispense else "no",
                    "dispensed_at": dispense.dispensed_at.isoformat() if dispense else "",
                }
            )
        rows.sort(key=lambda r: (r["site"], r["patient_ref"], r["serial"]))
        return {
            "rows": rows,
            "scoped": sites_seen is not None,
            "totals": {
                "units": total,
                "patients": len(refs),
                "sites": len(where),
                "dispensed": dispensed,
            },
        }

    def report_csv(self, uow: UnitOfWork, actor: Actor, recall_id: str) -> str:
        """The reader's rows (`report`) as CSV."""
        rows = self.report_rows(uow, actor, recall_id)
        out = io.StringIO()
        fields = [
            "site", "site_name", "patient_ref", "serial", "gtin", "batch", "expiry",
            "status_before", "dispensed", "dispensed_at",
        ]  # fmt: skip
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()

    def report_pdf(self, uow: UnitOfWork, actor: Actor, recall_id: str) -> bytes:
        """The reader's rows (`report`) as PDF, with the recall's network totals."""
        from reportlab.lib import colors
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.styles import getSampleStyleSheet
        from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

        report = self.report(uow, actor, recall_id)
        recall = self.get(uow, recall_id)
        rows, totals = report["rows"], report["totals"]
        buffer = io.BytesIO()
        styles = getSampleStyleSheet()
        story: list[Any] = [
            Paragraph(f"Recall {recall.id}", styles["Title"]),
            Paragraph(
                f"Material lot {recall.scope_ref} &mdash; {_esc(recall.reason)} &mdash; "
                f"opened {recall.created_at:%Y-%m-%d %H:%M} UTC by {_esc(recall.created_by)}",
                styles["Normal"],
            ),
            Paragraph(
                f"{totals['units']} packs, {totals['patients']} patients at "
                f"{totals['sites']} site(s) in the network, {totals['dispensed']} already "
                "dispensed"
                + (
                    f"; listed here: the {len(rows)} pack(s) of the sites you serve"
                    if report["scoped"]
                    else ""
                ),
                styles["Normal"],
            ),
            Spacer(1, 8),
        ]
        for site in sorted({r["site"] for r in rows}):
            story.append(Paragraph(f"Site {_esc(site)}", styles["Heading2"]))
            table = [["Patient", "Serial", "Batch", "Expiry", "Before", "Dispensed"]]
            table += [
                [
                    r["patient_ref"],
                    r["serial"],
                    r["batch"],
                    r["expiry"],
                    r["status_before"],
                    r["dispensed_at"][:16].replace("T", " ") if r["dispensed"] == "yes" else "no",
                ]
                for r in rows
                if r["site"] == site
            ]
            t = Table(table, repeatRows=1)
            t.setStyle(
                TableStyle(
                    [
                        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                        ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
                        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                    ]
                )
            )
            story.append(t)
        if not rows:
            none = (
                "None of these packs is at a site you serve."
                if totals["units"]
                else "No packs were made from this lot."
            )
            story.append(Paragraph(none, styles["Normal"]))
        SimpleDocTemplate(buffer, pagesize=A4, title=f"Recall {recall.id}").build(story)
        return buffer.getvalue()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
