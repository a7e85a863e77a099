"""CLI: the custody ledger and EPCIS export (`custody`), trace (`trace`), recall (`recall`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nearfab.cli.context import (
    app_as,
    console,
    done,
    emit_json,
    err_console,
    local_actor,
    state,
    use_case,
    write_report,
)

if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.uow import UnitOfWork

custody_app = typer.Typer(no_args_is_help=True, help="Chain of custody: ledger and EPCIS.")
trace_app = typer.Typer(no_args_is_help=True, help="Trace packs backward and forward.")
recall_app = typer.Typer(no_args_is_help=True, help="Recalls: mark packs, report patients.")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder (default: NEARFAB_DATA_DIR).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UserOpt = Annotated[str, typer.Option(help="Who does it (username).")]
PasswordOpt = Annotated[str, typer.Option(help="Their password.")]


@custody_app.command("verify-ledger")
def verify_ledger(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    all_signatures: Annotated[
        bool, typer.Option("--all-signatures", help="Check every entry's signature.")
    ] = False,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against",
            help="An exported checkpoint file (`nearfab audit checkpoint export`): every "
            "ledger head it recorded must still be there (a cut-off tail is named).",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Check every site's hash chain, signatures and anchors, and the ledger heads the last
    signed audit checkpoint (and --against FILE) recorded. Exit 1 naming the first bad entry if
    a row was edited, deleted, inserted or reordered, or a chain's tail was cut off."""
    from nearfab.cli.audit import read_against

    application = state(ctx, data_dir).app()
    chain = application.custody_chain
    file = read_against(against, as_json)
    report = use_case(
        application,
        as_json,
        lambda uow: chain.ledger.verify(uow, all_signatures=all_signatures, against=file),
    )
    if as_json:
        emit_json(report.to_dict())
    elif report.ok:
        console.print(f"ledger ok: {report.entries} entries in {report.sites} site chains")
    else:
        assert report.first_bad is not None
        err_console.print(
            f"[bold red]ledger broken[/]: first bad entry: {report.first_bad.describe()}"
        )
        for problem in report.problems[1:20]:
            err_console.print(f"  also: {problem.describe()}")
    if not report.ok:
        raise typer.Exit(code=1)


@custody_app.command("anchor")
def anchor(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    """The control site records every site's chain head in its own chain."""
    application = state(ctx, data_dir).app()
    chain = application.custody_chain
    made = use_case(application, as_json, lambda uow: chain.ledger.anchor(uow, local_actor()))
    refs = [e.ref for e in made]
    done({"anchored": refs}, as_json, f"anchored {len(refs)} site heads")


@custody_app.command("export-epcis")
def export_epcis(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="JSON-LD file to write.")],
    data_dir: DataDir = None,
) -> None:
    """Every custody event nearfab made, as one EPCIS 2.0 JSON-LD document."""
    application = state(ctx, data_dir).app()
    chain = application.custody_chain
    doc = use_case(application, False, lambda uow: chain.epcis.export(uow))
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"{len(doc['epcisBody']['eventList'])} events written to {out}")


def _container_out(application: App, sscc: str) -> dict[str, Any]:
    from nearfab.custody import Container

    chain = application.custody_chain
    with application.uow() as uow:
        units = chain.custody.units_in_container(uow, sscc)
        found = uow.session.get(Container, sscc)
        assert found is not None
        return {
            "sscc": sscc,
            "digital_link": f"https://id.gs1.org/00/{sscc}",
            "status": found.status,
            "from_site_id": found.from_site_id,
            "to_site_id": found.to_site_id,
            "units": [{"unit_id": u.id, "serial": u.serial} for u in units],
        }


