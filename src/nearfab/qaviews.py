"""Central QA read models (issue 19 parts 3-4, docs/central-qa.md), shared by the API, the CLI
and the web pages: every site's open quality items (deviations, complaints, CAPAs, change
controls) with owner, due date and overdue, the monthly trend per site, and the annual report
a control site owes its regulator for each master file, as JSON, CSV and PDF."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from typing import Any
from xml.sax.saxutils import escape

from sqlalchemy import select

from nearfab.bootstrap import App
from nearfab.common.errors import NotFound, ValidationFailed
from nearfab.common.schemas import shaped
from nearfab.comparability import Suspension
from nearfab.custody import Dispense, Recall, RecallUnit, SerialUnit
from nearfab.identity import Actor, Permission, authorize, authorize_network, visible_sites
from nearfab.masterfiles import ChangeControl, ChangeControlStatus, MasterFile
from nearfab.production import BatchRecord
from nearfab.qaschemas import AnnualReportOut, CentralQaOut
from nearfab.quality import Capa, Complaint, Deviation, QaAssignment
from nearfab.uow import UnitOfWork

OPEN_CC = (ChangeControlStatus.RAISED.value, ChangeControlStatus.APPROVED.value)
KINDS = ("deviation", "complaint", "capa", "change_control", "suspension")


def _iso(v: Any) -> str | None:
    return None if v is None else v.isoformat()


def _month(v: datetime) -> str:
    return f"{v.year:04d}-{v.month:02d}"


def _site_codes(app: App, uow: UnitOfWork) -> dict[str, str]:
    return {s.id: s.code for s in app.network.list_sites(uow)}


def _assignments(uow: UnitOfWork) -> dict[tuple[str, str], QaAssignment]:
    return {(a.item_kind, a.item_id): a for a in uow.session.scalars(select(QaAssignment))}


def _all_items(app: App, uow: UnitOfWork) -> list[dict[str, Any]]:
    """Every quality item of the network, open or closed (site_id None: the network's)."""
    items: list[dict[str, Any]] = []
    batches = {
        b.id: b
        for b in uow.session.scalars(
            select(BatchRecord).where(
                BatchRecord.id.in_(select(Deviation.batch_id).scalar_subquery())
            )
        )
    }
    for d in uow.session.scalars(select(Deviation)):
        b = batches.get(d.batch_id)
        items.append(
            {
                "kind": "deviation",
                "id": d.id,
                "site_id": b.site_id if b else None,
                "master_file_code": b.master_file_code if b else None,
                "title": f"{d.kind}: {d.description}"[:200],
                "status": d.status,
                "open": d.status == "open",
                "opened_at": d.opened_at,
                "reference": b.batch_number if b else None,
            }
        )
    for c in uow.session.scalars(select(Complaint)):
        items.append(
            {
                "kind": "complaint",
                "id": c.id,
                "site_id": c.site_id,
                "master_file_code": c.master_file_code,
                "title": c.description[:200],
                "status": c.status,
                "open": c.status != "closed",
                "opened_at": c.received_at,
                "reference": c.pack_serial or c.batch_number,
            }
        )
    suspensions = {s.id: s for s in uow.session.scalars(select(Suspension))}
    for p in uow.session.scalars(select(Capa)):
        linked = (
            suspensions.get(p.source_id or "")
            if p.source_kind == "proficiency_suspension"
            else None
        )
        items.append(
            {
                "kind": "capa",
                "id": p.id,
                "site_id": p.site_id,
                "master_file_code": p.master_file_code,
                "title": p.title,
                "status": p.status,
                "open": p.status == "open",
                "opened_at": p.opened_at,
                "reference": f"{p.source_kind} {p.source_id or ''}".strip()
                + (f" (suspension {linked.status})" if linked else ""),
            }
        )
    # a site suspended from a master file by a proficiency round (comparability/) until the QP
    # lifts it; the central CAPA that tracks it names the suspension (source_id)
    tracked = {
        p.source_id: p.id
        for p in uow.session.scalars(
            select(Capa).where(Capa.source_kind == "proficiency_suspension")
        )
    }
    for sus in suspensions.values():
        items.append(
            {
                "kind": "suspension",
                "id": sus.id,
                "site_id": sus.site_id,
                "master_file_code": sus.master_file_code,
                "title": f"suspended from {sus.master_file_code}: proficiency z = {sus.z:.2f}",
                "status": sus.status,
                "open": sus.status == "active",
                "opened_at": sus.opened_at,
                "reference": f"CAPA {tracked[sus.id]}"
                if sus.id in tracked
                else (sus.capa_reference or "no CAPA yet"),
            }
        )
    for cc in uow.session.scalars(select(ChangeControl)):
        items.append(
            {
                "kind": "change_control",
                "id": cc.id,
                "site_id": None,
                "master_file_code": cc.master_file_code,
                "title": cc.title,
                "status": cc.status,
                "open": cc.status in OPEN_CC,
                "opened_at": cc.raised_at,
                "reference": f"v{cc.from_version or '-'} → v{cc.to_version}",
                "impact_site_ids": [r["site_id"] for r in cc.impact],
            }
        )
    return items


def _visible(item: dict[str, Any], sites: frozenset[str] | None) -> bool:
    if sites is None:
        return True
    if item["kind"] == "change_control":  # a change of a master file the site makes
        return bool(sites & set(item.get("impact_site_ids", ())))
    return item["site_id"] in sites


@shaped(CentralQaOut)
def central_qa(app: App, uow: UnitOfWork, actor: Actor) -> dict[str, Any]:
    """Open items by site, owner and due date (overdue marked), and the monthly trend of items
    opened per site. Site QA see their own site's items; the control site's QA see all."""
    authorize(actor, Permission.QA_READ)
    sites = visible_sites(actor, Permission.QA_READ)
    codes = _site_codes(app, uow)
    owners = _assignments(uow)
    today = uow.clock.now().date()
    rows = [i for i in _all_items(app, uow) if _visible(i, sites)]
    open_items = []
    for i in rows:
        if not i["open"]:
            continue
        a = owners.get((i["kind"], i["id"]))
        due: date | None = a.due_date if a else None
        open_items.append(
            {
                "kind": i["kind"],
                "id": i["id"],
                "site_id": i["site_id"],
                "site_code": codes.get(i["site_id"] or "", "network"),
                "master_file_code": i["master_file_code"],
                "title": i["title"],
                "status": i["status"],
                "reference": i["reference"],
                "opened_at": _iso(i["opened_at"]),
                "owner": a.owner if a else None,
                "due_date": _iso(due),
                "overdue": due is not None and due < today,
                "days_open": (today - i["opened_at"].date()).days,
            }
        )
    open_items.sort(key=lambda r: (r["due_date"] or "9999", r["site_code"], r["id"]))
    by_site: dict[str, Counter[str]] = defaultdict(Counter)
    by_owner: dict[str, Counter[str]] = defaultdict(Counter)
    for r in open_items:
        for bucket in (by_site[r["site_code"]], by_owner[r["owner"] or "(unassigned)"]):
            bucket[r["kind"]] += 1
            bucket["open"] += 1
            bucket["overdue"] += int(r["overdue"])
    trend: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for i in rows:
        if i["kind"] in ("change_control", "suspension"):
            continue
        trend[(_month(i["opened_at"]), codes.get(i["site_id"] or "", "network"))][i["kind"]] += 1
    return {
        "as_of": today.isoformat(),
        "network_wide": sites is None,
        "items": open_items,
        "by_site": [
            {"site_code": s, **{k: c[k] for k in (*KINDS, "open", "overdue")}}
            for s, c in sorted(by_site.items())
        ],
        "by_owner": [
            {"owner": o, **{k: c[k] for k in (*KINDS, "open", "overdue")}}
            for o, c in sorted(by_owner.items())
        ],
        "trend": [
            {
                "month": m,
                "site_code": s,
                "deviations": c["deviation"],
                "complaints": c["complaint"],
                "capas": c["capa"],
            }
            for (m, s), c in sorted(trend.items())
        ],
    }


# --- the annual report --------------------------------------------------------------------------
@shaped(AnnualReportOut)
def annual_report(
    app: App, uow: UnitOfWork, actor: Actor, master_file_code: str, year: int
) -> dict[str, Any]:
    """What the control site reports to its regulator for one master file and one calendar
    year (UTC): the sites, batches made / released / rejected / failed and packs dispensed per
    site, deviations, recalls, master-file changes and complaints of the year."""
    authorize_network(actor, Permission.ANNUAL_REPORT_READ)
    if not 2000 <= year <= 2200:
        raise ValidationFailed("year: between 2000 and 2200", field="year")
    versions = list(
        uow.session.scalars(
            select(MasterFile)
            .where(MasterFile.code == master_file_code)
            .order_by(MasterFile.version)
        )
    )
    if not versions:
        raise NotFound(f"no master file {master_file_code!r}", field="master_file_code")
    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)

    def in_year(v: datetime | None) -> bool:
        if v is None:
            return False
        v = v if v.tzinfo else v.replace(tzinfo=UTC)
        return start <= v < end

    codes = _site_codes(app, uow)
    batches = [
        b
        for b in uow.session.scalars(
            select(BatchRecord).where(BatchRecord.master_file_code == master_file_code)
        )
        if in_year(b.started_at)
    ]
    # packs dispensed in the year (a dispense record each, whatever happened to the pack
    # later: a recall), of any batch of the master file, counted at the site that made it
    dispensed: Counter[str] = Counter()
    site_of = {b.id: b.site_id for b in batches}
    for dispensed_at, maker in uow.session.execute(
        select(Dispense.dispensed_at, BatchRecord.site_id)
        .join(SerialUnit, SerialUnit.id == Dispense.unit_id)
        .join(BatchRecord, BatchRecord.id == SerialUnit.batch_id)
        .where(BatchRecord.master_file_code == master_file_code)
    ):
        if in_year(dispensed_at):
            dispensed[maker] += 1
    site_ids = (
        {s for v in versions for s in v.allowed_site_ids} | set(site_of.values()) | set(dispensed)
    )
    volumes = []
    for sid in sorted(site_ids, key=lambda s: codes.get(s, s)):
        mine = [b for b in batches if b.site_id == sid]
        count = Counter(b.status for b in mine)
        volumes.append(
            {
                "site_id": sid,
                "site_code": codes.get(sid, sid),
                "allowed": any(
                    sid in v.allowed_site_ids for v in versions if v.status == "effective"
                ),
                "batches_made": sum(1 for b in mine if b.status != "in_progress"),
                "batches_released": count["released"],
                "batches_rejected": count["rejected"],
                "batches_failed": count["failed"],
                "batches_awaiting_disposition": count["completed"],
                "packs_dispensed": dispensed[sid],
            }
        )
    all_batches = {
        b.id: b
        for b in uow.session.scalars(
            select(BatchRecord).where(BatchRecord.master_file_code == master_file_code)
        )
    }
    deviations = [
        {
            "id": d.id,
            "site_code": codes.get(all_batches[d.batch_id].site_id, ""),
            "batch_number": all_batches[d.batch_id].batch_number,
            "kind": d.kind,
            "description": d.description,
            "status": d.status,
            "opened_at": _iso(d.opened_at),
        }
        for d in uow.session.scalars(
            select(Deviation)
            .where(Deviation.batch_id.in_(list(all_batches) or [""]))
            .order_by(Deviation.opened_at, Deviation.id)
        )
        if in_year(d.opened_at)
    ]
    recalled: dict[str, set[str]] = defaultdict(set)
    if all_batches:
        for rid, bid in uow.session.execute(
            select(RecallUnit.recall_id, SerialUnit.batch_id)
            .join(SerialUnit, SerialUnit.id == RecallUnit.unit_id)
            .where(SerialUnit.batch_id.in_(list(all_batches)))
        ):
            recalled[rid].add(bid)
    recalls = []
    for r in uow.session.scalars(select(Recall).order_by(Recall.created_at, Recall.id)):
        touched = recalled.get(r.id, set())
        whole = r.scope == "master_file" and r.scope_ref == master_file_code
        if (touched or whole) and in_year(r.created_at):
            recalls.append(
                {
                    "id": r.id,
                    "scope": r.scope,
                    "scope_ref": r.scope_ref,
                    "reason": r.reason,
                    "created_at": _iso(r.created_at),
                    "batches": sorted(all_batches[b].batch_number for b in touched),
                    "site_codes": sorted({codes.get(all_batches[b].site_id, "") for b in touched}),
                }
            )
    ccs = {
        cc.proposed_master_file_id: cc
        for cc in uow.session.scalars(
            select(ChangeControl).where(ChangeControl.master_file_code == master_file_code)
        )
    }
    changes = []
    for v in versions:
        cc = ccs.get(v.id)
        if in_year(v.effective_from) or (cc is not None and in_year(cc.raised_at)):
            changes.append(
                {
                    "version": v.version,
                    "status": v.status,
                    "effective_from": _iso(v.effective_from),
                    "change_control_id": cc.id if cc else None,
                    "change_control_status": cc.status if cc else None,
                    "title": cc.title if cc else "first version" if v.version == 1 else "",
                    "reason": cc.reason if cc else None,
                }
            )
    complaints = [
        {
            "id": c.id,
            "site_code": codes.get(c.site_id, c.site_id),
            "batch_number": c.batch_number,
            "pack_serial": c.pack_serial,
            "description": c.description,
            "status": c.status,
            "received_at": _iso(c.received_at),
            "conclusion": c.conclusion,
        }
        for c in uow.session.scalars(
            select(Complaint)
            .where(Complaint.master_file_code == master_file_code)
            .order_by(Complaint.received_at, Complaint.id)
        )
        if in_year(c.received_at)
    ]
    latest = versions[-1]
    return {
        "master_file_code": master_file_code,
        "title": latest.title,
        "year": year,
        "generated_at": uow.clock.now().isoformat(),
        "generated_by": actor.username,
        "sites": volumes,
        "totals": {
            k: sum(int(r[k]) for r in volumes)
            for k in (
                "batches_made",
                "batches_released",
                "batches_rejected",
                "batches_failed",
                "batches_awaiting_disposition",
                "packs_dispensed",
            )
        },
        "deviations": deviations,
        "recalls": recalls,
        "changes": changes,
        "complaints": complaints,
    }


