"""CLI: the custody ledger and EPCIS export (`custody`), trace (`trace`), recall (`recall`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nearfab.bootstrap import App
from nearfab.cli.context import console, emit_json, err_console, local_actor, state, use_case
from nearfab.custody import CustodyChain

custody_app = typer.Typer(no_args_is_help=True, help="Chain of custody: ledger and EPCIS.")
trace_app = typer.Typer(no_args_is_help=True, help="Trace packs backward and forward.")
recall_app = typer.Typer(no_args_is_help=True, help="Recalls: mark packs, report patients.")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder (default: NEARFAB_DATA_DIR).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _chain(application: App) -> CustodyChain:
    return application.custody_chain


@custody_app.command("verify-ledger")
def verify_ledger(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    all_signatures: Annotated[
        bool, typer.Option("--all-signatures", help="Check every entry's signature.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Check every site's hash chain, signatures and anchors. Exit 1 naming the first bad
    entry if a row was edited, deleted, inserted or reordered."""
    application = state(ctx, data_dir).app()
    chain = _chain(application)
    report = use_case(
        application, as_json, lambda uow: chain.ledger.verify(uow, all_signatures=all_signatures)
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
    chain = _chain(application)
    made = use_case(application, as_json, lambda uow: chain.ledger.anchor(uow, local_actor()))
    refs = [e.ref for e in made]
    if as_json:
        emit_json({"anchored": refs})
    else:
        console.print(f"anchored {len(refs)} site heads")


@custody_app.command("export-epcis")
def export_epcis(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="JSON-LD file to write.")],
    data_dir: DataDir = None,
) -> None:
    """Every custody event nearfab made, as one EPCIS 2.0 JSON-LD document."""
    application = state(ctx, data_dir).app()
    chain = _chain(application)
    doc = use_case(application, False, lambda uow: chain.epcis.export(uow))
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    console.print(f"{len(doc['epcisBody']['eventList'])} events written to {out}")


@trace_app.command("unit")
def trace_unit(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(help="Pack id or a scan of its label.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Backward trace: what a pack was made from, where, on what, by whom, released how."""
    application = state(ctx, data_dir).app()
    chain = _chain(application)
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
    chain = _chain(application)
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
    chain = _chain(application)
    recall = use_case(
        application,
        as_json,
        lambda uow: chain.recalls.create(uow, local_actor(), lot=lot, reason=reason),
    )
    rows = use_case(application, as_json, lambda uow: chain.recalls.report_rows(uow, recall.id))
    if report is not None:
        if report.suffix.lower() == ".pdf":
            data = use_case(
                application, as_json, lambda uow: chain.recalls.report_pdf(uow, recall.id)
            )
            report.write_bytes(data)
        else:
            text = use_case(
                application, as_json, lambda uow: chain.recalls.report_csv(uow, recall.id)
            )
            report.write_text(text, encoding="utf-8")
    if as_json:
        emit_json({"recall_id": recall.id, "lot": lot, "units": len(rows), "rows": rows})
    else:
        console.print(f"recall {recall.id}: {len(rows)} packs marked recalled")
