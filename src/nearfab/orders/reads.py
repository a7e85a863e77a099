"""What other domains may read of orders' tables."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Subquery, func, select
from sqlalchemy.orm import Session

from nearfab.common.errors import NotFound
from nearfab.orders.models import Order, Patient


def order(session: Session, order_id: str) -> Order:
    """The order by id (from the session's identity map when loaded); NotFound naming
    `order_id`, as the orders service's own look-up."""
    found = session.get(Order, order_id)
    if found is None:
        raise NotFound(f"no order {order_id!r}", field="order_id")
    return found


def orders_by_id(session: Session, ids: Iterable[str]) -> dict[str, Order]:
    """The orders with these ids, in one statement; an unknown id is simply absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {o.id: o for o in session.scalars(select(Order).where(Order.id.in_(wanted)))}


def patients_by_id(session: Session, ids: Iterable[str]) -> dict[str, Patient]:
    """The pseudonymous patients with these ids, in one statement; unknown ids are absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    return {p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(wanted)))}


def patient_view() -> Subquery:
    """The pseudonymous patients as a read view to join on: `id`, `ref` (never identity)."""
    return select(Patient.id, Patient.ref).subquery("patient_view")


def order_view() -> Subquery:
    """The orders as a read view to join on: `id`, `site_id` (the ordering site),
    `patient_id`, `status`."""
    return select(Order.id, Order.site_id, Order.patient_id, Order.status).subquery("order_view")


def order_label_view() -> Subquery:
    """The orders as a read view to join on for what a pack's label states: `id`,
    `medication`, `dose_value`, `dose_unit`."""
    return select(Order.id, Order.medication, Order.dose_value, Order.dose_unit).subquery(
        "order_label_view"
    )


def orders_per_site(
    session: Session, *, master_file_code: str, master_file_version: int, statuses: Iterable[str]
) -> dict[str, int]:
    """How many orders each site placed under one master-file version in these statuses (one
    statement; a site with none is absent)."""
    rows = session.execute(
        select(Order.site_id, func.count())
        .where(
            Order.master_file_code == master_file_code,
            Order.master_file_version == master_file_version,
            Order.status.in_(list(statuses)),
        )
        .group_by(Order.site_id)
    )
    return {site_id: n for site_id, n in rows}


def all_orders(session: Session) -> list[Order]:
    """Every order, oldest first, in one statement (the network simulator's export)."""
    return list(session.scalars(select(Order).order_by(Order.created_at, Order.id)))


def patient(session: Session, patient_id: str) -> Patient:
    """The pseudonymous patient by id (from the session's identity map when loaded); NotFound
    naming `patient_id`, as the orders service's own look-up."""
    found = session.get(Patient, patient_id)
    if found is None:
        raise NotFound(f"no patient {patient_id!r}", field="patient_id")
    return found