def annual_report_csv(report: dict[str, Any]) -> str:
    """One row per figure or record: section, site, key, value, detail (parse it back with
    csv.DictReader)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "site", "key", "value", "detail"])
    w.writerow(["report", "", "master_file_code", report["master_file_code"], report["title"]])
    w.writerow(["report", "", "year", report["year"], report["generated_at"]])
    for s in report["sites"]:
        for k, v in s.items():
            if k not in ("site_id", "site_code"):
                w.writerow(["volume", s["site_code"], k, v, ""])
    for k, v in report["totals"].items():
        w.writerow(["total", "", k, v, ""])
    for d in report["deviations"]:
        w.writerow(
            [
                "deviation",
                d["site_code"],
                d["id"],
                d["status"],
                f"{d['batch_number']}: {d['kind']}: {d['description']}",
            ]
        )
    for r in report["recalls"]:
        w.writerow(
            [
                "recall",
                ";".join(r["site_codes"]),
                r["id"],
                r["scope"],
                f"{r['scope_ref']}: {r['reason']}",
            ]
        )
    for c in report["changes"]:
        w.writerow(["change", "", f"v{c['version']}", c["change_control_id"] or "", c["title"]])
    for c in report["complaints"]:
        w.writerow(
            [
                "complaint",
                c["site_code"],
                c["id"],
                c["status"],
                f"{c['batch_number']}: {c['description']}",
            ]
        )
    return buf.getvalue()


def annual_report_pdf(report: dict[str, Any]) -> bytes:
    """The report as a PDF (reportlab, as recordexport)."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)

    def p(v: Any) -> Paragraph:
        return Paragraph(escape("" if v is None else str(v)), small)

    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )

    def table(head: list[str], rows: list[list[Any]]) -> Any:
        if not rows:
            return p("None in the year.")
        t = Table([[p(h) for h in head]] + [[p(c) for c in r] for r in rows], repeatRows=1)
        t.setStyle(grid)
        return t

    title = f"Annual report {report['year']}: {report['master_file_code']}"
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=landscape(A4),
        leftMargin=12 * mm,
        rightMargin=12 * mm,
        topMargin=12 * mm,
        bottomMargin=12 * mm,
        title=title,
        author="nearfab",
    )
    story: list[Any] = [
        Paragraph(escape(title), styles["Title"]),
        p(
            f"{report['title']}. Generated {report['generated_at']} by "
            f"{report['generated_by']}. Calendar year in UTC."
        ),
        Spacer(1, 4 * mm),
        Paragraph("Sites and volumes", styles["Heading2"]),
        table(
            [
                "site",
                "allowed",
                "made",
                "released",
                "rejected",
                "failed",
                "awaiting",
                "dispensed packs",
            ],
            [
                [
                    s["site_code"],
                    "yes" if s["allowed"] else "no",
                    s["batches_made"],
                    s["batches_released"],
                    s["batches_rejected"],
                    s["batches_failed"],
                    s["batches_awaiting_disposition"],
                    s["packs_dispensed"],
                ]
                for s in report["sites"]
            ]
            + [["Total", ""] + [report["totals"][k] for k in report["totals"]]],
        ),
        Paragraph("Deviations", styles["Heading2"]),
        table(
            ["id", "site", "batch", "kind", "description", "status", "opened"],
            [
                [
                    d["id"],
                    d["site_code"],
                    d["batch_number"],
                    d["kind"],
                    d["description"],
                    d["status"],
                    d["opened_at"],
                ]
                for d in report["deviations"]
            ],
        ),
        Paragraph("Recalls", styles["Heading2"]),
        table(
            ["id", "scope", "reference", "reason", "sites", "batches", "created"],
            [
                [
                    r["id"],
                    r["scope"],
                    r["scope_ref"],
                    r["reason"],
                    ", ".join(r["site_codes"]),
                    ", ".join(r["batches"]),
                    r["created_at"],
                ]
                for r in report["recalls"]
            ],
        ),
        Paragraph("Master-file changes", styles["Heading2"]),
        table(
            ["version", "status", "effective from", "change control", "title", "reason"],
            [
                [
                    c["version"],
                    c["status"],
                    c["effective_from"],
                    c["change_control_id"],
                    c["title"],
                    c["reason"],
                ]
                for c in report["changes"]
            ],
        ),
        Paragraph("Complaints", styles["Heading2"]),
        table(
            ["id", "site", "batch", "pack", "description", "status", "received", "conclusion"],
            [
                [
                    c["id"],
                    c["site_code"],
                    c["batch_number"],
                    c["pack_serial"],
                    c["description"],
                    c["status"],
                    c["received_at"],
                    c["conclusion"],
                ]
                for c in report["complaints"]
            ],
        ),
    ]
    doc.build(story)
    return buf.getvalue()
