"""CLI: a site as a node of its own (`nearfab node outbox|replicate|receive|inbox status|inbox
anchor|keys export|keys import|rekey|transfer|transfers`; docs/replication.md). The data
folder is a node when NEARFAB_NODE_SITE names its site."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from nearfab.cli.context import (
    DataDir,
    JsonOpt,
    console,
    done,
    emit_json,
    err_console,
    fail,
    local_actor,
    read_json_file,
    state,
)

if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.replication import ReplicationService
    from nearfab.replication.decisions import Waiting
    from nearfab.telemetry import BrokerAddress
    from nearfab.uow import UnitOfWork

app = typer.Typer(
    no_args_is_help=True,
    help="This node's outbox, replication through the broker, and what it received.",
)
inbox_app = typer.Typer(no_args_is_help=True, help="What this node received from the others.")
app.add_typer(inbox_app, name="inbox")
keys_app = typer.Typer(
    no_args_is_help=True,
    help="The ledger public keys of this node's site, carried to the node that checks them.",
)
app.add_typer(keys_app, name="keys")
ca_app = typer.Typer(
    no_args_is_help=True,
    help="For the network CA's holder: revoke a site's certificate, issue the CRL.",
)
app.add_typer(ca_app, name="ca")

BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="mqtt://host:1883 (default: NEARFAB_REPLICATION_URL, else NEARFAB_MQTT_URL).",
    ),
]


def _node(ctx: typer.Context, data_dir: object) -> tuple[App, ReplicationService]:
    application = state(ctx, data_dir).app()  # type: ignore[arg-type]
    if application.replication is None:
        err_console.print(
            "[bold red]not a node[/]: set NEARFAB_NODE_SITE to this node's site (code or id)"
        )
        raise typer.Exit(code=2)
    return application, application.replication


def _broker(application: App, url: str | None) -> BrokerAddress:
    from nearfab.telemetry import BrokerAddress

    given = url or application.settings.replication_url or application.settings.mqtt_url
    if not given:
        err_console.print(
            "[bold red]no broker[/]: give --broker mqtt://host:1883 or set NEARFAB_REPLICATION_URL"
        )
        raise typer.Exit(code=2)
    try:
        return BrokerAddress.parse(given)
    except ValueError as exc:
        err_console.print(f"[bold red]--broker[/]: {exc}")
        raise typer.Exit(code=2) from None


@app.command("outbox")
def outbox(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    """How many of this node's records wait for the broker, and where its outbox chain ends."""
    application, service = _node(ctx, data_dir)
    with application.uow() as uow:
        service.capture_now(uow)
    with application.uow() as uow:
        status = service.outbox(uow)
    done(
        status.to_dict(),
        as_json,
        f"outbox of {status.site_id}: {status.records} records, {status.pending} waiting for "
        f"the broker, {status.published} acknowledged; head seq {status.head_seq}",
    )


