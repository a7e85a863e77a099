"""What other domains may read of custody's tables."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, ScalarSelect, func, select
from sqlalchemy.orm import Session

from nearfab.common.errors import NotFound
from nearfab.custody.models import LedgerEntry

if TYPE_CHECKING:
    from nearfab.custody.models import CustodyAlert, SerialUnit


def ledger_head_view(site_id: str) -> ScalarSelect[int | None]:
    """The last `seq` of one site's chain as a scalar subquery (NULL before its first entry),
    for a one-statement check."""
    return select(func.max(LedgerEntry.seq)).where(LedgerEntry.site_id == site_id).scalar_subquery()


def ledger_rows_after(connection: Connection, site_id: str, after_seq: int) -> list[dict[str, Any]]:
    """One site's ledger entries after `after_seq`, in chain order, with what their hash and
    signature cover (`payload`, `prev_hash`, `entry_hash`, `key_id`, `signature`)."""
    table = LedgerEntry.__table__
    rows = connection.execute(
        select(
            table.c.site_id,
            table.c.seq,
            table.c.kind,
            table.c.ref,
            table.c.payload,
            table.c.prev_hash,
            table.c.entry_hash,
            table.c.key_id,
            table.c.signature,
        )
        .where(table.c.site_id == site_id, table.c.seq > after_seq)
        .order_by(table.c.seq)
    ).mappings()
    return [dict(row) for row in rows]


def ledger_entries_of_kind(session: Session, site_id: str, kind: str) -> list[dict[str, Any]]:
    """One site's ledger entries of one kind, in chain order: `seq`, `payload` (the JSON text
    its hash covers) and `recorded_at`."""
    table = LedgerEntry.__table__
    rows = session.execute(
        select(table.c.seq, table.c.payload, table.c.recorded_at)
        .where(table.c.site_id == site_id, table.c.kind == kind)
        .order_by(table.c.seq)
    ).mappings()
    return [dict(row) for row in rows]


def dispensed_since(session: Any, site_id: str, since: Any) -> list[dict[str, Any]]:
    """Packs dispensed at `site_id` after `since`, each with what re-verifying it needs now:
    the pack's and its batch's status and the patient to contact (replication's deferred
    verification, docs/replication.md)."""
    from nearfab.custody.models import Dispense, SerialUnit
    from nearfab.orders.reads import patient_view
    from nearfab.production.reads import batch_view

    # the owners' read views: custody names no other domain's table (test_table_ownership)
    batch, patient = batch_view(), patient_view()
    rows = session.execute(
        select(
            SerialUnit.id,
            SerialUnit.gtin,
            SerialUnit.serial,
            SerialUnit.batch_number,
            SerialUnit.status,
            batch.c.status,
            patient.c.ref,
            Dispense.dispensed_at,
        )
        .join(Dispense, Dispense.unit_id == SerialUnit.id)
        .join(batch, batch.c.id == SerialUnit.batch_id)
        .join(patient, patient.c.id == Dispense.patient_id)
        .where(Dispense.site_id == site_id, Dispense.dispensed_at > since)
        .order_by(Dispense.dispensed_at, SerialUnit.id)
    )
    keys = ("unit_id", "gtin", "serial", "batch_number", "status", "batch_status")
    return [
        {**dict(zip(keys, r[:6], strict=True)), "patient_ref": r[6], "dispensed_at": r[7]}
        for r in rows
    ]


def units_with_alert(session: Any, kind: str, unit_ids: list[str]) -> set[str]:
    """Which of these packs already carry an alert of `kind` (one statement)."""
    from nearfab.custody.models import CustodyAlert

    if not unit_ids:
        return set()
    return set(
        session.scalars(
            select(CustodyAlert.unit_id).where(
                CustodyAlert.kind == kind, CustodyAlert.unit_id.in_(unit_ids)
            )
        )
    )


def unit(session: Session, unit_id: str) -> SerialUnit | None:
    """One pack (SerialUnit) by id, or None."""
    from nearfab.custody.models import SerialUnit

    return session.get(SerialUnit, unit_id)


def alerts_at(session: Session, site_id: str, kind: str) -> list[CustodyAlert]:
    """The custody alerts (CustodyAlert) of one kind raised at a site, newest first."""
    from nearfab.custody.models import CustodyAlert

    return list(
        session.scalars(
            select(CustodyAlert)
            .where(CustodyAlert.site_id == site_id, CustodyAlert.kind == kind)
            .order_by(CustodyAlert.raised_at.desc())
        )
    )


class PackLabel(NamedTuple):
    """What a pack's label states, for the pharmacist to check by eye: the pack's own fields,
    its order's medication and dose, and the product family of the master file its batch was
    made under (whose label kit words the product and the count)."""

    serial: str
    quantity: int
    batch_number: str
    expiry: date
    medication: str
    dose_value: float
    dose_unit: str
    product_family: str


def pack_label(session: Session, unit_id: str) -> PackLabel:
    """The pack's label facts in one statement: the pack joined with the owners' read views of
    its order, its batch and the batch's master file; NotFound naming `unit_id`."""
    from nearfab.custody.models import SerialUnit
    from nearfab.masterfiles.reads import master_file_view
    from nearfab.orders.reads import order_label_view
    from nearfab.production.reads import batch_view

    order, batch, master_file = order_label_view(), batch_view(), master_file_view()
    row = session.execute(
        select(
            SerialUnit.serial,
            SerialUnit.quantity,
            SerialUnit.batch_number,
            SerialUnit.expiry,
            order.c.medication,
            order.c.dose_value,
            order.c.dose_unit,
            master_file.c.product_family,
        )
        .join(order, order.c.id == SerialUnit.order_id)
        .join(batch, batch.c.id == SerialUnit.batch_id)
        .join(master_file, master_file.c.id == batch.c.master_file_id)
        .where(SerialUnit.id == unit_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no pack {unit_id!r}", field="unit_id")
    return PackLabel(*row)


def site_public_keys(session: Session) -> dict[str, tuple[str, bytes, datetime | None]]:
    """Every site ledger key this database holds, retired ones too: key id -> (site id, raw
    Ed25519 public key, when it was retired: by a rotation, a certified statement or a
    revoked certificate; None: not retired), for checking signatures of entries received
    from a node (a retired key signs nothing dated after its retirement)."""
    from nearfab.custody.models import SiteKey

    return {
        key_id: (site_id, bytes(public), retired)
        for key_id, site_id, public, retired in session.execute(
            select(SiteKey.key_id, SiteKey.site_id, SiteKey.public_key, SiteKey.retired_at)
        )
    }


def alert_states(
    connection: Connection, site_id: str, alert_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The follow-up state of a site's custody alerts as the connection's transaction sees
    them (replication's `alert` records, docs/replication.md): the alert (kind, message,
    raised when), its pack (serial, GTIN, batch number, status), its status, how many steps
    were taken and the last one (to, outcome, note, by whom, when). JSON values."""
    from nearfab.custody.models import CustodyAlert, CustodyAlertAction, SerialUnit

    alerts, units = CustodyAlert.__table__, SerialUnit.__table__
    found: dict[str, dict[str, Any]] = {}
    rows = connection.execute(
        select(
            alerts.c.id,
            alerts.c.kind,
            alerts.c.scan,
            alerts.c.raised_at,
            alerts.c.detail,
            alerts.c.status,
            alerts.c.status_changed_at,
            alerts.c.unit_id,
            units.c.serial,
            units.c.gtin,
            units.c.batch_number,
            units.c.status.label("unit_status"),
        )
        .select_from(alerts.outerjoin(units, units.c.id == alerts.c.unit_id))
        .where(alerts.c.id.in_(sorted(set(alert_ids))), alerts.c.site_id == site_id)
    ).mappings()
    for r in rows:
        found[str(r["id"])] = {
            "alert_id": r["id"],
            "site_id": site_id,
            "kind": r["kind"],
            "message": str((r["detail"] or {}).get("message") or ""),
            "scan": r["scan"],
            "raised_at": _iso(r["raised_at"]),
            "status": r["status"],
            "status_changed_at": _iso(r["status_changed_at"]),
            "unit_id": r["unit_id"],
            "serial": r["serial"],
            "gtin": r["gtin"],
            "batch_number": r["batch_number"],
            "unit_status": r["unit_status"],
            "steps": 0,
            "last_step": None,
        }
    actions = CustodyAlertAction.__table__
    for a in connection.execute(
        select(actions)
        .where(actions.c.alert_id.in_(sorted(found)))
        .order_by(actions.c.alert_id, actions.c.id)
    ).mappings():
        state = found[str(a["alert_id"])]
        state["steps"] += 1
        state["last_step"] = {
            "to_status": a["to_status"],
            "outcome": a["outcome"],
            "note": a["note"],
            "acted_by_name": a["acted_by_name"],
            "acted_at": _iso(a["acted_at"]),
        }
    return found


def _iso(value: Any) -> str | None:
    """A stored time as ISO 8601 in UTC (SQLite hands back naive UTC times)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return str(value.isoformat())
