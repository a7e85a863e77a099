"""Adverse events: reported (FHIR R4 AdverseEvent, or a form naming the pack), audited, and
traced with custody's trace service to the pack, batch, machine, site, material lots and every
other patient exposed: the other packs of the same batch and of batches made from the same
material lots (docs/pharmacovigilance.md)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.common.errors import NotFound, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.custody import TraceService
from nearfab.identity import Actor, AuditAction, Permission, audit, authorize
from nearfab.orders.reads import orders_by_id
from nearfab.production.reads import batch_records_by_id
from nearfab.uow import UnitOfWork
from nearfab.vigilance.models import AdverseEvent

if TYPE_CHECKING:
    from nearfab.custody import SerialUnit

ACTUALITY = ("actual", "potential")
TEXT_MAX = 4000
CSV_COLUMNS = (
    "relation",
    "serial",
    "batch_number",
    "made_at_site",
    "material_lot",
    "patient_ref",
    "status",
    "dispensed_at",
    "exposed",
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def event_dict(row: AdverseEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "unit_id": row.unit_id,
        "order_id": row.order_id,
        "site_id": row.site_id,
        "batch_id": row.batch_id,
        "description": row.description,
        "seriousness": row.seriousness,
        "actuality": row.actuality,
        "onset_at": _iso(row.onset_at),
        "source": row.source,
        "source_id": row.source_id,
        "reported_at": _iso(row.reported_at),
        "reported_by": row.reported_by,
    }


def _when(text: Any, field: str) -> datetime | None:
    if text in (None, ""):
        return None
    if not isinstance(text, str):
        raise ValidationFailed(f"{field}: {text!r} is not a date and time", field=field)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{field}: {text!r} is not a date and time", field=field) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _read(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the report says: the pack (scan or id), what happened, seriousness, actuality,
    onset; FHIR R4 AdverseEvent or the form's fields. Refusals name the field."""
    if data.get("resourceType") == "AdverseEvent":
        f = "AdverseEvent"
        actuality = data.get("actuality")
        if actuality not in ACTUALITY:
            raise ValidationFailed(
                f"{f}.actuality: {actuality!r}; actual or potential", field=f"{f}.actuality"
            )
        pack = None
        for i, entity in enumerate(data.get("suspectEntity") or []):
            instance = entity.get("instance") if isinstance(entity, Mapping) else None
            ident = instance.get("identifier") if isinstance(instance, Mapping) else None
            value = ident.get("value") if isinstance(ident, Mapping) else None
            if isinstance(value, str) and value.strip():
                pack, where = value.strip(), f"{f}.suspectEntity[{i}].instance.identifier.value"
                break
        if pack is None:
            raise ValidationFailed(
                f"{f}.suspectEntity: name the pack (instance.identifier.value: its GS1 "
                "element string or Digital Link)",
                field=f"{f}.suspectEntity",
            )
        event = data.get("event")
        event = event if isinstance(event, Mapping) else {}
        codings = event.get("coding")
        first = codings[0] if isinstance(codings, list) and codings else {}
        what = event.get("text") or (first.get("display") if isinstance(first, Mapping) else "")
        serious = data.get("seriousness")
        serious = serious if isinstance(serious, Mapping) else {}
        codes = serious.get("coding")
        code = codes[0] if isinstance(codes, list) and codes else {}
        seriousness = code.get("code") if isinstance(code, Mapping) else None
        return {
            "pack": pack,
            "pack_field": where,
            "description": what,
            "description_field": f"{f}.event.text",
            "seriousness": seriousness,
            "actuality": actuality,
            "onset_at": _when(data.get("detected") or data.get("date"), f"{f}.date"),
            "source": "fhir",
            "source_id": data.get("id") if isinstance(data.get("id"), str) else None,
        }
    pack = data.get("scan") or data.get("unit_id")
    if not isinstance(pack, str) or not pack.strip():
        raise ValidationFailed("scan: name the pack (scan it or give its id)", field="scan")
    actuality = data.get("actuality") or "actual"
    if actuality not in ACTUALITY:
        raise ValidationFailed(f"actuality: {actuality!r}; actual or potential", field="actuality")
    return {
        "pack": pack.strip(),
        "pack_field": "scan",
        "description": data.get("description"),
        "description_field": "description",
        "seriousness": data.get("seriousness") or None,
        "actuality": actuality,
        "onset_at": _when(data.get("onset_at"), "onset_at"),
        "source": "form",
        "source_id": None,
    }


