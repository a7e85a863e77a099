"""`nearfab` command line. Command names and options are a contract other checks rely on."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nearfab.cli import simulate
from nearfab.cli.audit import audit_app
from nearfab.cli.batches import app as batches_app
from nearfab.cli.builds import app as builds_app
from nearfab.cli.collections import collected as collected_command
from nearfab.cli.collections import pre_collection as pre_collection_command
from nearfab.cli.comparability import app as comparability_app
from nearfab.cli.context import (
    CliState,
    DataDir,
    JsonOpt,
    app_as,
    console,
    emit_json,
    err_console,
    fail,
    local_actor,
    state,
    use_case,
)
from nearfab.cli.custody import custody_app, recall_app, trace_app
from nearfab.cli.doses import register as register_dose_commands
from nearfab.cli.monitoring import alarms_app, models_app, telemetry_app
from nearfab.cli.mspc import app as mspc_app
from nearfab.cli.node import app as node_app
from nearfab.cli.plan import collection as collection_command
from nearfab.cli.plan import plan as plan_command
from nearfab.cli.qa import app as qa_app
from nearfab.cli.users import app as users_app
from nearfab.cli.vigilance import app as vigilance_app
from nearfab.cli.worklist import worklist as worklist_command
from nearfab.common.errors import DomainError, ValidationFailed
from nearfab.common.quantity import Quantity
from nearfab.config import Settings

app = typer.Typer(no_args_is_help=True, help="nearfab: point-of-care manufacturing network.")
order_app = typer.Typer(no_args_is_help=True, help="Prescriptions and orders.")
network_app = typer.Typer(no_args_is_help=True, help="Sites, machines, and running the network.")
release_app = typer.Typer(no_args_is_help=True, help="QP release queue and decisions.")
batch_app = typer.Typer(no_args_is_help=True, help="Electronic batch records.")
app.add_typer(order_app, name="order")
register_dose_commands(order_app)  # observations, propose, accept... (cli/doses.py)
app.add_typer(network_app, name="network")
app.add_typer(release_app, name="release")
app.add_typer(batch_app, name="batch")
app.add_typer(batches_app, name="batches")
app.add_typer(mspc_app, name="mspc")
app.add_typer(telemetry_app, name="telemetry")
app.add_typer(models_app, name="models")
app.add_typer(alarms_app, name="alarms")
app.command("plan")(plan_command)
app.command("worklist")(worklist_command)  # the person's steps and verifications due now
app.command("collection")(collection_command)
app.command("pre-collection")(pre_collection_command)
app.command("collected")(collected_command)
app.add_typer(simulate.app, name="simulate")
app.add_typer(custody_app, name="custody")
app.add_typer(trace_app, name="trace")
app.add_typer(recall_app, name="recall")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(comparability_app, name="comparability")
app.add_typer(vigilance_app, name="vigilance")
app.add_typer(qa_app, name="qa")
app.add_typer(builds_app, name="builds")
app.add_typer(node_app, name="node")

SpeedOpt = Annotated[
    float, typer.Option(help="How many times faster than a real printer the simulated ones work.")
]


@app.callback()
def main(ctx: typer.Context, data_dir: DataDir = None) -> None:
    ctx.obj = CliState(data_dir=data_dir)


# --- set-up ----------------------------------------------------------------------------------
@app.command()
def init(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option("--demo", help="Seed the demo network.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Create (or upgrade) the database; with --demo, seed sites, printers and users."""
    st = state(ctx, data_dir)
    application = st.app()
    console.print(f"database ready: {application.settings.resolved_database_url()}")
    if demo:
        from nearfab.demo import is_seeded, seed

        if is_seeded(application):
            console.print("demo network already present; nothing seeded")
            return
        try:
            result = seed(application, application.settings.demo_password)
        except RuntimeError as exc:
            err_console.print(f"[bold red]not seeded[/]: {exc}")
            raise typer.Exit(code=2) from None
        console.print(f"demo network seeded; users: {', '.join(result.usernames)}")
        if result.generated:
            console.print(f"generated password for every demo user: [bold]{result.password}[/]")
        else:
            console.print("password for every demo user: the value of NEARFAB_DEMO_PASSWORD")


