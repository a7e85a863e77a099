"""What scheduling asks of a product family about the collection: `CollectionKit`.

A family whose products are made from material collected from the patient (the optional
`collection(design)` of designs.registry) may also say what must be on record before the
collection (e.g. the patient's eligibility and consent) and how the collection names itself in
the family's chain of identity (the family's chain identifier, scanned from the collection's
label). The core keeps both generic: records are kinds named by the family, the identifier is
text the family checks. Both members are optional (read through the functions below); a family
without them requires nothing before the collection and binds no identifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class CollectionKit(Protocol):
    """Optional members of a ProductFamily that needs a collection."""

    def pre_collection_records(self, design: Mapping[str, Any]) -> tuple[str, ...]:
        """The kinds of record (e.g. "eligibility", "consent") a clinician signs for the order
        before its collection may be recorded; () when none."""
        ...

    def collection_identifier(
        self, design: Mapping[str, Any], presented: str, *, first: bool
    ) -> str:
        """The chain identifier scanned at collection, as the chain keeps it from then on.
        ValidationFailed when it is not one; Refused (code identity_mismatch) when the design
        names another and this is the order's `first` collection (a new collection after a
        failed run is a new donation: it binds its own)."""
        ...


@runtime_checkable
class LotChoiceKit(Protocol):
    """Optional member of a ProductFamily whose material lots are not interchangeable (e.g.
    each lot is one donor's, and an order is for one donor): which lots may make this design.
    A family without it takes any usable lot of the master file's material (earliest expiry
    first)."""

    def accepts_lot(self, design: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
        """Whether a lot with these (family-validated) attributes may make `design`."""
        ...


def lot_filter(family: Any, design: Mapping[str, Any]) -> Any:
    """The family's lot choice for `design` as a predicate on a lot's attributes, or None when
    the family has none (any usable lot)."""
    ask = getattr(family, "accepts_lot", None)
    if not callable(ask):
        return None
    return lambda attributes: bool(ask(design, attributes or {}))


def pre_collection_records(family: Any, design: Mapping[str, Any]) -> tuple[str, ...]:
    """The records the family requires before the collection; () for a family without any."""
    ask = getattr(family, "pre_collection_records", None)
    return tuple(str(k) for k in ask(design)) if callable(ask) else ()


def declares_collection_identifier(family: Any) -> bool:
    """Whether the family's collection is named by a chain identifier."""
    return callable(getattr(family, "collection_identifier", None))


def collection_identifier(
    family: Any, design: Mapping[str, Any], presented: str, *, first: bool = True
) -> str | None:
    """The family's check of the identifier scanned at collection (None: the family has none);
    `first`: the order's first collection (not one after a failed run)."""
    ask = getattr(family, "collection_identifier", None)
    return str(ask(design, presented, first=first)) if callable(ask) else None
