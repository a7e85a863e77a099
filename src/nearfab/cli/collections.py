"""CLI: before and at the collection of starting material from the patient (scheduling):
`nearfab pre-collection` (eligibility, consent: e-signed by a clinician of the ordering site)
and `nearfab collected` (the collection happened: the patient's and the chain's identifiers)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nearfab.cli.context import app_as, done, use_case
from nearfab.common.errors import ValidationFailed

if TYPE_CHECKING:
    from nearfab.uow import UnitOfWork

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder (default: NEARFAB_DATA_DIR).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
UserOpt = Annotated[str, typer.Option(help="Who does it (username).")]
PasswordOpt = Annotated[str, typer.Option(help="Their password.")]


def pre_collection(
    ctx: typer.Context,
    order_id: str,
    kind: Annotated[str, typer.Option(help="What is recorded (e.g. eligibility, consent).")],
    reference: Annotated[
        str, typer.Option(help="The document it rests on (consent form and version).")
    ],
    statement: Annotated[str, typer.Option(help="What you confirm.")],
    user: UserOpt,
    password: PasswordOpt,
    meaning: Annotated[str | None, typer.Option(help="The signature's meaning.")] = None,
    totp: Annotated[str | None, typer.Option(help="TOTP code, when the site asks.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record (e-signed) one of the records the order's family requires before the
    collection: a clinician of the ordering site."""
    from nearfab.scheduling.services.consent import record_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json, signing=True)

    def step(uow: UnitOfWork) -> dict[str, Any]:
        row = application.scheduling.record_pre_collection(
            uow, actor, order_id, kind=kind, reference=reference, statement=statement,
            password=password, username=user, totp=totp, meaning=meaning,
        )  # fmt: skip
        return record_dict(row)

    out = use_case(application, as_json, step)
    done(out, as_json, f"{order_id}: {out['kind']} recorded ({out['reference']}), signed")


def collected(
    ctx: typer.Context,
    order_id: str,
    patient: Annotated[str, typer.Option(help="The patient's identifier as presented.")],
    user: UserOpt,
    password: PasswordOpt,
    identifier: Annotated[
        str | None, typer.Option(help="The chain identifier scanned from the collection.")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="When it was collected (ISO 8601 with zone; now).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Kept in the audit trail.")] = "collected",
    as_json: JsonOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Record that the collection happened, with the patient's identifier and the family's
    chain identifier; refused (exit 2, audited) on a mismatch or before the pre-collection
    records."""
    from nearfab.scheduling.services.collections import appointment_dict

    application, actor = app_as(ctx, data_dir, user, password, as_json)

    def step(uow: UnitOfWork) -> dict[str, Any]:
        when = None
        if at is not None:
            try:
                when = datetime.fromisoformat(at)
            except ValueError:
                raise ValidationFailed(
                    f"--at {at}: not an ISO 8601 date and time", field="collected_at"
                ) from None
        row = application.scheduling.record_collected(
            uow, actor, order_id, identifier=identifier, patient=patient, collected_at=when,
            reason=reason,
        )  # fmt: skip
        return appointment_dict(row, None)

    out = use_case(application, as_json, step)
    bound = f"; chain identifier {out['chain_identifier']}" if out["chain_identifier"] else ""
    done(out, as_json, f"{order_id}: collected at {out['collected_at']}{bound}")
