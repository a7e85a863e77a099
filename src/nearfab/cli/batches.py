"""`nearfab batches`: the batch-record controls from the command line: the master-file steps of
a batch, signing a step, a second person's verification, the QP's audit-trail review, the
QPs assigned to certify a master file (quality-and-release.md), and abandoning a batch whose
machine will never report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    Password,
    Totp,
    User,
    app_as,
    console,
    done,
    emit_json,
    fail,
    local_actor,
    signed_in,
    state,
    use_case,
)
from nearfab.common.canonical import to_jsonable
from nearfab.common.errors import ValidationFailed

if TYPE_CHECKING:
    from nearfab.api.records import Signing

app = typer.Typer(no_args_is_help=True, help="Batch-record steps, verification, audit review.")


def _when(value: Any) -> str:
    return str(value or "—").replace("T", " ").replace("+00:00", " UTC")


def _signing(user: str, password: str, meaning: str, totp: str | None) -> Signing:
    # the user ID is typed again as the first signature component
    return {"password": password, "meaning": meaning, "username": user, "totp": totp}


@app.command("steps")
def steps(
    ctx: typer.Context,
    batch_id: str,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The batch's master-file steps: status, who performed and verified each (printed name,
    time, meaning), the audit-trail review and what blocks release."""
    from nearfab.api.records import record_controls_view

    application = state(ctx, data_dir).app()
    view = use_case(
        application,
        as_json,
        lambda uow: record_controls_view(application, uow, local_actor(), batch_id),
    )
    if as_json:
        emit_json(view)
        return
    table = Table("#", "step", "kind", "status", "performed by", "entry", "verified by")
    for s in view["steps"]:
        done = s["performed"]
        checked = s["verified"]
        table.add_row(
            str(s["position"]),
            escape(f"{s['code']}: {s['title']}"),
            ("manual" if s["manual"] else "machine") + (", critical" if s["critical"] else ""),
            s["status"],
            escape(f"{done['by']}, {_when(done['at'])}, “{done['meaning']}”") if done else "—",
            escape(", ".join(f"{k}={v}" for k, v in (done["entry"] or {}).items())) if done else "",
            escape(f"{checked['by']}, {_when(checked['at'])}, “{checked['meaning']}”")
            if checked
            else "—",
        )
    console.print(table)
    review = view["audit_trail_review"]
    if review:
        state_text = "current" if review["current"] else f"{review['rows_since']} row(s) since"
        console.print(
            f"audit trail reviewed by {escape(review['reviewed_by'])} at "
            f"{_when(review['reviewed_at'])} ({review['rows']} rows, {state_text})"
        )
    else:
        console.print("audit trail not reviewed")
    for b in view["release_blockers"]:
        console.print(f"[yellow]release blocked[/] ({b['code']}): {escape(b['message'])}")


