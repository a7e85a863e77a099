"""What the dispense page tells a pharmacist: the verification's answer in words, and the pack
to check by eye (product, strength, quantity, lot, expiry), as a pharmacist reads a pack."""

from __future__ import annotations

from typing import Any

from nearfab.bootstrap import App
from nearfab.common.quantity import Quantity
from nearfab.custody.reads import pack_label
from nearfab.uow import UnitOfWork

# VerifyStatus and dispense refusal codes -> the reason after "Do NOT hand over: "
_REASONS = {
    "wrong_patient": "wrong patient",
    "expired": "expired",
    "recalled": "recalled",
    "not_released": "not released by a QP",
    "rejected": "rejected by a QP",
    "already_dispensed": "already handed over",
    "unknown": "not a pack of this network, or its label does not match (possibly falsified)",
    "integrity_failure": "its release record does not match the signed release",
    "held": "on hold until a QP judges it",
    "in_use_expired": "its in-use period has ended",
}


def verdict(status: str | None) -> str:
    """The answer in words: "Safe to hand over", or "Do NOT hand over: <reason>"."""
    if status == "ok":
        return "Safe to hand over"
    reason = _REASONS.get(status or "", (status or "refused").replace("_", " "))
    return f"Do NOT hand over: {reason}"


def pack_card(application: App, uow: UnitOfWork, unit_id: str) -> dict[str, Any]:
    """The scanned pack as its label states it, in the family's words. Called only after the
    verification has found the pack and checked the reader's scope. One statement: the pack
    joined with its order, batch and master file through their owners' read views."""
    label = pack_label(uow.session, unit_id)
    kit = application.families.get(label.product_family).labels
    dose = Quantity(float(label.dose_value), str(label.dose_unit))
    return {
        "product": kit.product_name(label.medication, dose),
        "strength": str(dose),
        "quantity": kit.pack_contents(label.quantity),
        "lot": label.batch_number,
        "expiry": label.expiry.isoformat(),
        "serial": label.serial,
    }