@app.command("replicate")
def replicate(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    resend_from: Annotated[
        int | None,
        typer.Option(help="First send again every record from this seq on (a gap was named)."),
    ] = None,
    every: Annotated[float, typer.Option(help="Seconds between passes (without --once).")] = 5.0,
    broker: BrokerOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Send this node's pending records to the broker (QoS 1, persistent session) and mark what
    it acknowledged. Exit code 3 when the broker could not take them all (they wait)."""
    from nearfab.replication import replicate_once

    application, service = _node(ctx, data_dir)
    address = _broker(application, broker)
    if resend_from is not None:
        from nearfab.common.errors import DomainError

        try:
            with application.uow() as uow:
                again = service.resend_from(uow, resend_from)
        except DomainError as exc:
            fail(exc, as_json)
        if not as_json:
            console.print(f"{again} records from seq {resend_from} on will be sent again")
    while True:
        result = replicate_once(service, application.uow, address)
        if as_json:
            emit_json(result.to_dict())
        elif result.error:
            console.print(
                f"sent {result.acknowledged} of {result.attempted}; {result.pending} records "
                f"wait in the outbox: {result.error}"
            )
        else:
            console.print(f"sent {result.acknowledged} records; {result.pending} waiting")
        if once:
            if result.error:
                raise typer.Exit(code=3)
            return
        time.sleep(every)


@app.command("receive")
def receive(
    ctx: typer.Context,
    seconds: Annotated[float, typer.Option(help="Stop after this long at most.")] = 30.0,
    idle: Annotated[float, typer.Option(help="Stop after this long without a message.")] = 2.0,
    broker: BrokerOpt = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Apply what the other nodes sent (the control node: every site's records; a site node:
    the control site's), until nothing arrives for `--idle` seconds."""
    from nearfab.network.reads import control_site
    from nearfab.replication import start_inbox

    application, service = _node(ctx, data_dir)
    address = _broker(application, broker)
    with application.uow() as uow:
        found = control_site(uow.session)
        control = found.id if found is not None else None
    after = application.transfers.hand_over_released if application.transfers else None
    try:
        inbox = start_inbox(service, application.uow, address, control_site_id=control, after=after)
    except ConnectionError as exc:
        err_console.print(f"[bold red]broker out of reach[/]: {exc}")
        raise typer.Exit(code=3) from None
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not inbox.idle_for(idle):
            time.sleep(0.1)
    finally:
        inbox.stop()
    with application.uow() as uow:
        waiting = _waiting(uow, service, control)
    done(
        {
            "received": inbox.received,
            "errors": inbox.errors,
            "waiting": [w.to_dict() for w in waiting],
        },
        as_json,
        f"received {inbox.received} messages ({inbox.errors} batches failed, to come again)"
        + _waiting_text(waiting),
    )


def _waiting(uow: UnitOfWork, service: ReplicationService, control: str | None) -> list[Waiting]:
    """At a site node: the control's records waiting here and why (the site's own
    `replication_waiting` rows; docs/replication.md); at the control node: none."""
    from nearfab.replication.decisions import waiting_at

    return waiting_at(uow, service.site_id, control)


def _waiting_text(waiting: list[Waiting]) -> str:
    if not waiting:
        return ""
    from rich.markup import escape

    lines = [f"\n{len(waiting)} of the control site's records wait here:"]
    for w in waiting:
        lines.append(  # escaped: printed as rich markup by `done`
            escape(
                f"  {w.record_id}: {w.what}; waiting since {w.since:%Y-%m-%d %H:%M:%S} UTC: "
                f"{w.reason} (code {w.code or '-'})"
            )
        )
    return "\n".join(lines)


@inbox_app.command("status")
def inbox_status(ctx: typer.Context, as_json: JsonOpt = False, data_dir: DataDir = None) -> None:
    """Per origin node: records held, gaps, duplicates dropped, forks and altered records, and
    whether the chains verify; at a site node, the control's records waiting here and why
    (under the control's origin in --json: `waiting`). Exit code 1 when anything is wrong
    (a record waiting is not: it is tried again at each pass)."""
    from nearfab.network.reads import control_site

    application, service = _node(ctx, data_dir)
    with application.uow() as uow:
        statuses = service.inbox_status(uow)
        found = control_site(uow.session)
        control = found.id if found is not None else None
        waiting = _waiting(uow, service, control)
    if as_json:
        shown = [s.to_dict() for s in statuses]
        for origin in shown:  # the control's records waiting here, under the control origin
            if origin["origin_site"] == control and control != service.site_id:
                origin["waiting"] = [w.to_dict() for w in waiting]
        emit_json(shown)
    else:
        table = Table("origin", "records", "head seq", "gaps", "duplicates", "forks", "chain")
        for s in statuses:
            table.add_row(
                s.origin_site,
                str(s.records),
                str(s.head_seq),
                str(len(s.gaps)),
                str(s.duplicates),
                str(len(s.forks)),
                "verified" if not (s.chain_problems or s.altered) else "PROBLEMS",
            )
        console.print(table)
        for s in statuses:
            for line in [*s.gaps, *s.forks, *s.altered, *s.chain_problems]:
                console.print(f"  {line}", markup=False)
        if waiting:
            console.print(_waiting_text(waiting).lstrip("\n"))
    if any(not s.ok for s in statuses):
        raise typer.Exit(code=1)


@inbox_app.command("anchor")
def inbox_anchor(
    ctx: typer.Context,
    allow_unverified: Annotated[
        bool,
        typer.Option(
            "--allow-unverified",
            help="Anchor an origin signed by keys this node does not hold (said in the anchor).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record in this node's audit trail where each origin's verified chains end (an origin
    with a gap, a fork or a broken chain, or signed by keys this node does not hold, is not
    anchored: it is named, exit code 1)."""
    from nearfab.identity import system_actor

    application, service = _node(ctx, data_dir)
    with application.uow() as uow:
        result = service.anchor(uow, system_actor("replication"), allow_unverified=allow_unverified)
    if as_json:
        emit_json(result)
    else:
        for origin, body in result["anchored"].items():
            line = f"anchored {origin} at seq {body['seq']}"
            if body.get("unverified_keys"):
                line += (
                    " with signatures by keys this node does not hold, unchecked "
                    f"(--allow-unverified): {', '.join(body['unverified_keys'])}"
                )
            console.print(line, markup=False)
        for origin, why in result["refused"].items():
            console.print(f"not anchored {origin}: {why}", markup=False)
    if result["refused"]:
        raise typer.Exit(code=1)


@keys_app.command("export")
def keys_export(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON here (default: standard output).")
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option(
            "--certificate",
            envvar="NEARFAB_NODE_CERTIFICATE",
            help="This node's certificate (PEM) from the network CA, its common name the "
            "site's code or id: the keys are exported as a statement signed with its key "
            "(default: certs/node.crt in the data folder, when there).",
        ),
    ] = None,
    certificate_key: Annotated[
        Path | None,
        typer.Option(
            "--certificate-key",
            envvar="NEARFAB_NODE_CERTIFICATE_KEY",
            help="The certificate's private key (PEM, unencrypted; default: certs/node.key).",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Print this node's site's ledger public keys as JSON (key id, site, public key, when made
    and when rotated away), for `nearfab node keys import` at the control. No private half.
    With --certificate and --certificate-key: a statement signed with the node's certificate
    key, the certificate with it (what the import checks against the network CA); without,
    a plain list the import takes only with --trust-on-word."""
    import json

    from nearfab.common.errors import DomainError
    from nearfab.custody import CertificateFiles, export_certified_site_keys, export_site_keys

    if (certificate is None) != (certificate_key is None):
        err_console.print("[bold red]give both[/] --certificate and --certificate-key (or neither)")
        raise typer.Exit(code=2)
    application, service = _node(ctx, data_dir)
    files = CertificateFiles.in_folder(Path(application.settings.data_dir))
    if certificate is None and files.certificate.is_file() and files.key.is_file():
        certificate, certificate_key = files.certificate, files.key  # the node's own, certs/
    try:
        with application.uow() as uow:
            if certificate is not None and certificate_key is not None:
                document = export_certified_site_keys(
                    uow.session,
                    service.site_id,
                    _read_file(certificate, "--certificate"),
                    _read_file(certificate_key, "--certificate-key"),
                    signed_at=application.clock.now(),
                )
                shown = json.loads(document["statement"])
            else:
                document = shown = export_site_keys(uow.session, service.site_id)
    except DomainError as exc:
        fail(exc, False)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"{len(shown['keys'])} keys of {shown['site_code']} in {out}")
    if certificate is None:
        err_console.print(
            "not certified (no --certificate): the import takes it only with --trust-on-word"
        )


def _read_file(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        err_console.print(f"[bold red]{option}[/]: cannot read {path}: {exc.strerror}")
        raise typer.Exit(code=2) from None


@keys_app.command("import")
def keys_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="A file written by `nearfab node keys export` at the site.")
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why these keys are trusted (kept in the audit trail).")
    ],
    network_ca: Annotated[
        Path | None,
        typer.Option(
            "--network-ca",
            envvar="NEARFAB_NETWORK_CA",
            help="The network CA's certificate (PEM), which issued the site's certificate "
            "(the same CA as the bridge's TLS certificates; default: certs/network-ca.crt in "
            "the data folder, when there).",
        ),
    ] = None,
    crl: Annotated[
        Path | None,
        typer.Option(
            "--crl",
            envvar="NEARFAB_NETWORK_CRL",
            help="The network's CRLs (PEM; the network CA's, and each intermediate CA's): a "
            "certificate they list is refused (default: certs/network-ca.crl in the data "
            "folder, when there; none: revocation not checked, which the audit row says).",
        ),
    ] = None,
    trust_on_word: Annotated[
        bool,
        typer.Option(
            "--trust-on-word",
            help="Take a plain (uncertified) export on the word of whoever runs this, no "
            "certificate checked; the audit trail records it (trust: on_word) and who ran it.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Register another site's ledger public keys here (at the control: a site node's keys made
    after its copy), so the signatures they made are checked. A certified export is checked
    against the network CA (--network-ca): the certificate issued by it, valid now, naming the
    keys' site, its signature over the statement good; a plain one is refused unless
    --trust-on-word. Refused too: this node's own site's keys, a key id already held as another
    key; a key already held as the same is left."""
    from nearfab.common.errors import DomainError
    from nearfab.custody import CertificateFiles, import_exported_site_keys

    application, service = _node(ctx, data_dir)
    document = read_json_file(file, as_json)
    if network_ca is None:
        default = CertificateFiles.in_folder(Path(application.settings.data_dir)).network_ca
        network_ca = default if default.is_file() else None  # the node's own, certs/
    ca_pem = _read_file(network_ca, "--network-ca") if network_ca is not None else None
    crl = crl if crl is not None else _default_crl(application)
    crl_pem = _read_file(crl, "--crl") if crl is not None else None
    try:
        with application.uow() as uow:
            result = import_exported_site_keys(
                uow,
                local_actor(),
                document,
                network_ca_pem=ca_pem,
                trust_on_word=trust_on_word,
                own_site_id=service.site_id,
                reason=reason,
                crl_pem=crl_pem,
            )
    except DomainError as exc:
        fail(exc, as_json)
    done(
        result.to_dict(),
        as_json,
        f"{len(result.registered)} keys registered"
        + (f" ({', '.join(result.registered)})" if result.registered else "")
        + f", {len(result.already_held)} already held"
        + (f", retired earlier than known: {', '.join(result.retired)}" if result.retired else "")
        + ("" if crl_pem is not None else " (no CRL given: revocation not checked)"),
    )


def _default_crl(application: App) -> Path | None:
    from nearfab.custody import CertificateFiles

    default = CertificateFiles.in_folder(Path(application.settings.data_dir)).crl
    return default if default.is_file() else None


@keys_app.command("revoke-check")
def keys_revoke_check(
    ctx: typer.Context,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the keys are checked (kept in the audit trail).")
    ],
    crl: Annotated[
        Path | None,
        typer.Option(
            "--crl",
            envvar="NEARFAB_NETWORK_CRL",
            help="The network's CRLs (PEM; default: certs/network-ca.crl in the data folder).",
        ),
    ] = None,
    network_ca: Annotated[
        Path | None,
        typer.Option(
            "--network-ca",
            envvar="NEARFAB_NETWORK_CA",
            help="The network CA's certificate (PEM; default: certs/network-ca.crt).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Read a newer CRL against the keys registered here: every key registered from a
    statement whose certificate (or an intermediate CA of its path) the CRL lists is retired
    from the time the CA gives (its signatures on entries dated after it are refused), one
    audit row per key. A CRL signed by neither the network CA nor an intermediate of a
    registered certificate is refused (crl_not_trusted). Run it whenever a CRL arrives."""
    from nearfab.common.errors import DomainError
    from nearfab.custody import CertificateFiles, apply_crl

    application, _service = _node(ctx, data_dir)
    files = CertificateFiles.in_folder(Path(application.settings.data_dir))
    crl = crl if crl is not None else _default_crl(application)
    network_ca = network_ca if network_ca is not None else files.network_ca
    if crl is None:
        err_console.print("[bold red]--crl[/]: give the CRL file (none in certs/)")
        raise typer.Exit(code=2)
    crl_pem, ca_pem = _read_file(crl, "--crl"), _read_file(network_ca, "--network-ca")
    try:
        with application.uow() as uow:
            result = apply_crl(uow, local_actor(), crl_pem, network_ca_pem=ca_pem, reason=reason)
    except DomainError as exc:
        fail(exc, as_json)
    retired = ", ".join(f"{r['key_id']} from {r['untrusted_from']}" for r in result.retired)
    done(
        result.to_dict(),
        as_json,
        f"{len(result.retired)} keys retired now"
        + (f" ({retired})" if retired else "")
        + f", {len(result.already_retired)} already retired",
    )


CaCertOpt = Annotated[Path, typer.Option("--ca-cert", help="The network CA's certificate (PEM).")]
CaKeyOpt = Annotated[
    Path, typer.Option("--ca-key", help="The network CA's private key (PEM, unencrypted).")
]
CrlFileOpt = Annotated[
    Path,
    typer.Option(
        "--crl",
        help="The CA's CRL file: read when it exists (its entries kept), written with the new one.",
    ),
]
DaysOpt = Annotated[
    int, typer.Option("--days", help="Days until the CRL's next update (when it goes stale).")
]


@ca_app.command("revoke")
def ca_revoke(
    ca_cert: CaCertOpt,
    ca_key: CaKeyOpt,
    certificate: Annotated[
        Path, typer.Option("--certificate", help="The site's certificate to revoke (PEM).")
    ],
    crl: CrlFileOpt,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="RFC 5280 reason: key_compromise, superseded, cessation_of_operation, "
            "affiliation_changed, ca_compromise, certificate_hold, privilege_withdrawn, "
            "aa_compromise or unspecified.",
        ),
    ] = "unspecified",
    invalid_since: Annotated[
        str | None,
        typer.Option(
            "--invalid-since",
            help="ISO 8601 time (with offset) from which the key is known or suspected "
            "compromised (the CRL entry's invalidity date; default: the revocation, now).",
        ),
    ] = None,
    days: DaysOpt = 30,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a site's certificate: the CA's CRL written again with its serial (revoked now,
    the reason, the invalidity date), signed with the CA's key. Carry the CRL file to every
    node (certs/network-ca.crl) and run `nearfab node keys revoke-check` there. No database:
    run it where the CA's key is kept."""
    from datetime import UTC, datetime

    from nearfab.common.errors import DomainError, ValidationFailed
    from nearfab.custody import revoke_certificate

    since = None
    if invalid_since:
        try:
            since = datetime.fromisoformat(invalid_since)
        except ValueError:
            fail(ValidationFailed("not an ISO 8601 time", field="invalid_since"), as_json)
        if since.tzinfo is None:
            fail(ValidationFailed("a time with its offset", field="invalid_since"), as_json)
    try:
        pem = revoke_certificate(
            _read_file(ca_cert, "--ca-cert"),
            _read_file(ca_key, "--ca-key"),
            _read_file(certificate, "--certificate"),
            reason=reason,
            now=datetime.now(UTC),
            crl_pem=crl.read_bytes() if crl.is_file() else None,
            days=days,
            invalid_since=since,
        )
    except DomainError as exc:
        fail(exc, as_json)
    _write_crl(crl, pem, as_json)


@ca_app.command("crl")
def ca_crl(
    ca_cert: CaCertOpt,
    ca_key: CaKeyOpt,
    crl: CrlFileOpt,
    days: DaysOpt = 30,
    as_json: JsonOpt = False,
) -> None:
    """Issue the CA's CRL again (the same entries, a new number and next update; the first:
    empty), before the current one's next update passes: nodes refuse imports against a CRL
    past it (crl_expired)."""
    from datetime import UTC, datetime

    from nearfab.common.errors import DomainError
    from nearfab.custody import refresh_crl

    try:
        pem = refresh_crl(
            _read_file(ca_cert, "--ca-cert"),
            _read_file(ca_key, "--ca-key"),
            now=datetime.now(UTC),
            crl_pem=crl.read_bytes() if crl.is_file() else None,
            days=days,
        )
    except DomainError as exc:
        fail(exc, as_json)
    _write_crl(crl, pem, as_json)


def _write_crl(path: Path, pem: bytes, as_json: bool) -> None:
    from cryptography import x509

    crl = x509.load_pem_x509_crl(pem)
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(pem)
    tmp.replace(path)  # the old file stays whole until the new one is complete
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    revoked = [format(r.serial_number, "x") for r in crl]
    shown = {
        "crl": str(path),
        "number": number,
        "revoked": revoked,
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
    }
    done(
        shown,
        as_json,
        f"CRL {number} of {crl.issuer.rfc4514_string()} in {path}: {len(revoked)} "
        f"revoked, next update {shown['next_update']}",
    )


@app.command("rekey")
def rekey(
    ctx: typer.Context,
    reason: Annotated[
        str, typer.Option("--reason", help="Why the keys are replaced (kept in the audit trail).")
    ],
    keep_old_key: Annotated[
        bool,
        typer.Option(
            "--keep-old-key",
            help="The old audit key is this installation's own (a rotation at the control): "
            "keep it under keys/retired/ to check the rows before. Never at a site's copy.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Give this data folder its own audit HMAC key and ticket/checkpoint signing key (a node
    made from a copy of the control's folder holds the control's until then). Recorded in the
    audit trail with the old and new fingerprints; the rows before it still verify
    (docs/audit-trail.md, key epochs). Run it with the node stopped, then start it."""
    from nearfab.bootstrap import rekey as rekey_app
    from nearfab.common.errors import DomainError

    application = state(ctx, data_dir).app()
    try:
        result = rekey_app(application, local_actor(), reason, keep_old_audit_key=keep_old_key)
    except DomainError as exc:
        fail(exc, as_json)
    done(
        result.to_dict(),
        as_json,
        f"rekeyed at audit seq {result.audit_seq}: audit key {result.old_audit_key} -> "
        f"{result.new_audit_key}, signing key {result.old_signing_key} -> "
        f"{result.new_signing_key}"
        + ("" if result.old_audit_key_kept else " (the old audit key is not kept)"),
    )


@app.command("transfer")
def transfer(
    ctx: typer.Context,
    order_id: Annotated[str, typer.Argument(help="The order to move.")],
    to_site: Annotated[str, typer.Option("--to", help="The receiving site (code or id).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")],
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """At the control node: move an order from the site node holding it to another site's node.
    The giving site gives it up by its own rules, or refuses naming the order's state (a batch
    started); once its signed release arrives here, the order is handed to the receiving site
    (`nearfab node receive`, or a serving node's link). See `nearfab node transfers`."""
    from nearfab.common.errors import DomainError

    application, _service = _node(ctx, data_dir)
    if application.transfers is None:
        err_console.print("[bold red]not the control node[/]: orders are moved at the control")
        raise typer.Exit(code=2)
    try:
        with application.uow() as uow:
            made = application.transfers.request(
                uow, local_actor(), order_id, to_site=to_site, reason=reason
            )
    except DomainError as exc:
        fail(exc, as_json)
    done(
        made.to_dict(),
        as_json,
        f"transfer {made.transfer_id}: order {made.order_id} from {made.from_site_id} to "
        f"{made.to_site_id}, asked of the giving site (record {made.record_id})",
    )


@app.command("transfers")
def transfers(
    ctx: typer.Context,
    order_id: Annotated[str | None, typer.Option("--order", help="One order's only.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """At the control node: the orders moved between site nodes, and where each transfer is
    (requested, handed_over, ended and why). Acts first on what the giving sites answered."""
    application, _service = _node(ctx, data_dir)
    if application.transfers is None:
        err_console.print("[bold red]not the control node[/]: orders are moved at the control")
        raise typer.Exit(code=2)
    application.transfers.hand_over_released(application.uow)
    with application.uow() as uow:
        found = application.transfers.read(uow, local_actor(), order_id)
    if as_json:
        emit_json([t.to_dict() for t in found])
        return
    table = Table("transfer", "order", "from", "to", "status", "outcome")
    for t in found:
        table.add_row(
            t.transfer_id, t.order_id, t.from_site_id, t.to_site_id, t.status, t.outcome or ""
        )
    console.print(table)
