"""Any record with its audit trail and signatures: the per-record review (API, CLI, web) and
the exports an inspector takes away (EU GMP Annex 11 §8, 21 CFR 11.10(b)): JSON (an accurate
and complete electronic copy) and PDF (human-readable).

The record's current content is read generically from the ORM table named by `RECORD_TYPES`
(entity type -> model). Secrets (password hashes, TOTP secrets, token hashes) are never
exported. A field changed after its first entry is marked with who changed it, when, why and
the value before (Annex 11 §8.2), from the record's `update`/`transition` audit rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from pydantic import Field
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import or_, select

from nearfab.bootstrap import App
from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import NotFound
from nearfab.common.schemas import Out
from nearfab.custody import Container, Recall, SerialUnit
from nearfab.identity import (
    Actor,
    AuditEntry,
    AuditEntryOut,
    Permission,
    Signature,
    SignatureOut,
    User,
    audit_entry_out,
    authorize,
    signature_out,
)
from nearfab.masterfiles import MasterFile
from nearfab.materials import MaterialLot
from nearfab.monitoring import Alarm, MonitoringModel
from nearfab.network import Machine, Site
from nearfab.orders import Order, Prescription
from nearfab.production import BatchRecord
from nearfab.quality import Deviation, ReleaseReview
from nearfab.scheduling import Job
from nearfab.uow import UnitOfWork

# entity type (as in the audit trail) -> the ORM model holding the record
RECORD_TYPES: Mapping[str, type[Any]] = {
    "alarm": Alarm,
    "batch": BatchRecord,
    "container": Container,
    "deviation": Deviation,
    "job": Job,
    "machine": Machine,
    "master_file": MasterFile,
    "material_lot": MaterialLot,
    "monitoring_model": MonitoringModel,
    "order": Order,
    "prescription": Prescription,
    "recall": Recall,
    "release_review": ReleaseReview,
    "site": Site,
    "unit": SerialUnit,
    "user": User,
}
# never exported, whatever the table
SECRET_COLUMNS = frozenset(
    {"password_hash", "totp_secret", "token_hash", "secret", "private_key", "sealed_key"}
)
FORMATS = ("json", "pdf")


# --- rows as dicts --------------------------------------------------------------------------
def entry_dict(r: AuditEntry) -> dict[str, Any]:
    """One audit row as the review screens and exports show it (times in UTC, with zone): the
    one shape, `AuditEntryOut`."""
    return audit_entry_out(r)


def _shown(value: Any) -> Any:
    """A binary column (a ciphertext: the prescription as received, which names the patient)
    is never exported: its size stands in for it; its plain-text hash is a column of its own."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"(encrypted, {len(bytes(value))} bytes; not exported)"
    return value


def _content_of(row: Any) -> dict[str, Any]:
    mapper = sa_inspect(type(row))
    out = {
        attr.key: _shown(getattr(row, attr.key))
        for attr in mapper.column_attrs
        if attr.key not in SECRET_COLUMNS
    }
    jsonable: dict[str, Any] = to_jsonable(out)
    return jsonable


def _site_of(entity_type: str, row: Any, trail: list[AuditEntry]) -> str | None:
    if entity_type == "site" and row is not None:
        return str(row.id)
    for attr in ("site_id", "home_site_id", "from_site_id"):
        value = getattr(row, attr, None) if row is not None else None
        if value:
            return str(value)
    if entity_type == "unit" and row is not None:
        return None  # resolved from its batch by the caller
    return next((e.site_id for e in trail if e.site_id), None)


def _load(uow: UnitOfWork, entity_type: str, entity_id: str) -> Any:
    model = RECORD_TYPES.get(entity_type)
    return uow.session.get(model, entity_id) if model is not None else None


def _trail(uow: UnitOfWork, entity_type: str, entity_id: str) -> list[AuditEntry]:
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.entity_type == entity_type, AuditEntry.entity_id == entity_id)
        .order_by(AuditEntry.seq)
    )
    return list(uow.session.scalars(stmt))


def _signatures(
    uow: UnitOfWork, entity_type: str, entity_id: str, trail: list[AuditEntry], row: Any
) -> list[Signature]:
    """Signatures on the record, and those its audit rows or fields name (a release review
    carries the QP's signature on the batch)."""
    ids = {str(e.new["signature_id"]) for e in trail if e.new and e.new.get("signature_id")}
    for attr in ("signature_id", "approval_signature_id"):
        value = getattr(row, attr, None) if row is not None else None
        if value:
            ids.add(str(value))
    cond: Any = (Signature.record_type == entity_type) & (Signature.record_id == entity_id)
    if ids:
        cond = or_(cond, Signature.id.in_(sorted(ids)))
    stmt = select(Signature).where(cond).order_by(Signature.signed_at, Signature.id)
    return list(uow.session.scalars(stmt))