def _entries(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValidationFailed(f"--entry takes name=value, not {item!r}", field="entry")
        out[name.strip()] = value
    return out


@app.command("sign-step")
def sign_step(
    ctx: typer.Context,
    batch_id: str,
    code: str,
    user: User,
    password: Password,
    entry: Annotated[
        list[str] | None,
        typer.Option("--entry", help="An entry value, name=value (repeat for each field)."),
    ] = None,
    meaning: Annotated[str, typer.Option(help="What the signature means.")] = "performed by",
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Perform a manual step: its entry values and your e-signature ("performed by")."""
    from nearfab.api.records import signoff_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    try:
        values = _entries(entry or [])
    except ValidationFailed as exc:
        fail(exc, as_json)
    signoff = use_case(
        application,
        as_json,
        lambda uow: application.quality.records.sign_step(
            uow, actor, batch_id, code, entry=values, **_signing(user, password, meaning, totp)
        ),
    )
    out = signoff_dict(signoff)
    done(out, as_json, f"step {code} of batch {batch_id} signed by {escape(out['performed_by'])}")


@app.command("verify-step")
def verify_step(
    ctx: typer.Context,
    batch_id: str,
    code: str,
    user: User,
    password: Password,
    meaning: Annotated[str, typer.Option(help="What the signature means.")] = "verified by",
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Verify a critical entry as a second person ("verified by")."""
    from nearfab.api.records import signoff_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    signoff = use_case(
        application,
        as_json,
        lambda uow: application.quality.records.verify_step(
            uow, actor, batch_id, code, **_signing(user, password, meaning, totp)
        ),
    )
    out = signoff_dict(signoff)
    done(out, as_json, f"step {code} of batch {batch_id} verified by {escape(out['verified_by'])}")


@app.command("open-deviation")
def open_deviation(
    ctx: typer.Context,
    batch_id: str,
    description: Annotated[str, typer.Option(help="What happened.")],
    user: User,
    password: Password,
    step: Annotated[
        str | None, typer.Option(help="The master-file step it lets be skipped.")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Open a deviation on a batch (naming a step lets later steps be signed before it)."""
    application, actor = app_as(ctx, data_dir, user, password, as_json)
    dev = use_case(
        application,
        as_json,
        lambda uow: application.quality.records.open_deviation(
            uow, actor, batch_id, description=description, step=step
        ),
    )
    out = {"id": dev.id, "batch_id": dev.batch_id, "step": dev.step_code, "status": dev.status}
    done(out, as_json, f"deviation {dev.id} opened on batch {batch_id}")


@app.command("review-audit-trail")
def review_audit_trail(
    ctx: typer.Context,
    batch_id: str,
    user: User,
    password: Password,
    meaning: Annotated[str, typer.Option(help="What the signature means.")] = (
        "audit trail reviewed"
    ),
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """As a QP, sign that the batch's audit trail was reviewed (bound to its rows now)."""
    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    review = use_case(
        application,
        as_json,
        lambda uow: application.quality.records.review_audit_trail(
            uow, actor, batch_id, **_signing(user, password, meaning, totp)
        ),
    )
    out = {
        "id": review.id,
        "batch_id": review.batch_id,
        "reviewed_by": review.reviewed_by_name,
        "reviewed_at": review.reviewed_at.isoformat(),
        "rows": review.row_count,
        "trail_hash": review.trail_hash,
        "signature_id": review.signature_id,
    }
    done(
        out,
        as_json,
        f"audit trail of batch {batch_id} reviewed: {review.row_count} rows, "
        f"hash {review.trail_hash[:16]}… (signature {review.signature_id})",
    )


@app.command("followup-result")
def followup_result(
    ctx: typer.Context,
    batch_id: str,
    test: Annotated[str, typer.Argument(help="The release test whose result was pending.")],
    user: User,
    password: Password,
    outcome: Annotated[str, typer.Option(help="pass or fail.")],
    detail: Annotated[str, typer.Option(help="The result as the laboratory reported it.")],
    reason: Annotated[
        str | None, typer.Option(help="Makes this entry a correction of the one before.")
    ] = None,
    meaning: Annotated[str, typer.Option(help="What the signature means.")] = ("result entered by"),
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """As QA or a QP, enter (e-signed) a result that was pending at release; a fail opens an
    investigation and notifies the treating prescriber. A second entry needs --reason."""
    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    fu = use_case(
        application,
        as_json,
        lambda uow: application.quality.followups.enter_result(
            uow,
            actor,
            batch_id,
            test,
            outcome=outcome,
            detail=detail,
            reason=reason,
            **_signing(user, password, meaning, totp),
        ),
    )
    fu_id = fu.id
    with application.uow() as uow:
        out = application.quality.followups.view(uow, fu_id)
    done(
        out,
        as_json,
        f"{escape(out['title'])} of batch {out['batch_number']}: {out['status']}"
        + (f"; investigation {out['deviation_id']} open" if out["deviation_id"] else ""),
    )


@app.command("request-exceptional-release")
def request_exceptional_release(
    ctx: typer.Context,
    batch_id: str,
    user: User,
    password: Password,
    circumstances: Annotated[str, typer.Option(help="The exceptional circumstances.")],
    meaning: Annotated[str, typer.Option(help="What the signature means.")] = (
        "requested by the treating physician (exceptional release)"
    ),
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """As the treating physician, ask (e-signed) for the exceptional release of an
    out-of-specification batch; the QP then certifies it with `certify-exceptional`."""
    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    row = use_case(
        application,
        as_json,
        lambda uow: application.quality.exceptional.request(
            uow,
            actor,
            batch_id,
            circumstances=circumstances,
            **_signing(user, password, meaning, totp),
        ),
    )
    with application.uow() as uow:
        found = application.quality.exceptional.for_batch(uow, row.batch_id)
        assert found is not None
        out = application.quality.exceptional.view(uow, found)
    done(
        out,
        as_json,
        f"exceptional release of batch {batch_id} requested (signature "
        f"{out['physician_signature_id']}); out of specification: "
        f"{', '.join(out['out_of_specification'])}",
    )


@app.command("certify-exceptional")
def certify_exceptional(
    ctx: typer.Context,
    batch_id: str,
    user: User,
    password: Password,
    reason: Annotated[str, typer.Option(help="Why the QP releases it.")],
    meaning: Annotated[str, typer.Option(help="What the signature means.")] = (
        "QP certification: exceptional release"
    ),
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """As the QP, release an out-of-specification batch exceptionally, after the treating
    physician's signed request (refused without it)."""
    from nearfab.readmodels import review_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    review = use_case(
        application,
        as_json,
        lambda uow: application.quality.decide(
            uow,
            actor,
            batch_id,
            decision="release",
            exceptional=True,
            reason=reason,
            **_signing(user, password, meaning, totp),
        ),
    )
    with application.uow() as uow:
        out = review_dict(application, uow, review)
    done(out, as_json, f"batch {batch_id} released exceptionally (signature {out['signature_id']})")


@app.command("assign-qp")
def assign_qp(
    ctx: typer.Context,
    master_file_code: str,
    qp: Annotated[str, typer.Argument(help="The QP's username or user id.")],
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")],
    unassign: Annotated[bool, typer.Option("--unassign", help="End the assignment.")] = False,
    user: Annotated[
        str | None, typer.Option("--user", help="Administrator's username (else the local user).")
    ] = None,
    password: Annotated[str | None, typer.Option("--password")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Assign (or --unassign) a QP to certify the batches of a master file."""
    from nearfab.api.records import qp_dict

    application = state(ctx, data_dir).app()
    actor = signed_in(application, user, password or "", as_json) if user else local_actor()
    service = application.master_files
    change = service.unassign_qp if unassign else service.assign_qp
    row = use_case(
        application,
        as_json,
        lambda uow: change(uow, actor, master_file_code, qp, reason=reason),
    )
    if not unassign:  # a request: applies when another control-site admin approves it
        from nearfab.identity import ApprovalRequest, approval_dict

        assert isinstance(row, ApprovalRequest)
        asked = to_jsonable(approval_dict(row))
        done(
            asked,
            as_json,
            f"{escape(qp)} for {escape(master_file_code)}: requested ({asked['id']}); another "
            "administrator of the control site approves with `nearfab users approve`",
        )
        return
    out = qp_dict(row)
    done(out, as_json, f"{escape(qp)} for {escape(master_file_code)}: no longer assigned")


@app.command("qps")
def qps(
    ctx: typer.Context,
    master_file_code: str,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """The QPs assigned to a master file (past assignments too)."""
    from nearfab.api.records import qp_dict

    application = state(ctx, data_dir).app()
    rows = use_case(
        application,
        as_json,
        lambda uow: [qp_dict(r) for r in application.master_files.qps(uow, master_file_code)],
    )
    if as_json:
        emit_json(rows)
        return
    table = Table("user", "active", "assigned", "by", "reason")
    for r in rows:
        table.add_row(
            r["user_id"],
            "yes" if r["active"] else "no",
            _when(r["assigned_at"]),
            r["assigned_by"],
            escape(r["reason"]),
        )
    console.print(table)


@app.command("abandon")
def abandon(
    ctx: typer.Context,
    batch_id: str,
    reason: Annotated[
        str, typer.Option(help="Why the batch is abandoned (required; in the audit trail).")
    ],
    user: Annotated[
        str | None,
        typer.Option("--user", help="Your username (else the local user holding the data)."),
    ] = None,
    password: Annotated[str | None, typer.Option("--password")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Close a batch whose machine will never report (a crashed worker, a dead machine):
    failed with the reason on its record, a deviation opened, the machine freed, audited."""
    application = state(ctx, data_dir).app()
    actor = signed_in(application, user, password or "", as_json) if user else local_actor()
    batch = use_case(
        application,
        as_json,
        lambda uow: application.production.abandon(uow, actor, batch_id, reason=reason),
    )
    out = {
        "batch_id": batch.id,
        "batch_number": batch.batch_number,
        "status": batch.status,
        "failure_reason": batch.failure_reason,
        "machine_id": batch.machine_id,
    }
    done(out, as_json, f"batch {batch.batch_number} abandoned: {escape(reason)}")


def _results(values: list[str]) -> dict[str, Any]:
    from nearfab.quality.labresults import typed_value

    out: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValidationFailed(f"--result takes key=value, not {item!r}", field="lab_results")
        out[key.strip()] = typed_value(value)
    return out


@app.command("lab-result")
def lab_result(
    ctx: typer.Context,
    batch_id: str,
    user: User,
    password: Password,
    result: Annotated[
        list[str],
        typer.Option(
            "--result",
            help='key=value, once per result; the value as JSON where it is (0.5, {"a": 0.9}),'
            " else as text (negative). `nearfab batches lab-results` lists the keys.",
        ),
    ],
    method: Annotated[str, typer.Option(help="The method or reference of the testing.")],
    reason: Annotated[
        str | None, typer.Option(help="Makes this entry a correction of results entered before.")
    ] = None,
    meaning: Annotated[str, typer.Option(help="What the signature means.")] = "results entered by",
    totp: Totp = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """As the analyst (QA or a QP), enter e-signed laboratory results of a batch before the
    QP's decision; the release proposal is evaluated again with them. A result already entered
    needs --reason (a correction)."""
    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    try:
        results = _results(result)
    except ValidationFailed as exc:
        fail(exc, as_json)
    use_case(
        application,
        as_json,
        lambda uow: application.quality.lab_results.enter(
            uow,
            actor,
            batch_id,
            results=results,
            method=method,
            reason=reason,
            **_signing(user, password, meaning, totp),
        ),
    )
    _show_lab_results(application, actor, batch_id, as_json)


@app.command("lab-results")
def lab_results(
    ctx: typer.Context, batch_id: str, as_json: JsonOpt = False, data_dir: DataDir = None
) -> None:
    """The batch's laboratory results: the keys its product takes, every signed result
    (corrections too) and the release proposal they feed."""
    application = state(ctx, data_dir).app()
    _show_lab_results(application, local_actor(), batch_id, as_json)


def _show_lab_results(application: Any, actor: Any, batch_id: str, as_json: bool) -> None:
    from nearfab.api.release import lab_results_view

    out = to_jsonable(
        use_case(
            application,
            as_json,
            lambda uow: lab_results_view(application, uow, actor, batch_id),
        )
    )
    if as_json:
        emit_json(out)
        return
    table = Table("key", "value", "method", "entered by", "signature", "in force")
    for r in out["results"]:
        table.add_row(
            escape(r["key"]),
            escape(str(r["value"])),
            escape(r["method"]),
            escape(f"{r['entered_by_name']}, {_when(r['entered_at'])}")
            + (escape(f"; correction: {r['reason']}") if r["supersedes_id"] else ""),
            "valid" if r["signature_valid"] else "INVALID",
            "yes" if r["in_force"] else "superseded",
        )
    console.print(table)
    review = out["review"]
    if review:
        console.print(f"release proposal: {review['proposed_decision']}")
        for c in review["checks"]:
            mark = {True: "pass", False: "FAIL", None: "—"}[c["passed"]]
            console.print(f"  {mark} {escape(c['detail'])}")
