"""Labels: the content of a released pack's label, in its family's words."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nearfab.common.errors import NotFound, Refused
from nearfab.custody.enums import UnitStatus
from nearfab.custody.gs1 import make_identifier
from nearfab.custody.kit import LabelKit, declares_chain_identifier, label_details
from nearfab.custody.labels import LabelContent
from nearfab.custody.models import SerialUnit
from nearfab.custody.services.packs import Packs
from nearfab.custody.services.releasecheck import ReleaseCheck
from nearfab.uow import UnitOfWork

# the chain identifier the hand-overs check (HandOvers.expected_identifier)
ChainIdentifier = Callable[[UnitOfWork, LabelKit, Mapping[str, Any], SerialUnit], str | None]


class Labelling:
    def __init__(
        self, packs: Packs, release: ReleaseCheck, chain_identifier: ChainIdentifier | None = None
    ) -> None:
        self._packs = packs
        self._release = release
        self._chain_identifier = chain_identifier

    def labels(self, uow: UnitOfWork, unit_or_batch_id: str) -> list[LabelContent]:
        """Label content for one released pack, or for every pack of a released batch."""
        unit = uow.session.get(SerialUnit, unit_or_batch_id)
        if unit is not None:
            units = [unit]
        else:
            try:
                batch = self._packs.production.get(uow, unit_or_batch_id)
            except NotFound:
                raise NotFound(
                    f"no pack or batch {unit_or_batch_id!r}", field="unit_or_batch_id"
                ) from None
            units = self._packs.units_of_batch(uow, batch.id)
            if not units:
                raise Refused(
                    f"batch {batch.batch_number} has no serialised packs",
                    field="unit_or_batch_id",
                    code="not_serialised",
                )
        for u in units:
            if u.status not in (UnitStatus.RELEASED.value, UnitStatus.DISPENSED.value):
                raise Refused(
                    f"pack {u.serial} is {u.status}; labels are printed only for released packs",
                    field="unit_or_batch_id",
                    code="not_released",
                )
            self._release.require(uow, u, "unit_or_batch_id")
        return [self._label(uow, u) for u in units]

    def _label(self, uow: UnitOfWork, unit: SerialUnit) -> LabelContent:
        order = self._packs.orders.get(uow, unit.order_id)
        mf = self._packs.master_files.get(uow, order.master_file_id)
        patient = self._packs.orders.patient(uow, unit.patient_id)
        kit = self._packs.labels_kit(mf)
        dose = order.dose  # as the family accepted it (value and unit)
        design = order.design or {}
        # the label prints the identifier the hand-overs check: the prescription's, or the one
        # bound at the collection when the prescription named none
        bound = None
        if self._chain_identifier is not None and declares_chain_identifier(kit):
            bound = self._chain_identifier(uow, kit, design, unit)
        return LabelContent(
            identifier=make_identifier(unit.gtin, unit.serial, unit.batch_number, unit.expiry),
            product_name=kit.product_name(order.medication, dose),
            dose_text=kit.dose_text(dose, order.doses_per_day, unit.pack_index, unit.quantity),
            patient_ref=patient.ref,
            storage=mf.storage,
            details=label_details(kit, design, bound),
        )
