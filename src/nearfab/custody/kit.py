"""What the custody domain asks of a product family: `LabelKit`.

The domain owns the question; families under nearfab.families answer it, and the domain reaches
them only through the registry bootstrap wires in (DESIGN.md, "The family kit").

Custody serialises packs, prints their labels and checks them at hand-over. What a pack is
called, what its label says about the dose and how its contents are counted are the family's
words; so is the identity rule its packs carry (the scheme, how a new identity is made and
which product codes are valid). The core keeps the pack's quantity as a plain count of units.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from nearfab.common.quantity import Quantity
from nearfab.custody.gs1 import UnitIdentifier


@runtime_checkable
class LabelKit(Protocol):
    """A family's identity and label rules (the `labels` part of a ProductFamily)."""

    # the identity standard of the family's chain of identity: "gs1" (GTIN + serial, batch,
    # expiry), or another standard the family names. Custody's pack record, EPCIS
    # events, scans and DataMatrix are GS1 for every family today: `new_identity` returns a GS1
    # identifier, and a family with another scheme prints it through `label_details` below.
    identity_scheme: str

    def product_code(self, code: str) -> str:
        """The master file's product code in canonical form (GS1: a GTIN-14 with a valid
        check digit); ValidationFailed naming `gtin` when it is not one."""
        ...

    def new_identity(self, product_code: str, lot: str, expiry: date) -> UnitIdentifier:
        """A fresh identity for one pack of `lot` (a new random serial under the scheme)."""
        ...

    def product_name(self, medication: str, dose: Quantity) -> str:
        """The label's first (bold) line: what the pack holds, e.g. the medication and dose."""
        ...

    def dose_text(
        self, dose: Quantity, doses_per_day: float | None, pack_index: int, quantity: int
    ) -> str:
        """The label's dose line: the dose per unit, how often, and this pack's contents."""
        ...

    def pack_contents(self, quantity: int) -> str:
        """A pack's contents in the family's words, for pages and records (`quantity` units)."""
        ...


def label_details(
    kit: LabelKit, design: Mapping[str, Any], chain_identifier: str | None = None
) -> tuple[str, ...]:
    """The label's lines after the dose line, from the batch's design document: the family's
    optional `label_details(design)` (e.g. a dose per kg of body weight, an identity under its
    own scheme, storage and in-use rules); none when the family has no such method.

    `chain_identifier` is the one bound at the order's collection when the prescription named
    none (a family that declares `check_chain_identifier` takes it as
    `label_details(design, chain_identifier=...)`), so the label prints what the hand-overs
    check."""
    details = getattr(kit, "label_details", None)
    if not callable(details):
        return ()
    lines = (
        details(design)
        if chain_identifier is None
        else details(design, chain_identifier=chain_identifier)
    )
    return tuple(str(line) for line in lines)


@runtime_checkable
class CustodyRuleKit(Protocol):
    """A family's custody rules (optional methods of its `labels` part): the chain of
    hand-overs its units pass, how a storage log reading is judged and the in-use period of a
    prepared unit. A family without them has no rule: any hand-over whose two scans agree is
    accepted, no reading is an excursion and a prepared unit has no in-use limit."""

    def hand_over_steps(self) -> tuple[str, ...]:
        """The steps of the chain in order (each hand-over goes from one to the next); empty
        when the family has no chain."""
        ...

    def judge_storage(self, reading: Quantity) -> str | None:
        """The excursion a storage log reading is (the reason, naming the limit), or None when
        the reading is within the family's storage rule (or the family has none)."""
        ...

    def in_use_period(self, design: Mapping[str, Any]) -> timedelta | None:
        """How long a unit may be used after it is prepared, from the batch's design; None
        when the family sets no limit."""
        ...

    def shelf_life(self, design: Mapping[str, Any]) -> timedelta | None:
        """How long a unit may be used after its batch was made, when that is shorter than the
        master file's shelf life in days can say (hours); None (and for a family without it):
        only the in-use period from the preparation applies."""
        ...

    def chain_identifier(self, design: Mapping[str, Any]) -> str | None:
        """The family's chain identifier the order's design carries (the prescription named
        it); None when it carries none (then the one bound at the collection is the chain's)."""
        ...

    def check_chain_identifier(self, expected: str, presented: str) -> str | None:
        """Why the identifier scanned or typed at a hand-over is not the chain's `expected`
        (another one, a wrong check character, not one at all); None when it is. A family
        with this method requires the identifier on both sides of every hand-over, and the
        patient's identifier at the hand-over to the chain's last step (the bedside)."""
        ...

    def hand_over_biz_step(self, from_step: str, to_step: str) -> str:
        """The GS1 CBV business step of the hand-over's EPCIS event (default receiving)."""
        ...