class VigilanceService:
    def __init__(self, trace: TraceService) -> None:
        self._trace = trace

    def _unit(self, uow: UnitOfWork, ref: str, field: str) -> SerialUnit:
        unit = self._trace.find_unit(uow, ref)
        if unit is None:
            raise NotFound(f"{field}: no pack {ref!r}", field=field)
        return unit

    def report(self, uow: UnitOfWork, actor: Actor, data: Any) -> AdverseEvent:
        """Record an adverse event against the pack it names; audited. The reporter is staff
        of the site that ordered the pack or made it."""
        authorize(actor, Permission.ADVERSE_EVENT_REPORT)
        if not isinstance(data, Mapping):
            raise ValidationFailed("a FHIR AdverseEvent or the form (JSON object)", field="body")
        said = _read(data)
        unit = self._unit(uow, said["pack"], said["pack_field"])
        order = orders_by_id(uow.session, [unit.order_id]).get(unit.order_id)
        batch = batch_records_by_id(uow.session, [unit.batch_id]).get(unit.batch_id)
        if order is None or batch is None:
            raise NotFound(f"no order or batch for pack {unit.id}", field=said["pack_field"])
        authorize(actor, Permission.ADVERSE_EVENT_REPORT, one_of=[order.site_id, batch.site_id])
        what = said["description"]
        if not isinstance(what, str) or not what.strip():
            raise ValidationFailed(
                f"{said['description_field']}: say what happened",
                field=said["description_field"],
            )
        if len(what) > TEXT_MAX:
            field = said["description_field"]
            raise ValidationFailed(f"{field}: at most {TEXT_MAX} characters", field=field)
        serious = said["seriousness"]
        row = AdverseEvent(
            id=new_id("ae"),
            unit_id=unit.id,
            order_id=order.id,
            patient_id=unit.patient_id,
            site_id=order.site_id,
            batch_id=batch.id,
            description=what.strip(),
            seriousness=str(serious)[:32] if serious else None,
            actuality=said["actuality"],
            onset_at=said["onset_at"],
            source=said["source"],
            source_id=(said["source_id"] or None) and str(said["source_id"])[:128],
            raw_sha256=sha256_hex(canonical_json(dict(data))),
            reported_at=uow.clock.now(),
            reported_by=actor.user_id,
        )
        uow.session.add(row)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "adverse_event",
            row.id,
            new={
                "unit_id": unit.id,
                "batch_id": batch.id,
                "seriousness": row.seriousness,
                "actuality": row.actuality,
                "source": row.source,
                "raw_sha256": row.raw_sha256,
            },
            site_id=order.site_id,
        )
        uow.commit()
        return row

    def get(self, uow: UnitOfWork, actor: Actor, event_id: str) -> AdverseEvent:
        authorize(actor, Permission.TRACE_READ)
        row = uow.session.get(AdverseEvent, event_id)
        if row is None:
            raise NotFound(f"no adverse event {event_id!r}", field="event_id")
        batch = batch_records_by_id(uow.session, [row.batch_id]).get(row.batch_id)
        sites = [row.site_id, *([batch.site_id] if batch else [])]
        authorize(actor, Permission.TRACE_READ, one_of=sites)
        return row

    def trace(self, uow: UnitOfWork, actor: Actor, event_id: str) -> dict[str, Any]:
        """The pack backward (batch, machine, site, material lots, master file, release) and
        forward from each material lot: every pack made from it, each marked as the reported
        pack, the same batch, or a batch sharing the lot; a pack is an exposure once dispensed.
        Site staff see their own site's packs only (custody's rule)."""
        row = self.get(uow, actor, event_id)
        back = self._trace.unit(uow, actor, row.unit_id)
        batch_id = back["batch_record"]["id"]
        packs: dict[str, dict[str, Any]] = {}
        for lot in back["material_lots"]:
            forward = self._trace.lot(uow, actor, lot["lot_number"])
            for u in forward["units"]:
                if u["unit_id"] in packs:
                    continue
                relation = (
                    "reported pack"
                    if u["unit_id"] == row.unit_id
                    else "same batch"
                    if u["batch_id"] == batch_id
                    else "shared material lot"
                )
                packs[u["unit_id"]] = {
                    "relation": relation,
                    "unit_id": u["unit_id"],
                    "serial": u["serial"],
                    "batch_number": u["batch_number"],
                    "made_at_site": u["made_at_site"],
                    "material_lot": lot["lot_number"],
                    "patient_ref": u["patient_ref"],
                    "status": u["status"],
                    "dispensed_at": u["dispensed_at"],
                    "exposed": u["dispensed_at"] is not None,
                }
        order = {"reported pack": 0, "same batch": 1, "shared material lot": 2}
        rows = sorted(
            packs.values(), key=lambda p: (order[p["relation"]], p["batch_number"], p["serial"])
        )
        me = back["patient_ref"]
        others = [p for p in rows if p["patient_ref"] != me]
        return {
            "event": event_dict(row),
            "pack": back["unit"],
            "patient_ref": me,
            "batch_record": back["batch_record"],
            "machine": back["machine"],
            "site": back["site"],
            "material_lots": back["material_lots"],
            "master_file": back["master_file"],
            "release": back["release"],
            "packs": rows,
            "other_patients_exposed": sorted({p["patient_ref"] for p in others if p["exposed"]}),
            "other_patients_with_packs": sorted({p["patient_ref"] for p in others}),
        }

    def trace_csv(self, uow: UnitOfWork, actor: Actor, event_id: str) -> str:
        """The trace's packs, one row each (relation, serial, batch, site, lot, patient...)."""
        found = self.trace(uow, actor, event_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["adverse_event", *CSV_COLUMNS])
        for p in found["packs"]:
            writer.writerow([event_id, *(p[c] for c in CSV_COLUMNS)])
        return out.getvalue()

    def trace_pdf(self, uow: UnitOfWork, actor: Actor, event_id: str) -> bytes:
        return trace_pdf(self.trace(uow, actor, event_id))