@custody_app.command("pack")
def pack(
    ctx: typer.Context,
    unit_ids: Annotated[list[str], typer.Argument(help="Pack ids (released packs).")],
    to: Annotated[str, typer.Option("--to", help="Destination site (code or id).")],
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Pack released packs into a new shipping container (SSCC) for a site (EPCIS
    AggregationEvent ADD, packing)."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)
    chain = application.custody_chain

    def step(uow: UnitOfWork) -> str:
        site = application.network.get_site(uow, to).id
        made = chain.custody.pack(uow, actor, unit_ids=unit_ids, to_site_id=site)
        return made.sscc

    sscc = use_case(application, as_json, step)
    out = _container_out(application, sscc)
    done(out, as_json, f"container {sscc}: {len(unit_ids)} packs packed for {to}")


@custody_app.command("unpack")
def unpack(
    ctx: typer.Context,
    sscc: Annotated[str, typer.Argument(help="The container's SSCC (18 digits).")],
    user: UserOpt,
    password: PasswordOpt,
    at: Annotated[str | None, typer.Option("--at", help="Receiving site (code or id).")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """On receipt: take the packs out of a container (EPCIS AggregationEvent DELETE)."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)
    chain = application.custody_chain

    def step(uow: UnitOfWork) -> str:
        site = application.network.get_site(uow, at).id if at else None
        done = chain.custody.unpack(uow, actor, sscc=sscc, at_site_id=site)
        return done.sscc

    use_case(application, as_json, step)
    out = _container_out(application, sscc)
    done(out, as_json, f"container {sscc} unpacked: {len(out['units'])} packs")


@custody_app.command("destroy")
def destroy(
    ctx: typer.Context,
    unit_ids: Annotated[list[str], typer.Argument(help="Pack ids.")],
    site: Annotated[str, typer.Option(help="Where they are destroyed (site code or id).")],
    reason: Annotated[str, typer.Option(help="Why (required).")],
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Destroy rejected, recalled or expired packs (QP or pharmacist)."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)
    chain = application.custody_chain

    def step(uow: UnitOfWork) -> str:
        where = application.network.get_site(uow, site).id
        event = chain.custody.destroy(
            uow,
            actor,
            unit_ids=unit_ids,
            site_id=where,
            reason=reason,
        )
        return event.event_hash

    event_id = use_case(application, as_json, step)
    done(
        {"event_id": event_id, "unit_ids": unit_ids, "status": "destroyed"},
        as_json,
        f"{len(unit_ids)} packs destroyed ({event_id})",
    )


@trace_app.command("unit")
def trace_unit(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(help="Pack id or a scan of its label.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Backward trace: what a pack was made from, where, on what, by whom, released how."""
    application = state(ctx, data_dir).app()
    chain = application.custody_chain
    found = use_case(application, as_json, lambda uow: chain.trace.unit(uow, local_actor(), unit))
    if as_json:
        emit_json(found)
        return
    u, b = found["unit"], found["batch_record"]
    console.print(f"pack {u['serial']} ({u['status']}) for {found['patient_ref']}")
    console.print(f"  batch {b['batch_number']} at {found['site']['code']}")
    console.print(f"  machine {found['machine']['name']} firmware {found['machine']['firmware']}")
    console.print(f"  lot {found['material_lots'][0]['lot_number']}")
    console.print(
        f"  master file {found['master_file']['code']} v{found['master_file']['version']}"
    )


@trace_app.command("lot")
def trace_lot(
    ctx: typer.Context,
    lot: Annotated[str, typer.Argument(help="Material lot number.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Forward trace: every pack and patient made from a material lot."""
    application = state(ctx, data_dir).app()
    chain = application.custody_chain
    found = use_case(application, as_json, lambda uow: chain.trace.lot(uow, local_actor(), lot))
    if as_json:
        emit_json(found)
        return
    counts = found["counts"]
    console.print(
        f"lot {lot}: {counts['units']} packs, {counts['patients']} patients, "
        f"{counts['dispensed']} dispensed"
    )


@recall_app.command("create")
def recall_create(
    ctx: typer.Context,
    lot: Annotated[str, typer.Option(help="Material lot number.")],
    reason: Annotated[str, typer.Option(help="Why the lot is recalled.")],
    report: Annotated[
        Path | None, typer.Option(help="Write the report here (.csv or .pdf).")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Recall every pack made from a lot; print (or write) the affected patients by site."""
    application = state(ctx, data_dir).app()
    chain = application.custody_chain
    recall = use_case(
        application,
        as_json,
        lambda uow: chain.recalls.create(uow, local_actor(), lot=lot, reason=reason),
    )
    rows = use_case(
        application, as_json, lambda uow: chain.recalls.report_rows(uow, local_actor(), recall.id)
    )
    if report is not None:
        write_report(
            report,
            lambda: use_case(
                application,
                as_json,
                lambda uow: chain.recalls.report_pdf(uow, local_actor(), recall.id),
            ),
            lambda: use_case(
                application,
                as_json,
                lambda uow: chain.recalls.report_csv(uow, local_actor(), recall.id),
            ),
        )
    done(
        {"recall_id": recall.id, "lot": lot, "units": len(rows), "rows": rows},
        as_json,
        f"recall {recall.id}: {len(rows)} packs marked recalled",
    )


# --- the chain of identity: hand-overs, storage log, holds, in-use period ------------------
@custody_app.command("hand-over")
def hand_over(
    ctx: typer.Context,
    scan: Annotated[str, typer.Option(help="The giving side's scan of the unit.")],
    from_step: Annotated[str, typer.Option("--from", help="The step handing it over.")],
    to_step: Annotated[str, typer.Option("--to", help="The step receiving it.")],
    received_scan: Annotated[str, typer.Option(help="The receiving side's scan.")],
    user: UserOpt,
    password: PasswordOpt,
    identifier: Annotated[
        str | None, typer.Option(help="The family's chain identifier, giving side's scan.")
    ] = None,
    received_identifier: Annotated[
        str | None, typer.Option(help="The chain identifier, receiving side's scan.")
    ] = None,
    patient: Annotated[
        str | None, typer.Option(help="The patient's identifier (the bedside check).")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Hand a unit to the next step of its chain, scanned on both sides (with the family's
    chain identifier, and the patient at the bedside, when the family has one). A mismatch is
    refused (exit 2) and holds the unit until a QP judges it."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)

    def step(uow: UnitOfWork) -> dict[str, Any]:
        row = application.custody.hand_over(
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
        return {
            "id": row.id,
            "unit_id": row.unit_id,
            "from_step": row.from_step,
            "to_step": row.to_step,
            "outcome": row.outcome,
            "patient_checked": row.patient_checked,
        }

    out = use_case(application, as_json, step)
    done(out, as_json, f"handed over {out['from_step']} -> {out['to_step']} ({out['id']})")


@custody_app.command("storage-log")
def storage_log(
    ctx: typer.Context,
    unit_ids: Annotated[list[str], typer.Argument(help="Unit ids (in storage or shipment).")],
    reading: Annotated[
        list[str], typer.Option(help="A reading: TIME=VALUE (ISO time with zone); repeat.")
    ],
    user: UserOpt,
    password: PasswordOpt,
    unit: Annotated[str, typer.Option(help="UCUM unit of the readings.")] = "Cel",
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record storage log readings; the unit's family judges each, and an excursion holds the
    unit until a QP judges it."""
    from datetime import datetime

    from nearfab.cli.context import fail
    from nearfab.common.errors import ValidationFailed

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    readings = []
    for text in reading:
        when, _, value = text.rpartition("=")
        try:
            readings.append((datetime.fromisoformat(when), float(value)))
        except ValueError:
            fail(ValidationFailed(f"reading {text!r} is not TIME=VALUE", field="reading"), as_json)

    def step(uow: UnitOfWork) -> dict[str, Any]:
        result = application.custody.log_storage(
            uow, actor, unit_ids=unit_ids, readings=readings, unit=unit
        )
        return {
            "readings": len(result.readings),
            "excursions": [
                {"unit_id": r.unit_id, "value": r.value, "reason": r.reason}
                for r in result.excursions
            ],
            "holds": [h.id for h in result.holds],
        }

    out = use_case(application, as_json, step)
    if as_json:
        emit_json(out)
    else:
        console.print(f"{out['readings']} readings, {len(out['excursions'])} excursions")
        for hold in out["holds"]:
            console.print(f"  held: {hold}")


@custody_app.command("prepare")
def prepare(
    ctx: typer.Context,
    scan: Annotated[str, typer.Option(help="The scan of the unit being prepared.")],
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record that a unit was prepared for use: its in-use period starts."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)

    def step(uow: UnitOfWork) -> dict[str, Any]:
        row = application.custody.prepare(uow, actor, scan=scan)
        return {
            "unit_id": row.unit_id,
            "prepared_at": row.prepared_at.isoformat(),
            "use_by": row.use_by.isoformat() if row.use_by else None,
        }

    out = use_case(application, as_json, step)
    done(out, as_json, f"prepared {out['unit_id']}; use by {out['use_by'] or '(no limit)'}")


@custody_app.command("judge-hold")
def judge_hold(
    ctx: typer.Context,
    hold_id: Annotated[str, typer.Argument(help="The hold's id.")],
    decision: Annotated[str, typer.Option(help="resume or reject.")],
    reason: Annotated[str, typer.Option(help="Why (required).")],
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """A QP judges a held unit: resume its chain, or reject it for good."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)

    def step(uow: UnitOfWork) -> dict[str, Any]:
        row = application.custody.judge_hold(
            uow, actor, hold_id=hold_id, decision=decision, reason=reason
        )
        return {"hold_id": row.id, "unit_id": row.unit_id, "decision": row.decision}

    out = use_case(application, as_json, step)
    done(out, as_json, f"hold {out['hold_id']}: {out['decision']}")


# --- custody alerts: the follow-up a pharmacist records (docs/custody.md) ------------------
@custody_app.command("alerts")
def alerts(
    ctx: typer.Context,
    status: Annotated[str, typer.Option(help="all, open (not closed) or closed.")] = "all",
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The custody alerts, open ones first, then newest first, with their follow-up status
    (run by the data folder's owner: every site's)."""
    from nearfab.custody.services.alerts import alert_dict

    application = state(ctx, data_dir).app()
    actor = local_actor()
    rows = use_case(
        application, as_json, lambda uow: application.custody.alerts(uow, actor, status=status)
    )
    if as_json:
        emit_json([alert_dict(a, actor) for a in rows])
        return
    if not rows:
        console.print(f"no custody alerts ({status})")
    for a in rows:
        who = f" by {a.history[-1].acted_by_name}" if a.history else ""
        console.print(
            f"{a.id}  {a.raised_at.isoformat()}  {a.kind}  {a.serial or a.scan}  "
            f"patient {a.patient_ref or '-'}  [{a.status}{who}]"
        )


@custody_app.command("alert")
def alert_step(
    ctx: typer.Context,
    alert_id: Annotated[str, typer.Argument(help="The alert's id.")],
    status: Annotated[
        str,
        typer.Option(
            help="acknowledged, patient_contacted, pack_recovered, pack_not_recoverable, "
            "closed (acknowledged on a closed alert reopens it)."
        ),
    ],
    user: UserOpt,
    password: PasswordOpt,
    note: Annotated[str, typer.Option(help="What was done (the reason, to reopen).")] = "",
    outcome: Annotated[
        str | None,
        typer.Option(help="When closing: pack_recovered, pack_not_recoverable, no_action_needed."),
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record a step of a custody alert's follow-up (a pharmacist of the alert's site); a
    refusal names the field (exit 2)."""
    from nearfab.custody.services.alerts import STATUS_WORDS, alert_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    use_case(
        application,
        as_json,
        lambda uow: application.custody.update_alert(
            uow, actor, alert_id, status=status, note=note, outcome=outcome
        ),
    )
    row = use_case(
        application, as_json, lambda uow: application.custody.alert(uow, actor, alert_id)
    )
    done(
        alert_dict(row, actor),
        as_json,
        f"alert {row.id}: {STATUS_WORDS.get(row.status, row.status)}",
    )