# GS1 CBV 2.0 business steps (CBV §7.1) a hand-over's EPCIS event may carry
CBV_BIZ_STEPS = frozenset(
    {
        "accepting", "arriving", "assembling", "collecting", "consigning", "departing",
        "holding", "inspecting", "loading", "picking", "receiving", "shipping",
        "staging_outbound", "stocking", "storing", "transporting", "unloading",
    }
)  # fmt: skip


def hand_over_steps(kit: LabelKit) -> tuple[str, ...]:
    """The family's chain of hand-over steps; () when it has no rule."""
    steps = getattr(kit, "hand_over_steps", None)
    return tuple(str(s) for s in steps()) if callable(steps) else ()


def judge_storage(kit: LabelKit, reading: Quantity) -> str | None:
    """The family's judgement of one storage log reading: the excursion's reason, or None."""
    judge = getattr(kit, "judge_storage", None)
    if not callable(judge):
        return None
    answer = judge(reading)
    return None if answer is None else str(answer)


def in_use_period(kit: LabelKit, design: Mapping[str, Any]) -> timedelta | None:
    """The family's in-use period of a prepared unit of this design; None: no limit."""
    period = getattr(kit, "in_use_period", None)
    if not callable(period):
        return None
    answer = period(design)
    return answer if isinstance(answer, timedelta) else None


def use_by(
    kit: LabelKit, design: Mapping[str, Any], prepared_at: datetime, made_at: datetime | None
) -> datetime | None:
    """When a unit prepared at `prepared_at` must have been used: the end of its in-use period
    (`in_use_period`), and no later than the end of the family's optional `shelf_life(design)`
    counted from `made_at` (its batch's end); None when neither applies. A family without
    `shelf_life` gets what `in_use_period` alone gives."""
    ends = []
    period = in_use_period(kit, design)
    if period is not None:
        ends.append(prepared_at + period)
    ask = getattr(kit, "shelf_life", None)
    shelf = ask(design) if callable(ask) and made_at is not None else None
    if isinstance(shelf, timedelta) and made_at is not None:
        ends.append(made_at + shelf)
    return min(ends) if ends else None


def declares_chain_identifier(kit: LabelKit) -> bool:
    """Whether the family checks a chain identifier of its own at every hand-over."""
    return callable(getattr(kit, "check_chain_identifier", None))


def chain_identifier(kit: LabelKit, design: Mapping[str, Any]) -> str | None:
    """The chain identifier the design carries; None when none (or the family has none)."""
    ask = getattr(kit, "chain_identifier", None)
    if not callable(ask):
        return None
    answer = ask(design)
    return None if answer is None else str(answer)


def check_chain_identifier(kit: LabelKit, expected: str, presented: str) -> str | None:
    """The family's reason why `presented` is not the chain's identifier; None when it is
    (and for a family without a chain identifier)."""
    check = getattr(kit, "check_chain_identifier", None)
    if not callable(check):
        return None
    answer = check(expected, presented)
    return None if answer is None else str(answer)


def hand_over_biz_step(kit: LabelKit, from_step: str, to_step: str) -> str:
    """The CBV business step of a hand-over's EPCIS event: the family's, when it names one
    of CBV's, else receiving (the receiving side accepted the unit)."""
    ask = getattr(kit, "hand_over_biz_step", None)
    answer = str(ask(from_step, to_step)) if callable(ask) else "receiving"
    return answer if answer in CBV_BIZ_STEPS else "receiving"