def _esc(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def trace_pdf(found: Mapping[str, Any]) -> bytes:
    """The trace (`VigilanceService.trace`) as a PDF: the event, where the pack came from, and
    every pack of the same material lots with its patient (pseudonymised)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    event, styles = found["event"], getSampleStyleSheet()
    lots = ", ".join(_esc(lot["lot_number"]) for lot in found["material_lots"])
    story: list[Any] = [
        Paragraph(f"Adverse event {_esc(event['id'])}", styles["Title"]),
        Paragraph(
            f"{_esc(event['description'])} ({_esc(event['actuality'])}"
            f"{', ' + _esc(event['seriousness']) if event['seriousness'] else ''}); reported "
            f"{_esc(event['reported_at'][:16].replace('T', ' '))} UTC by "
            f"{_esc(event['reported_by'])}",
            styles["Normal"],
        ),
        Paragraph(
            f"Pack {_esc(found['pack']['serial'])} of patient {_esc(found['patient_ref'])}; "
            f"batch {_esc(found['batch_record']['batch_number'])} on machine "
            f"{_esc(found['machine']['name'])} (firmware {_esc(found['machine']['firmware'])}) "
            f"at site {_esc(found['site']['code'])}; material lot(s) {lots}; master file "
            f"{_esc(found['master_file']['code'])} v{found['master_file']['version']}",
            styles["Normal"],
        ),
        Paragraph(
            f"Other patients exposed (dispensed): "
            f"{_esc(', '.join(found['other_patients_exposed']) or 'none')}",
            styles["Normal"],
        ),
        Spacer(1, 8),
    ]
    table = [["Relation", "Serial", "Batch", "Site", "Lot", "Patient", "Status", "Dispensed"]]
    table += [
        [
            p["relation"],
            p["serial"],
            p["batch_number"],
            p["made_at_site"],
            p["material_lot"],
            p["patient_ref"],
            p["status"],
            (p["dispensed_at"] or "no")[:16].replace("T", " "),
        ]
        for p in found["packs"]
    ]
    grid = Table(table, repeatRows=1)
    grid.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 7),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ]
        )
    )
    story.append(grid)
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer, pagesize=A4, title=f"Adverse event {event['id']}").build(story)
    return buffer.getvalue()
