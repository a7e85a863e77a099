"""CLI: adverse events traced (`nearfab vigilance report|trace`; docs/pharmacovigilance.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    PasswordOpt,
    UserOpt,
    app_as,
    console,
    done,
    emit_json,
    read_json_file,
    use_case,
)

app = typer.Typer(no_args_is_help=True, help="Adverse events traced to every patient exposed.")


@app.command("report")
def report(
    ctx: typer.Context,
    user: UserOpt,
    password: PasswordOpt,
    file: Annotated[
        Path | None, typer.Option("--file", help="A FHIR R4 AdverseEvent (JSON).")
    ] = None,
    scan: Annotated[str | None, typer.Option(help="The pack (scan or id), without --file.")] = None,
    description: Annotated[str | None, typer.Option(help="What happened.")] = None,
    seriousness: Annotated[str | None, typer.Option(help="serious or non-serious")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Report an adverse event against a pack (a FHIR AdverseEvent file, or the form's fields)."""
    from nearfab.vigilance.schemas import AdverseEventOut
    from nearfab.vigilance.services import event_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    if file is not None:
        data = read_json_file(file, as_json)
    else:
        data = {"scan": scan, "description": description, "seriousness": seriousness}
    row = use_case(application, as_json, lambda uow: application.vigilance.report(uow, actor, data))
    out = AdverseEventOut.model_validate(event_dict(row)).model_dump()
    done(out, as_json, f"adverse event {out['id']} recorded against pack {out['unit_id']}")


@app.command("trace")
def trace(
    ctx: typer.Context,
    event_id: Annotated[str, typer.Argument(help="The adverse event.")],
    user: UserOpt,
    password: PasswordOpt,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the packs as CSV.")] = None,
    pdf_out: Annotated[Path | None, typer.Option("--pdf", help="Write the trace as PDF.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The pack's batch, machine, site and lots, and every pack of those lots and its patient."""
    from nearfab.vigilance.schemas import AdverseEventTraceOut

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    vigilance = application.vigilance
    found = AdverseEventTraceOut.model_validate(
        use_case(application, as_json, lambda uow: vigilance.trace(uow, actor, event_id))
    ).model_dump()
    if csv_out is not None:
        text = use_case(application, as_json, lambda uow: vigilance.trace_csv(uow, actor, event_id))
        csv_out.write_text(text, encoding="utf-8")
    if pdf_out is not None:
        pdf = use_case(application, as_json, lambda uow: vigilance.trace_pdf(uow, actor, event_id))
        pdf_out.write_bytes(pdf)
    if as_json:
        emit_json(found)
        return
    console.print(
        f"pack {found['pack']['serial']} (patient {found['patient_ref']}), batch "
        f"{found['batch_record']['batch_number']}, machine {found['machine']['name']}, site "
        f"{found['site']['code']}, lot(s) "
        + ", ".join(lot["lot_number"] for lot in found["material_lots"])
    )
    for p in found["packs"]:
        console.print(
            f"  {p['relation']:<20} {p['serial']}  {p['batch_number']}  {p['patient_ref']}  "
            f"{'dispensed ' + p['dispensed_at'] if p['exposed'] else p['status']}"
        )
    console.print(
        "other patients exposed: " + (", ".join(found["other_patients_exposed"]) or "none")
    )
