"""CLI: a dose adjusted from the patient's observations (`nearfab order observations`,
`propose`, `proposals`, `accept`, `reject`; docs/dose-adjustment.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


def _proposal_text(p: dict[str, Any]) -> str:
    w = p["working"]
    basis = ", ".join(
        f"{k} {w[k]:g}" for k in sorted(w) if isinstance(w[k], int | float) and k != "dose"
    )
    return (
        f"proposal {p['id']} ({p['status']}): {p['current_value']:g} {p['current_unit']} -> "
        f"{p['proposed_value']:g} {p['proposed_unit']}" + (f" [{basis}]" if basis else "")
    )


def observations(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(help="The order whose patient was measured.")],
    user: UserOpt,
    password: PasswordOpt,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="A FHIR Observation or Bundle (JSON); none: list them."),
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record the patient's observations (weight, height, a drug level) from a FHIR file, or
    list them; a dose rule's proposal, if any, is shown (it changes no dose by itself)."""
    from nearfab.orders.dose_schemas import ObservationsRecordedOut
    from nearfab.orders.doseadjust import observation_dict, proposal_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    adjust = application.dose_adjustment
    if file is None:
        rows = use_case(application, as_json, lambda uow: adjust.observations(uow, actor, order_id))
        if as_json:
            emit_json(rows)
            return
        for r in rows:
            console.print(f"{r['effective_at']}  {r['code']}  {r['value']:g} {r['unit']}")
        return
    document = read_json_file(file, as_json)
    recorded = use_case(
        application,
        as_json,
        lambda uow: adjust.record_observations(uow, actor, order_id, document),
    )
    out = ObservationsRecordedOut.model_validate(
        {
            "observations": [observation_dict(r) for r in recorded.observations],
            "proposal": proposal_dict(recorded.proposal) if recorded.proposal else None,
            "note": recorded.note,
        }
    ).model_dump()
    text = f"{len(out['observations'])} observation(s) recorded; " + (
        _proposal_text(out["proposal"]) if out["proposal"] else f"no proposal: {out['note']}"
    )
    done(out, as_json, text)


def propose(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument()],
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The dose the master file's rule gives now from the latest observations."""
    from nearfab.orders.dose_schemas import DoseProposalOut
    from nearfab.orders.doseadjust import proposal_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    row = use_case(
        application, as_json, lambda uow: application.dose_adjustment.propose(uow, actor, order_id)
    )
    out = DoseProposalOut.model_validate(proposal_dict(row)).model_dump()
    done(out, as_json, _proposal_text(out))


def proposals(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument()],
    user: UserOpt,
    password: PasswordOpt,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The order's dose proposals, newest first."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)
    rows = use_case(
        application,
        as_json,
        lambda uow: application.dose_adjustment.proposals(uow, actor, order_id),
    )
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        console.print(_proposal_text(r))


def _decide(
    ctx: typer.Context,
    proposal_id: str,
    user: str,
    password: str,
    reason: str | None,
    accept: bool,
    as_json: bool,
    data_dir: Path | None,
) -> None:
    from nearfab.orders.dose_schemas import DoseProposalOut
    from nearfab.orders.doseadjust import proposal_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    data = {
        "username": user,
        "password": password,
        "meaning": "dose accepted" if accept else "dose rejected",
        "reason": reason,
    }
    adjust = application.dose_adjustment
    step = adjust.accept if accept else adjust.reject
    row = use_case(application, as_json, lambda uow: step(uow, actor, proposal_id, data))
    out = DoseProposalOut.model_validate(proposal_dict(row)).model_dump()
    extra = f"; new order version {out['new_order_id']}" if out["new_order_id"] else ""
    done(out, as_json, _proposal_text(out) + extra)


def accept(
    ctx: typer.Context,
    proposal_id: Annotated[str, typer.Argument()],
    user: UserOpt,
    password: PasswordOpt,
    reason: Annotated[str | None, typer.Option(help="Why (optional).")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Accept a proposed dose with your e-signature: a new version of the order carries it."""
    _decide(ctx, proposal_id, user, password, reason, True, as_json, data_dir)


def reject(
    ctx: typer.Context,
    proposal_id: Annotated[str, typer.Argument()],
    user: UserOpt,
    password: PasswordOpt,
    reason: Annotated[str, typer.Option(help="Why the dose is not taken.")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Reject a proposed dose with your e-signature and the reason; the order is unchanged."""
    _decide(ctx, proposal_id, user, password, reason, False, as_json, data_dir)


def register(order_app: typer.Typer) -> None:
    """Add the commands to `nearfab order`."""
    order_app.command("observations")(observations)
    order_app.command("propose")(propose)
    order_app.command("proposals")(proposals)
    order_app.command("accept")(accept)
    order_app.command("reject")(reject)