def _signature_valid(application: App, uow: UnitOfWork, sig: Signature) -> bool | None:
    """Whether the signed record still hashes to what was signed; None where it cannot be told
    (the signed content is not rebuilt from the tables)."""
    if sig.record_type == "batch":
        review = uow.session.scalar(
            select(ReleaseReview).where(ReleaseReview.signature_id == sig.id)
        )
        if review is None:
            return None
        return application.quality.signature_valid(uow, review)
    signed = _load(uow, sig.record_type, sig.record_id)
    content = getattr(signed, "content", None)
    if signed is None or not callable(content):
        return None
    # the record's hash, and the signature row's own binding (not moved, not edited)
    return bool(application.signatures.is_valid(sig, content()))


def signature_dict(application: App, uow: UnitOfWork, sig: Signature) -> dict[str, Any]:
    """The signature's manifestation (21 CFR 11.50): printed name, date and time, meaning, and
    whether it is still valid for the record's current content: the one shape, `SignatureOut`."""
    return signature_out(sig, valid=_signature_valid(application, uow, sig))


class FieldChangeOut(Out):
    """A field changed after its first entry (EU GMP Annex 11 §8.2)."""

    seq: int
    old: Any = None
    new: Any = None
    by: str
    by_id: str
    at: str = Field(description="ISO 8601, UTC, with zone")
    reason: str | None = None


class RecordOut(Out):
    """A record for review: its current content, the fields changed after first entry, its
    whole audit trail and its signatures."""

    entity_type: str
    entity_id: str
    site_id: str | None
    content: dict[str, Any] | None
    changed_fields: dict[str, list[FieldChangeOut]]
    audit_trail: list[AuditEntryOut]
    signatures: list[SignatureOut]


def field_changes(trail: list[AuditEntry]) -> dict[str, list[dict[str, Any]]]:
    """Every field changed after its first entry: the value before and after, who, when, why
    (from `update` and `transition` rows, whose `old` names what changed)."""
    changes: dict[str, list[dict[str, Any]]] = {}
    for e in trail:
        if e.action not in ("update", "transition") or not e.old:
            continue
        for name, before in e.old.items():
            changes.setdefault(name, []).append(
                {
                    "seq": e.seq,
                    "old": before,
                    "new": (e.new or {}).get(name),
                    "by": e.actor_name,
                    "by_id": e.actor_id,
                    "at": e.at.astimezone(UTC).isoformat(),
                    "reason": e.reason,
                }
            )
    return changes


# --- the record -------------------------------------------------------------------------------
def record_view(
    application: App,
    uow: UnitOfWork,
    actor: Actor,
    entity_type: str,
    entity_id: str,
    *,
    permission: Permission = Permission.AUDIT_READ,
) -> dict[str, Any]:
    """A record's current content, its whole audit trail (in order), the fields changed after
    first entry and its signatures. Site staff see their own site's records only."""
    authorize(actor, permission)
    row = _load(uow, entity_type, entity_id)
    trail = _trail(uow, entity_type, entity_id)
    if row is None and not trail:
        known = entity_type in RECORD_TYPES
        raise NotFound(
            f"no {entity_type.replace('_', ' ')} {entity_id!r}"
            + ("" if known else f" (record types: {', '.join(sorted(RECORD_TYPES))})"),
            field="entity_id" if known else "entity_type",
        )
    site_id = _site_of(entity_type, row, trail)
    if entity_type == "unit" and row is not None:
        batch = uow.session.get(BatchRecord, row.batch_id)
        site_id = batch.site_id if batch is not None else None
    if entity_type == "prescription" and row is not None:
        # a prescription belongs to the site of the order made from it
        site_id = (
            uow.session.scalar(
                select(Order.site_id).where(Order.prescription_id == row.id).limit(1)
            )
            or site_id
        )
    if entity_type == "patient":
        # a patient's trail belongs to the sites that ordered for them, not to everyone
        sites = set(uow.session.scalars(select(Order.site_id).where(Order.patient_id == entity_id)))
        authorize(actor, permission, one_of=sites)
    elif entity_type == "master_file":
        authorize(actor, permission)  # a network record every site works from
    else:
        authorize(actor, permission, site_id=site_id)  # None: a network record
    sigs = _signatures(uow, entity_type, entity_id, trail, row)
    view = RecordOut.model_validate(
        {
            "entity_type": entity_type,
            "entity_id": entity_id,
            "site_id": site_id,
            "content": _content_of(row) if row is not None else None,
            "changed_fields": field_changes(trail),
            "audit_trail": [entry_dict(e) for e in trail],
            "signatures": [signature_dict(application, uow, s) for s in sigs],
        }
    )
    # the same dict the API's `RecordOut` response, the pages, the CLI and the exports show
    out: dict[str, Any] = view.model_dump(mode="json")
    return out


