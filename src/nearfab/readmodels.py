"""Cross-domain read models (order timeline, batch record, release queue, network), shared by
the API, the CLI and the web pages so all three show the same thing."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import or_, select

from nearfab.bootstrap import App
from nearfab.common.canonical import to_jsonable
from nearfab.common.schemas import shaped
from nearfab.custody.schemas import UnitOut
from nearfab.identity import Actor, AuditEntry, Permission, audit_entry_out, authorize, can
from nearfab.monitoring import alarm_dict
from nearfab.network.schemas import NetworkSiteOut
from nearfab.quality.schemas import PendingReviewOut
from nearfab.readschemas import BatchOut, OrderOut
from nearfab.recordexport import signature_dict
from nearfab.uow import UnitOfWork


def _audit_rows(uow: UnitOfWork, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if not pairs:
        return []
    cond = or_(*[(AuditEntry.entity_type == t) & (AuditEntry.entity_id == i) for t, i in pairs])
    rows = uow.session.scalars(select(AuditEntry).where(cond).order_by(AuditEntry.id))
    return [audit_dict(r) for r in rows]


def audit_dict(r: AuditEntry) -> dict[str, Any]:
    """An audit row: the one shape, `AuditEntryOut` (as the record review and exports)."""
    return audit_entry_out(r)


@shaped(UnitOut)
def unit_dict(app: App, unit: Any) -> dict[str, Any]:
    from nearfab.custody import make_identifier

    ident = make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry)
    return {
        "id": unit.id,
        "pack_index": unit.pack_index,
        "quantity": unit.quantity,
        "status": unit.status,
        "gtin": unit.gtin,
        "serial": unit.serial,
        "batch_number": unit.batch_number,
        "expiry": unit.expiry.isoformat(),
        "element_string": ident.element_string(),
        "digital_link": ident.digital_link(),
        "batch_id": unit.batch_id,
    }


def review_dict(app: App, uow: UnitOfWork, review: Any) -> dict[str, Any]:
    return {
        "id": review.id,
        "batch_id": review.batch_id,
        "order_id": review.order_id,
        "status": review.status,
        "proposed_decision": review.proposed_decision,
        "reasons": review.proposal.get("reasons", []),
        "checks": review.proposal.get("checks", []),
        "decision": review.decision,
        "reason": review.reason,
        "decided_by": review.decided_by,
        "decided_at": review.decided_at.isoformat() if review.decided_at else None,
        "signature_id": review.signature_id,
        "signature_valid": app.quality.signature_valid(uow, review),
        "evaluated_record_hash": review.record_hash,
        # results pending at release and their follow-up; an exceptional release
        **app.quality.certificate(uow, review),
    }


@shaped(OrderOut)
def order_view(app: App, uow: UnitOfWork, actor: Actor, order_id: str) -> dict[str, Any]:
    """An order for its site's staff (and the network's): also for the sites making it."""
    order = app.orders.get(uow, order_id)
    jobs = app.scheduling.jobs(uow, order_id=order.id)
    authorize(actor, Permission.ORDER_READ, one_of={order.site_id, *(j.site_id for j in jobs)})
    patient = app.orders.patient(uow, order.patient_id)
    batches = app.production.batches(uow, order_id=order.id)
    reviews = [r for b in batches if (r := app.quality.review_for(uow, b.id))]
    units = app.custody.units_of_order(uow, order.id)
    pairs = [("order", order.id), ("prescription", order.prescription_id)]
    pairs += [("job", j.id) for j in jobs] + [("batch", b.id) for b in batches]
    pairs += [("release_review", r.id) for r in reviews] + [("unit", u.id) for u in units]
    return cast(
        dict[str, Any],
        to_jsonable(
            {
                "id": order.id,
                "status": order.status,
                "medication": order.medication,
                "dose_value": order.dose_value,
                "dose_unit": order.dose_unit,
                "doses_per_day": order.doses_per_day,
                "units": order.units,
                "patient_ref": patient.ref,
                "patient_group": order.patient_group,
                "master_file": {
                    "id": order.master_file_id,
                    "code": order.master_file_code,
                    "version": order.master_file_version,
                },
                "design": order.design,
                "stop_reason": order.stop_reason,
                "need_by": order.need_by,
                "created_at": order.created_at,
                "prescription_id": order.prescription_id,
                "jobs": [
                    {
                        "id": j.id,
                        "machine_id": j.machine_id,
                        "site_id": j.site_id,
                        "status": j.status,
                        "planned_start": j.planned_start,
                        "planned_finish": j.planned_finish,
                        "ticket_hash": j.ticket_hash,
                    }
                    for j in jobs
                ],
                "batches": [
                    {
                        "id": b.id,
                        "batch_number": b.batch_number,
                        "status": b.status,
                        "machine_id": b.machine_id,
                        "site_id": b.site_id,
                        "started_at": b.started_at,
                        "finished_at": b.finished_at,
                    }
                    for b in batches
                ],
                "reviews": [review_dict(app, uow, r) for r in reviews],
                "packs": [unit_dict(app, u) for u in units],
                "timeline": _audit_rows(uow, pairs),
            }
        ),
    )


@shaped(BatchOut)
def batch_view(app: App, uow: UnitOfWork, actor: Actor, batch_id: str) -> dict[str, Any]:
    """A batch record for the making site's staff and the network's."""
    batch = app.production.get(uow, batch_id)
    authorize(actor, Permission.BATCH_READ, site_id=batch.site_id)
    review = app.quality.review_for(uow, batch.id)
    sigs = app.signatures.signatures_for(uow, "batch", batch.id)
    machine = app.network.get_machine(uow, batch.machine_id)
    site = app.network.get_site(uow, batch.site_id)
    return cast(
        dict[str, Any],
        to_jsonable(
            {
                "id": batch.id,
                "batch_number": batch.batch_number,
                "status": batch.status,
                "order_id": batch.order_id,
                "job_id": batch.job_id,
                "master_file": {
                    "id": batch.master_file_id,
                    "code": batch.master_file_code,
                    "version": batch.master_file_version,
                },
                "site": {"id": site.id, "code": site.code, "name": site.name},
                "machine": {
                    "id": machine.id,
                    "name": machine.name,
                    "firmware": batch.machine_firmware,
                },
                "material_lot": {
                    "id": batch.material_lot_id,
                    "lot_number": batch.material_lot_number,
                    "used_g": batch.material_used_g,
                },
                "operator_id": batch.operator_id,
                "operator": {
                    "id": batch.operator_id,
                    "name": app.users.get(uow, batch.operator_id).full_name,
                },
                "ticket_hash": batch.ticket_hash,
                "design": batch.design,
                "started_at": batch.started_at,
                "finished_at": batch.finished_at,
                "measurements": batch.measurements,
                "units_made": batch.units_made,
                "telemetry_summary": batch.telemetry_summary,
                "cpp_excursions": batch.cpp_excursions,
                "machine_events": batch.machine_events,
                "failure_reason": batch.failure_reason,
                "steps": [
                    {
                        "seq": s.seq,
                        "name": s.name,
                        "at": s.at,
                        "actor": s.actor_name,
                        "detail": s.detail,
                    }
                    for s in app.production.steps(uow, batch.id)
                ],
                # process alarms of the run, with their dispositions (open ones block release)
                "alarms": [alarm_dict(a) for a in app.monitoring.alarms(uow, batch_id=batch.id)],
                "deviations": [
                    {
                        "id": d.id,
                        "kind": d.kind,
                        "description": d.description,
                        "status": d.status,
                        "closure_note": d.closure_note,
                    }
                    for d in app.quality.deviations(uow, batch.id)
                ],
                "review": review_dict(app, uow, review) if review else None,
                # the one signature shape (`SignatureOut`), validity as in the record export
                "signatures": [signature_dict(app, uow, s) for s in sigs],
                "packs": [unit_dict(app, u) for u in app.custody.units_of_batch(uow, batch.id)],
                "audit": _audit_rows(uow, [("batch", batch.id)]),
            }
        ),
    )


@shaped(list[PendingReviewOut])
def pending_view(app: App, uow: UnitOfWork, actor: Actor) -> list[dict[str, Any]]:
    """Batches waiting for a QP, of the sites the actor sees."""
    authorize(actor, Permission.RELEASE_QUEUE_READ)
    out = []
    for review in app.quality.pending(uow):
        batch = app.production.get(uow, review.batch_id)
        if not can(actor, Permission.RELEASE_QUEUE_READ, site_id=batch.site_id):
            continue
        order = app.orders.get(uow, review.order_id)
        site = app.network.get_site(uow, batch.site_id)
        out.append(
            to_jsonable(
                {
                    **review_dict(app, uow, review),
                    "batch_number": batch.batch_number,
                    "site": site.code,
                    "medication": order.medication,
                    "dose_value": order.dose_value,
                    "dose_unit": order.dose_unit,
                    "units": batch.units_made or 0,
                    "created_at": review.created_at,
                    # what the QP is shown; a decision sent back with it signs only this record
                    "record_hash": app.quality.shown_hash(uow, batch, review),
                }
            )
        )
    return out


@shaped(list[NetworkSiteOut])
def network_view(app: App, uow: UnitOfWork) -> list[dict[str, Any]]:
    out = []
    for site in app.network.list_sites(uow):
        machines = [
            {
                "id": m.id,
                "name": m.name,
                "machine_type": m.machine_type,
                "firmware": m.firmware,
                "status": m.status,
                "qualified_for": app.network.qualified_codes(uow, m.id),
            }
            for m in app.network.list_machines(uow, site.id)
        ]
        out.append(
            {
                "id": site.id,
                "code": site.code,
                "name": site.name,
                "kind": site.kind,
                "status": site.status,
                "machines": machines,
            }
        )
    return out