@app.command()
def demo(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default 8000 or $PORT).")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    speed: SpeedOpt = 60.0,
    cell_story: Annotated[
        bool,
        typer.Option(
            "--cell-story/--no-cell-story",
            help="On a new database, play the cell therapy story (two patients of the cell "
            "product, on a clock started days back) before serving.",
        ),
    ] = True,
    nodes: Annotated[
        bool,
        typer.Option(
            "--nodes",
            help="Run the network as four nodes on this machine (the control site and three "
            "sites, each its own database and web server on the next ports), replicating "
            "through --broker (docs/replication.md).",
        ),
    ] = False,
    broker: Annotated[
        str | None,
        typer.Option(
            help="With --nodes: the MQTT broker the nodes replicate through "
            "(default: NEARFAB_REPLICATION_URL, else mqtt://127.0.0.1:1883)."
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Seed the demo network if needed and serve it with simulated machines and prescriptions."""
    from nearfab.web.server import serve_demo

    st = state(ctx, data_dir)
    settings = st.settings()
    port = port or int(os.environ.get("PORT", "8000"))
    if nodes:
        _demo_nodes(settings, host=host, port=port, speed=speed, broker=broker)
        return
    if cell_story:
        settings = _seed_with_cell_story(settings)
    serve_demo(settings, host=host, port=port, speed=speed)


def _demo_nodes(
    settings: Settings, *, host: str, port: int, speed: float, broker: str | None
) -> None:
    """`demo --nodes`: seed once, start the four node processes, show where they answer, and
    stop them all on Ctrl-C (or when one of them exits)."""
    import signal
    import time

    from nearfab.demo_nodes import (
        DEFAULT_BROKER,
        NodeProcesses,
        answers,
        plan,
        prepare,
        provision,
    )
    from nearfab.telemetry import BrokerAddress

    url = broker or settings.replication_url or DEFAULT_BROKER
    try:
        BrokerAddress.parse(url)
    except ValueError as exc:
        err_console.print(f"[bold red]--broker[/]: {exc}")
        raise typer.Exit(code=2) from None
    nodes = plan(settings, port)
    try:
        generated = prepare(settings, nodes, console.print)
    except RuntimeError as exc:
        err_console.print(f"[bold red]not started[/]: {exc}")
        raise typer.Exit(code=2) from None
    if generated:
        console.print(f"generated password for every demo user: [bold]{generated}[/]")
    try:
        provision(nodes, url)
    except ConnectionError as exc:  # the nodes would work, but none would reach another
        err_console.print(f"[bold red]not started[/]: {exc} (start Mosquitto, or give --broker)")
        raise typer.Exit(code=2) from None
    taken = [str(n.port) for n in nodes if answers(n.url)]
    if taken:  # another server there would be taken for a node that started
        err_console.print(f"[bold red]not started[/]: ports {', '.join(taken)} already serve")
        raise typer.Exit(code=2)
    running = NodeProcesses(nodes, host=host, speed=speed, broker=url)
    console.print(f"starting {len(nodes)} nodes, replicating through {url} ...")

    def stop_on(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM, SIGHUP: stop the nodes as Ctrl-C does

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on)
    try:
        running.start(generated or settings.demo_password)
        ready = running.wait_ready()
        table = Table(title="nearfab demo: one control node and three site nodes")
        for column in ("node", "site", "web", "log"):
            table.add_column(column)
        for node in nodes:
            kind = "control" if node is nodes[0] else "site"
            shown = node.url if node.site_code in ready else "[red]not answering[/]"
            table.add_row(kind, node.site_code, shown, str(node.folder / "node.log"))
        console.print(table)
        if len(ready) < len(nodes):
            err_console.print("[bold red]not every node started[/]: read its log")
            raise typer.Exit(code=1)
        console.print("each node: `nearfab node inbox status --data-dir <folder>`; Ctrl-C stops")
        while not running.exited():
            time.sleep(1)
        err_console.print(f"[bold red]a node stopped[/]: {running.exited()}; stopping the rest")
        raise typer.Exit(code=1)
    except KeyboardInterrupt:
        console.print("stopping the nodes")
    finally:
        running.stop()


def _seed_with_cell_story(settings: Settings) -> Settings:
    """Seed a new database with the demo network and its cell story (nearfab.demo_cell);
    the settings to serve with (the generated password, when one was made)."""
    from nearfab.demo_cell import seed_with_cell_story
    from nearfab.identity import KeyMismatch

    try:
        result = seed_with_cell_story(settings, settings.demo_password)
    except (KeyMismatch, RuntimeError) as exc:
        err_console.print(f"[bold red]not seeded[/]: {exc}")
        raise typer.Exit(code=2) from None
    if result is None:  # seeded before: served as it is
        return settings
    console.print(f"demo network seeded in {settings.data_dir}, with the cell therapy story")
    console.print(f"users: {', '.join(result.usernames)}")
    if not result.generated:
        return settings
    console.print(f"generated password for every demo user: [bold]{result.password}[/]")
    return settings.model_copy(update={"demo_password": result.password})


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port (default 8000 or $PORT).")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    data_dir: DataDir = None,
) -> None:
    """Serve the web pages and the API without the demo's prescription stream."""
    from nearfab.web.server import serve

    st = state(ctx, data_dir)
    serve(st.settings(), host=host, port=port or int(os.environ.get("PORT", "8000")))


# --- orders ----------------------------------------------------------------------------------
@order_app.command("submit")
def order_submit(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="FHIR R4 MedicationRequest or Bundle (JSON).")],
    site: Annotated[
        str | None,
        typer.Option(
            help="The ordering site (id or code); else the prescriber's organisation in the "
            "FHIR resource. Required when the resource names none."
        ),
    ] = None,
    resubmit_of: Annotated[
        str | None,
        typer.Option(help="The cancelled order this prescription is submitted again for."),
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Take a prescription in: validated, mapped, designed; all or nothing. Every order belongs
    to a site; the same prescription (identifier and patient) is taken once."""
    application = state(ctx, data_dir).app()
    limit = application.settings.prescription_max_body_bytes
    try:
        with file.open("rb") as fh:
            document = fh.read(limit + 1)  # never more than the limit into memory
    except OSError as exc:
        fail(ValidationFailed(f"cannot read {file}: {exc.strerror}", field="FILE"), as_json)
    if len(document) > limit:
        fail(
            ValidationFailed(
                f"{file}: a prescription may hold at most {limit} bytes; this one is larger",
                field="FILE",
            ),
            as_json,
        )
    orders = use_case(
        application,
        as_json,
        lambda uow: application.orders.submit(
            uow, local_actor(), document, site_id=site, resubmit_of=resubmit_of
        ),
    )
    rows = [
        {
            "id": o.id,
            "status": o.status,
            "site_id": o.site_id,
            "medication": o.medication,
            "dose_value": o.dose_value,
            "dose_unit": o.dose_unit,
            "units": o.units,
            "stop_reason": o.stop_reason,
        }
        for o in orders
    ]
    if as_json:
        emit_json({"orders": rows})
        return
    for r in rows:
        extra = f" — stopped: {r['stop_reason']}" if r["stop_reason"] else ""
        console.print(
            f"order {r['id']}: {r['status']} ({r['medication']} {_dose(r)} × {r['units']}){extra}"
        )


@order_app.command("show")
def order_show(
    ctx: typer.Context,
    order_id: str,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """An order with its jobs, batches, release, packs and timeline."""
    from nearfab.readmodels import order_view

    application = state(ctx, data_dir).app()
    view = use_case(
        application, as_json, lambda uow: order_view(application, uow, local_actor(), order_id)
    )
    if as_json:
        emit_json(view)
        return
    console.print(
        f"[bold]{view['id']}[/] {view['status']} — {view['medication']} "
        f"{_dose(view)} × {view['units']} for {view['patient_ref']}"
    )
    for entry in view["timeline"]:
        console.print(
            f"  {entry['at']}  {entry['actor']}: {entry['action']} "
            f"{entry['entity_type']} {entry['new'] or ''} {entry['reason'] or ''}"
        )


@order_app.command("list")
def order_list(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    """Every order with its status, medication, dose and units."""
    application = state(ctx, data_dir).app()
    with application.uow() as uow:
        rows = [
            {
                "id": o.id,
                "status": o.status,
                "medication": o.medication,
                "dose_value": o.dose_value,
                "dose_unit": o.dose_unit,
                "units": o.units,
            }
            for o in application.orders.list_orders(uow)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("order", "status", "medication", "dose", "units")
    for r in rows:
        table.add_row(
            str(r["id"]),
            str(r["status"]),
            str(r["medication"]),
            _dose(r),
            str(r["units"]),
        )
    console.print(table)


def _dose(row: dict[str, Any]) -> str:
    """An order's dose as printed: its value and the unit it is dosed in ("5 mg")."""
    return str(Quantity(float(row["dose_value"]), str(row["dose_unit"])))


# order changes that take only a reason: (command, what it does, the service call)
_ORDER_CHANGES: list[tuple[str, str, Callable[[Any, Any, str, str], Any]]] = [
    (
        "cancel",
        "Cancel an order that has not started (a scheduled one together with its job).",
        lambda app, uow, oid, why: app.scheduling.cancel_order(uow, local_actor(), oid, reason=why),
    ),
    (
        "unschedule",
        "Take a scheduled order off its machine before it starts.",
        lambda app, uow, oid, why: app.scheduling.unschedule(uow, local_actor(), oid, reason=why),
    ),
    (
        "move-forward",
        "Make the order urgent and replan the network around it.",
        lambda app, uow, oid, why: app.scheduling.move_forward(uow, local_actor(), oid, reason=why),
    ),
    (
        "replan",
        "Send a failed order back to planning.",
        lambda app, uow, oid, why: app.orders.replan(uow, local_actor(), oid, reason=why),
    ),
]


def _order_change_command(
    doc: str, change: Callable[[Any, Any, str, str], Any]
) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        order_id: str,
        reason: Annotated[str, typer.Option(help="Why; kept in the audit trail.")],
        as_json: JsonOpt = False,
        data_dir: DataDir = None,
    ) -> None:
        application = state(ctx, data_dir).app()
        changed = use_case(
            application, as_json, lambda uow: change(application, uow, order_id, reason)
        )
        if as_json:
            emit_json({"id": changed.id, "status": changed.status})
        else:
            console.print(f"{changed.id}: {changed.status}")

    command.__doc__ = doc
    return command


for _name, _doc, _change in _ORDER_CHANGES:
    order_app.command(_name)(_order_change_command(_doc, _change))


# --- network ---------------------------------------------------------------------------------
def _parse_fault(text: str) -> tuple[str, Any]:
    from nearfab.production import Fault

    parts = text.split(":")
    if len(parts) < 2:
        raise ValidationFailed("--fault is MACHINE_ID:KIND[:SEVERITY[:FROM_UNIT]]", field="--fault")
    try:
        severity = float(parts[2]) if len(parts) > 2 else 0.3
        from_unit = int(parts[3]) if len(parts) > 3 else 0
    except ValueError:
        raise ValidationFailed(
            "fault severity is a number and FROM_UNIT an integer", field="--fault"
        ) from None
    return parts[0], Fault(kind=parts[1], severity=severity, from_unit=from_unit)


@network_app.command("run")
def network_run(
    ctx: typer.Context,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Run until only people can move things on.")
    ] = False,
    speed: SpeedOpt = 3600.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Inject a fault: MACHINE_ID:KIND[:SEVERITY[:FROM_UNIT]] (KIND: one of the "
            "fault kinds of the machine's product family)."
        ),
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Advance the simulated machines in accelerated time."""
    application = state(ctx, data_dir).app(machine_speed=speed)
    application.start_telemetry()  # networked mode only (NEARFAB_MQTT_URL)
    try:
        for spec in fault or []:
            machine_id, f = _parse_fault(spec)
            with application.uow() as uow:
                machine = application.network.get_machine(uow, machine_id)
            application.fleet.inject_fault(machine, f)
        if until_idle:
            summary = application.runner.run_until_idle()
        else:
            summary = application.runner.step()
            summary.rounds = 1
    except DomainError as exc:
        fail(exc, as_json)
    finally:
        application.shutdown()
    if as_json:
        emit_json(summary.to_dict())
        return
    console.print(
        f"rounds {summary.rounds}: {len(summary.scheduled)} scheduled, "
        f"{len(summary.tickets)} tickets, {len(summary.batches_completed)} batches "
        f"made, {len(summary.batches_failed)} failed"
    )
    for what, why in summary.blocked.items():
        console.print(f"  waiting: {what}: {why}")


@network_app.command("show")
def network_show(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    """Sites and machines with their states."""
    from nearfab.readmodels import network_view

    application = state(ctx, data_dir).app()
    with application.uow() as uow:
        view = network_view(application, uow)
    if as_json:
        emit_json(view)
        return
    for site in view:
        console.print(f"[bold]{site['code']}[/] {site['name']} ({site['kind']}, {site['status']})")
        for m in site["machines"]:
            console.print(
                f"  {m['id']} {m['name']} {m['status']} "
                f"qualified: {', '.join(m['qualified_for']) or '-'}"
            )


# --- release ---------------------------------------------------------------------------------
@release_app.command("pending")
def release_pending(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    """Batches waiting for a QP decision, with the RTRT proposal and its reasons."""
    from nearfab.readmodels import pending_view

    application = state(ctx, data_dir).app()
    with application.uow() as uow:
        rows = pending_view(application, uow, local_actor())
    if as_json:
        emit_json(rows)
        return
    # ids and numbers are never cut or wrapped, so they can be copied into `release sign`;
    # what describes the batch wraps beside them at any terminal width
    table = Table(title=f"{len(rows)} batch(es) waiting for a QP decision")
    table.add_column(
        "batch", no_wrap=True, min_width=max((len(r["batch_id"]) for r in rows), default=5)
    )
    table.add_column(
        "number", no_wrap=True, min_width=max((len(r["batch_number"]) for r in rows), default=6)
    )
    table.add_column("proposal", no_wrap=True)
    table.add_column("site · medication · reasons", overflow="fold")
    for r in rows:
        what = f"{r['site']}\n{r['medication']} {_dose(r)}"
        table.add_row(
            r["batch_id"],
            r["batch_number"],
            r["proposed_decision"],
            "\n".join([what, *r["reasons"]]),
        )
    console.print(table)


@release_app.command("sign")
def release_sign(
    ctx: typer.Context,
    batch_id: str,
    decision: Annotated[str, typer.Option(help="release or reject")],
    user: Annotated[str, typer.Option(help="The QP's username.")],
    password: Annotated[str, typer.Option(help="The QP's password (signature component).")],
    meaning: Annotated[str, typer.Option(help='What the signature means, e.g. "QP release".')],
    reason: Annotated[str | None, typer.Option(help="Required to reject.")] = None,
    totp: Annotated[
        str | None, typer.Option(help="Authenticator code, where the site or product asks.")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Release or reject a batch with the QP's e-signature (user ID and password, and the
    TOTP code where the site or master file demands it)."""
    from nearfab.readmodels import review_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    review = use_case(
        application,
        as_json,
        lambda uow: application.quality.decide(
            uow,
            actor,
            batch_id,
            decision=decision,
            password=password,
            meaning=meaning,
            reason=reason,
            username=user,
            totp=totp,
        ),
    )
    out = use_case(application, as_json, lambda uow: review_dict(application, uow, review))
    if as_json:
        emit_json(out)
    else:
        console.print(f"batch {batch_id}: {out['status']} (signature {out['signature_id']})")


@release_app.command("remote")
def release_remote(
    ctx: typer.Context,
    decided: Annotated[bool, typer.Option(help="Also the dossiers already decided.")] = False,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """At the control node: the site nodes' batches waiting for a QP decision, each on its
    newest release dossier, with the blockers the site names (docs/replication.md)."""
    from nearfab.api.release import control_releases
    from nearfab.identity import Permission

    application = state(ctx, data_dir).app()
    actor = local_actor()
    queue = use_case(
        application,
        as_json,
        lambda uow: control_releases(application, actor, Permission.RELEASE_QUEUE_READ),
    )
    with application.uow() as uow:
        rows = [d.to_dict() for d in queue.read(uow, actor, waiting_only=not decided)]
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"{len(rows)} site node batch(es) on their release dossier")
    table.add_column("batch", no_wrap=True)
    table.add_column("number", no_wrap=True)
    table.add_column("proposal", no_wrap=True)
    table.add_column("shown hash", no_wrap=True)
    table.add_column("blockers · decision", overflow="fold")
    for r in rows:
        decision = r["decision"]
        said = f"{decision['decision']} by {decision['signed_by']}" if decision else ""
        table.add_row(
            r["batch_id"],
            r["batch_number"],
            r["proposed_decision"],
            r["shown_hash"],
            "\n".join([*r["blockers"], said]) or "ready",
        )
    console.print(table)


@release_app.command("sign-remote")
def release_sign_remote(
    ctx: typer.Context,
    batch_id: str,
    shown_hash: Annotated[
        str, typer.Option(help="The dossier's hash, from `release remote` (the one you read).")
    ],
    decision: Annotated[str, typer.Option(help="release or reject")],
    user: Annotated[str, typer.Option(help="The QP's username.")],
    password: Annotated[str, typer.Option(help="The QP's password (signature component).")],
    meaning: Annotated[str, typer.Option(help='What the signature means, e.g. "QP release".')],
    reason: Annotated[str | None, typer.Option(help="Required to reject.")] = None,
    totp: Annotated[
        str | None, typer.Option(help="Authenticator code, where the site or product asks.")
    ] = None,
    exceptional: Annotated[
        bool,
        typer.Option(
            "--exceptional",
            help="Release an out-of-specification batch at the physician's request the dossier "
            "carries (a reason is required).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """At the control node: release or reject a site node's batch on its newest dossier with
    the QP's e-signature; the decision goes to the site node, which records it."""
    from nearfab.api.release import control_releases
    from nearfab.identity import Permission

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)
    queue = use_case(
        application,
        as_json,
        lambda uow: control_releases(application, actor, Permission.RELEASE_DECIDE),
    )
    out = use_case(
        application,
        as_json,
        lambda uow: queue.decide(
            uow,
            actor,
            batch_id,
            decision=decision,
            password=password,
            meaning=meaning,
            reason=reason,
            shown_hash=shown_hash,
            username=user,
            totp=totp,
            exceptional=exceptional,
        ),
    )
    if as_json:
        emit_json(out)
    else:
        console.print(
            f"batch {out['batch_number']}: {out['decision']} signed (signature "
            f"{out['signature']['id']}); it reaches site node {out['site_id']} with the next "
            "replication pass"
        )


# --- batch -----------------------------------------------------------------------------------
@batch_app.command("show")
def batch_show(
    ctx: typer.Context, batch_id: str, as_json: JsonOpt = False, data_dir: DataDir = None
) -> None:
    """The electronic batch record."""
    from nearfab.readmodels import batch_view

    application = state(ctx, data_dir).app()
    view = use_case(
        application, as_json, lambda uow: batch_view(application, uow, local_actor(), batch_id)
    )
    if as_json:
        emit_json(view)
        return
    console.print_json(json.dumps(view, default=str))


# --- labels and dispense ---------------------------------------------------------------------
@app.command()
def label(
    ctx: typer.Context,
    unit_or_batch_id: str,
    out: Annotated[Path, typer.Option("--out", help="FILE.png or FILE.pdf")],
    data_dir: DataDir = None,
) -> None:
    """Print the GS1 DataMatrix label of a released pack (or of every pack of a batch)."""
    from nearfab.custody import render_label

    suffix = out.suffix.lower().lstrip(".")
    if suffix not in ("png", "pdf"):
        fail(ValidationFailed("--out must end in .png or .pdf", field="--out"))
    application = state(ctx, data_dir).app()
    contents = use_case(
        application, False, lambda uow: application.custody.labels(uow, unit_or_batch_id)
    )
    paths = []
    for i, content in enumerate(contents):
        target = out if len(contents) == 1 else out.with_name(f"{out.stem}-{i + 1}{out.suffix}")
        target.write_bytes(render_label(content, suffix))  # type: ignore[arg-type]
        paths.append(target)
    for p in paths:
        console.print(f"label written: {p}")


@app.command()
def dispense(
    ctx: typer.Context,
    scan: Annotated[
        str, typer.Option(help="Scanned DataMatrix data, element string or GS1 Digital Link.")
    ],
    user: Annotated[str, typer.Option(help="The dispensing pharmacist.")],
    password: Annotated[str, typer.Option(help="Their password.")],
    patient: Annotated[
        str | None,
        typer.Option(
            help="One patient identifier, told apart by its form: NHS number, wristband scan, "
            "nearfab pseudonym (PT-...), else the site's hospital number (MRN)."
        ),
    ] = None,
    nhs_number: Annotated[str | None, typer.Option(help="NHS number (10 digits).")] = None,
    mrn: Annotated[str | None, typer.Option(help="Hospital number at the order's site.")] = None,
    wristband: Annotated[
        str | None, typer.Option(help="Scanned wristband: GS1 GSRN (AI 8018) or NHS number.")
    ] = None,
    birth_date: Annotated[
        str | None, typer.Option(help="Date of birth, YYYY-MM-DD (second identifier).")
    ] = None,
    prescription_id: Annotated[
        str | None, typer.Option(help="The prescription ID (MedicationRequest identifier).")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Check a pack against the patient and record the hand-over; the patient is identified
    as the hospital knows them (docs/patient-identification.md)."""
    from nearfab.orders import PresentedIdentifiers

    application, actor = app_as(ctx, data_dir, user, password, as_json)
    presented = PresentedIdentifiers(
        patient=patient,
        nhs_number=nhs_number,
        mrn=mrn,
        wristband=wristband,
        birth_date=birth_date,
        prescription_id=prescription_id,
    )
    result = use_case(
        application,
        as_json,
        lambda uow: application.custody.dispense(uow, actor, scan=scan, patient=presented),
    )
    match = result.patient_match
    out = {
        "dispense_id": result.dispense.id,
        "unit_id": result.unit.id,
        "serial": result.unit.serial,
        "status": result.unit.status,
        "order_complete": result.order_complete,
        "patient": match.to_dict() if match is not None else None,
    }
    if as_json:
        emit_json(out)
    else:
        shown = (match.identity or {}) if match is not None else {}
        console.print(
            f"dispensed pack {out['serial']} ({out['dispense_id']})"
            + ("; order complete" if out["order_complete"] else "")
            + (f"; patient {shown.get('name')}, born {shown.get('birth_date')}" if shown else "")
        )


if __name__ == "__main__":
    app()