def export_record(
    application: App, uow: UnitOfWork, actor: Actor, entity_type: str, entity_id: str, fmt: str
) -> tuple[bytes, str, str]:
    """The record as a file: (bytes, media type, file name). JSON is the complete electronic
    copy; PDF the human-readable one. Permission.RECORD_EXPORT, site-scoped."""
    from nearfab.common.errors import ValidationFailed

    if fmt not in FORMATS:
        raise ValidationFailed(f"format {fmt!r}: one of {', '.join(FORMATS)}", field="format")
    view = record_view(
        application, uow, actor, entity_type, entity_id, permission=Permission.RECORD_EXPORT
    )
    view = {
        "exported_at": application.clock.now().astimezone(UTC).isoformat(),
        "exported_by": {"user_id": actor.user_id, "name": actor.full_name},
        **view,
    }
    name = f"{entity_type}-{entity_id}"
    if fmt == "json":
        body = json.dumps(view, indent=2, ensure_ascii=False, sort_keys=True).encode("utf-8")
        return body, "application/json", f"{name}.json"
    return record_pdf(view), "application/pdf", f"{name}.pdf"


# --- PDF ----------------------------------------------------------------------------------------
def _text(value: Any, limit: int = 600) -> str:
    if value is None:
        return "—"
    shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return shown


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def record_pdf(view: Mapping[str, Any]) -> bytes:
    """The human-readable copy: content (changed fields marked), signatures, audit trail."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7.5, leading=9)

    def p(value: Any, style: Any = small) -> Paragraph:
        return Paragraph(escape(_text(value)), style)

    title = f"{view['entity_type']} {view['entity_id']}"
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=f"nearfab record {title}",
        author="nearfab",
    )
    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )
    story: list[Any] = [
        Paragraph(escape(f"Record {title}"), styles["Title"]),
        p(
            f"Exported {_when(view['exported_at'])} by {view['exported_by']['name']} "
            f"({view['exported_by']['user_id']}); site: {view['site_id'] or '—'}. "
            "Times are UTC. Fields marked CHANGED were altered after their first entry; "
            "the old value, who, when and why are given beside them (EU GMP Annex 11 §8.2).",
            styles["BodyText"],
        ),
        Spacer(1, 4 * mm),
        Paragraph("Current content", styles["Heading2"]),
    ]
    changes: Mapping[str, list[dict[str, Any]]] = view["changed_fields"]
    content = view["content"]
    if content is None:
        story.append(p("No record table for this type: the audit trail below is the record."))
    else:
        rows: list[list[Any]] = [[p("field"), p("current value"), p("changes after first entry")]]
        for name in sorted(content):
            marks = [
                f"CHANGED at {_when(c['at'])} by {c['by']}: was {_text(c['old'], 120)}, "
                f"now {_text(c['new'], 120)}; why: {c['reason'] or '—'}"
                for c in changes.get(name, [])
            ]
            label = f"{name} [CHANGED]" if marks else name
            notes = Paragraph("<br/>".join(escape(m) for m in marks), small)
            rows.append([p(label), p(content[name]), notes])
        story.append(Table(rows, colWidths=[45 * mm, 110 * mm, 115 * mm], style=grid))
    story += [Spacer(1, 4 * mm), Paragraph("Electronic signatures", styles["Heading2"])]
    sigs = view["signatures"]
    if not sigs:
        story.append(p("None."))
    else:
        rows = [[p(h) for h in ("printed name", "meaning", "signed", "record", "valid now")]]
        for s in sigs:
            valid = {True: "yes", False: "NO: record changed after signing", None: "not checked"}
            rows.append(
                [
                    p(f"{s['printed_name']} ({s['signer_id']})"),
                    p(s["meaning"]),
                    p(_when(s["signed_at"])),
                    p(f"{s['record_type']} {s['record_id']} sha256 {s['record_hash']}"),
                    p(valid[s["valid_for_current_content"]]),
                ]
            )
        story.append(
            Table(rows, colWidths=[40 * mm, 55 * mm, 38 * mm, 102 * mm, 35 * mm], style=grid)
        )
    story += [Spacer(1, 4 * mm), Paragraph("Audit trail", styles["Heading2"])]
    rows = [[p(h) for h in ("seq", "when", "who", "action", "old", "new", "why")]]
    for e in view["audit_trail"]:
        rows.append(
            [
                p(e["seq"]),
                p(_when(e["at"])),
                p(f"{e['actor']} ({e['actor_id']})"),
                p(e["action"]),
                p(e["old"]),
                p(e["new"]),
                p(e["reason"]),
            ]
        )
    story.append(
        Table(
            rows,
            colWidths=[12 * mm, 30 * mm, 42 * mm, 20 * mm, 55 * mm, 66 * mm, 45 * mm],
            style=grid,
            repeatRows=1,
        )
    )
    doc.build(story)
    return buf.getvalue()
