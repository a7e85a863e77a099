"""A batch's laboratory results: entered by the analyst, e-signed, validated by the family.

The laboratory reports results some time after the batch is made (or while it is being made).
The analyst (QA or a QP: `Permission.LAB_RESULT_ENTER`) enters one or more results at once
(test key -> value), names the method or reference, and signs the entry (one e-signature). The
product's family validates the keys and values (`quality.kit.LabResultsKit`, a refusal names
`lab_results.<key>`); the core never knows what a key means. Each result is its own row: the
batch record's measurement document is never rewritten. A result already entered is corrected
by a new signed entry with its reason (a new row naming the one it supersedes; the audit trail
keeps both). When the QP's review is waiting, the release proposal is evaluated again on the
evidence with the results in force, in the same transaction.

Once the QP has released or rejected the batch its laboratory results are closed: a result that
was pending at release is entered through its follow-up (quality/followup.py), which is then
the one source of it. A result entered before release is not pending at release.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy import select

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.designs import FamilyRegistry
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    SignatureService,
    audit,
    authorize,
)
from nearfab.masterfiles import MasterFileService
from nearfab.production import BatchStatus, ProductionService
from nearfab.quality.kit import LabResultsKit, lab_results_kit, release_kit
from nearfab.quality.models import LabResult
from nearfab.quality.records import refused_on_batch, sign_for_batch
from nearfab.quality.signedrows import SignedResult
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.production import BatchRecord

RECORD_TYPE = "lab_results"  # what the analyst's signature is on: one entry
ENTERED_BY = "results entered by"
METHOD_MAX = 500
MAX_RESULTS = 50  # results in one entry
OPEN = frozenset({BatchStatus.IN_PROGRESS.value, BatchStatus.COMPLETED.value})
# the proposal evaluated again with the results in force (QualityService.reevaluate)
Reevaluate = Callable[[UnitOfWork, Actor, "BatchRecord", str], object]


class LabResults:
    """`QualityService.lab_results`: the laboratory's results of a batch."""

    def __init__(
        self,
        production: ProductionService,
        master_files: MasterFileService,
        signatures: SignatureService,
        families: FamilyRegistry,
        reevaluate: Reevaluate,
    ) -> None:
        self._production = production
        self._master_files = master_files
        self._signatures = signatures
        self._families = families
        self._reevaluate = reevaluate

    def kit(self, uow: UnitOfWork, batch: BatchRecord) -> LabResultsKit | None:
        """The batch's family's laboratory-results part (None: it takes none)."""
        family = self._master_files.get(uow, batch.master_file_id).product_family
        return lab_results_kit(release_kit(self._families, family))

    # --- entering ------------------------------------------------------------------------------
    def enter(
        self,
        uow: UnitOfWork,
        actor: Actor,
        batch_id: str,
        *,
        results: Mapping[str, Any],
        method: str,
        password: str,
        meaning: str = ENTERED_BY,
        reason: str | None = None,
        username: str | None = None,
        totp: str | None = None,
    ) -> str:
        """Enter (e-signed by the analyst) one or more results of the batch's laboratory
        testing; returns the entry's id. A key already entered is a correction and needs its
        `reason`. Refused once the batch is released, rejected or failed; every refusal is
        audited on the batch, nothing of it kept."""
        batch = self._production.get(uow, batch_id)
        key, site_id = batch.id, batch.site_id
        with refused_on_batch(uow, actor, key, site_id):
            authorize(actor, Permission.LAB_RESULT_ENTER, site_id=site_id)
            self._check_open(batch)
            kit = self.kit(uow, batch)
            if kit is None:
                raise ValidationFailed(
                    f"batch {batch.batch_number}'s product takes no laboratory results",
                    field="lab_results",
                )
            if not isinstance(results, Mapping) or not results:
                raise ValidationFailed(
                    "an entry needs at least one result (test key -> value); the product's"
                    f" laboratory reports: {', '.join(kit.lab_result_keys)}",
                    field="lab_results",
                )
            if len(results) > MAX_RESULTS:
                raise ValidationFailed(
                    f"an entry holds at most {MAX_RESULTS} results", field="lab_results"
                )
            checked = kit.check_lab_results({str(k): v for k, v in results.items()})
            text = (method or "").strip()
            if not text:
                raise ValidationFailed(
                    "a laboratory result needs its method or reference", field="method"
                )
            if len(text) > METHOD_MAX:
                raise ValidationFailed(
                    f"method has more than {METHOD_MAX} characters", field="method"
                )
            if not text.isprintable():  # NUL, line breaks, controls: not in a signed record
                raise ValidationFailed(
                    "method holds a control character (NUL, line break...)", field="method"
                )
            why = (reason or "").strip() or None
            current = self.in_force_rows(uow, batch.id)
            corrected = [k for k in checked if k in current]
            if corrected and why is None:
                raise Refused(
                    f"{', '.join(corrected)} of batch {batch.batch_number} already entered; a "
                    "second entry is a correction and needs its reason",
                    field="reason",
                    code="result_already_entered",
                )
            if corrected and all(
                k in current and current[k].value == v and current[k].method == text
                for k, v in checked.items()
            ):
                raise Refused(
                    "the correction repeats the results in force; nothing to correct",
                    field="lab_results",
                    code="nothing_to_correct",
                )
            entry_id = new_id("lre")
            now = uow.clock.now()
            rows = [
                LabResult(
                    id=new_id("lab"),
                    entry_id=entry_id,
                    batch_id=batch.id,
                    site_id=site_id,
                    key=k,
                    version=current[k].version + 1 if k in current else 1,
                    value=v,
                    method=text,
                    entered_by=actor.user_id,
                    entered_by_name=actor.full_name,
                    entered_at=now,
                    signature_id="",
                    supersedes_id=current[k].id if k in current else None,
                    reason=why,
                )
                for k, v in checked.items()
            ]
            uow.session.add_all(rows)
            uow.flush()
            for row in rows:  # signed as stored: the values as the database gives them back
                uow.session.refresh(row)
            sig = sign_for_batch(
                self._signatures,
                self._master_files,
                uow,
                actor,
                batch,
                password=password,
                meaning=meaning,
                record_type=RECORD_TYPE,
                record_id=entry_id,
                content=entry_content(rows),
                username=username,
                totp=totp,
            )
            for row in rows:
                row.signature_id, row.entered_by_name = sig.id, sig.signer_name
            uow.flush()
            for row in rows:
                audit(
                    uow,
                    actor,
                    AuditAction.CREATE,
                    "lab_result",
                    row.id,
                    old=(
                        {"id": current[row.key].id, "value": current[row.key].value}
                        if row.key in current
                        else None
                    ),
                    new={
                        "batch_id": batch.id,
                        "entry_id": entry_id,
                        "key": row.key,
                        "value": row.value,
                        "method": text,
                        "signature_id": sig.id,
                        "supersedes_id": row.supersedes_id,
                    },
                    reason=why or "laboratory result entered",
                    site_id=site_id,
                )
            self._production.add_step(
                uow,
                actor,
                batch,
                "lab_results_entered",
                {
                    "entry_id": entry_id,
                    "results": sorted(checked),
                    "signature_id": sig.id,
                    **({"corrects": sorted(corrected), "reason": why} if corrected else {}),
                },
            )
            self._reevaluate(
                uow,
                actor,
                batch,
                f"laboratory results {'corrected' if corrected else 'entered'}: "
                + ", ".join(sorted(checked)),
            )
            uow.flush()  # two entries of the same result at once: the loser fails here, audited
        uow.commit()
        return entry_id

    @staticmethod
    def _check_open(batch: BatchRecord) -> None:
        if batch.status in OPEN:
            return
        if batch.status == BatchStatus.FAILED.value:
            raise Refused(
                f"batch {batch.batch_number} failed; it takes no laboratory results",
                field="batch_id",
                code="batch_failed",
            )
        raise Refused(
            f"batch {batch.batch_number} is {batch.status}: its laboratory results closed with "
            "the QP's decision. A result pending at release is entered through its follow-up "
            "(POST /api/v1/batches/{id}/followups/{test}/result)",
            field="batch_id",
            code="batch_dispositioned",
        )

    # --- reading -------------------------------------------------------------------------------
    def rows(self, uow: UnitOfWork, batch_id: str) -> list[LabResult]:
        """Every result of the batch, by key, each correction after what it supersedes."""
        return list(
            uow.session.scalars(
                select(LabResult)
                .where(LabResult.batch_id == batch_id)
                .order_by(LabResult.key, LabResult.version)
            )
        )

    @overload
    def in_force_rows(self, uow: UnitOfWork, batch_id: str) -> dict[str, LabResult]: ...

    @overload
    def in_force_rows(
        self, uow: UnitOfWork, batch_id: str, rows: Iterable[SignedResult]
    ) -> dict[str, SignedResult]: ...

    def in_force_rows(
        self, uow: UnitOfWork, batch_id: str, rows: Iterable[SignedResult] | None = None
    ) -> dict[str, LabResult] | dict[str, SignedResult]:
        """Key -> the result in force (its latest version). `rows`: every result of the batch
        as `rows` orders them, when the caller read them already (quality/signedrows.py)."""
        if rows is not None:
            given: dict[str, SignedResult] = {}
            for result in rows:
                given[result.key] = result  # ordered by version
            return given
        latest: dict[str, LabResult] = {}
        for row in self.rows(uow, batch_id):
            latest[row.key] = row  # ordered by version
        return latest

    def in_force(self, uow: UnitOfWork, batch_id: str) -> dict[str, Any]:
        """Key -> value of the results in force."""
        return {k: row.value for k, row in self.in_force_rows(uow, batch_id).items()}

    def evidence(self, uow: UnitOfWork, batch: BatchRecord) -> dict[str, Any]:
        """The measurement document the family's release tests read: the batch record's, with
        the laboratory's results in force where the family puts them."""
        measurements = dict(batch.measurements or {})
        results = self.in_force(uow, batch.id)
        if not results:
            return measurements
        kit = self.kit(uow, batch)
        return kit.with_lab_results(measurements, results) if kit is not None else measurements

    def signed_part(
        self, uow: UnitOfWork, batch_id: str, rows: Iterable[SignedResult] | None = None
    ) -> list[dict[str, Any]]:
        """The results in force as a QP's decision is bound to them (empty: none)."""
        force = (
            self.in_force_rows(uow, batch_id)
            if rows is None
            else self.in_force_rows(uow, batch_id, rows)
        )
        return [
            {"id": row.id, "key": row.key, "value": row.value, "signature_id": row.signature_id}
            for row in force.values()
        ]

    def row_valid(self, uow: UnitOfWork, row: LabResult) -> bool:
        """Whether the analyst's signature still matches the entry the row came in."""
        entry = list(
            uow.session.scalars(select(LabResult).where(LabResult.entry_id == row.entry_id))
        )
        sig = next(
            (
                s
                for s in self._signatures.signatures_for(uow, RECORD_TYPE, row.entry_id)
                if s.id == row.signature_id
            ),
            None,
        )
        return sig is not None and self._signatures.is_valid(sig, entry_content(entry))

    def batch_results(self, uow: UnitOfWork, actor: Actor, batch_id: str) -> dict[str, Any]:
        """The batch's laboratory results (`schemas.LabResultsOut`), for staff who read it."""
        batch = self._production.get(uow, batch_id)
        authorize(actor, Permission.BATCH_READ, site_id=batch.site_id)
        return self.view(uow, batch)

    def view(self, uow: UnitOfWork, batch: BatchRecord) -> dict[str, Any]:
        """The one shape, `schemas.LabResultsOut`."""
        kit = self.kit(uow, batch)
        force = {row.id for row in self.in_force_rows(uow, batch.id).values()}
        valid: dict[str, bool] = {}
        rows = []
        for row in self.rows(uow, batch.id):
            if row.entry_id not in valid:
                valid[row.entry_id] = self.row_valid(uow, row)
            rows.append(
                {
                    "id": row.id,
                    "entry_id": row.entry_id,
                    "key": row.key,
                    "version": row.version,
                    "value": row.value,
                    "method": row.method,
                    "entered_by": row.entered_by,
                    "entered_by_name": row.entered_by_name,
                    "entered_at": row.entered_at.isoformat(),
                    "signature_id": row.signature_id,
                    "signature_valid": valid[row.entry_id],
                    "supersedes_id": row.supersedes_id,
                    "reason": row.reason,
                    "in_force": row.id in force,
                }
            )
        return {
            "batch_id": batch.id,
            "batch_number": batch.batch_number,
            "site_id": batch.site_id,
            "status": batch.status,
            "keys": dict(kit.lab_result_keys) if kit is not None else {},
            "in_force": self.in_force(uow, batch.id),
            "results": rows,
        }


def typed_value(text: str) -> Any:
    """A result typed on a form or a command line: JSON where it reads as JSON (a number, an
    object such as {"a": 0.9}), else the text itself (e.g. a word such as negative)."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except ValueError:
        return stripped


def entry_content(rows: list[LabResult]) -> dict[str, Any]:
    """What the analyst signs: the entry's results, the method, what each corrects and why."""
    first = rows[0]
    ordered = sorted(rows, key=lambda r: r.key)
    return {
        "batch_id": first.batch_id,
        "entry_id": first.entry_id,
        "method": first.method,
        "results": {r.key: r.value for r in ordered},
        "supersedes": {r.key: r.supersedes_id for r in ordered if r.supersedes_id},
        "reason": first.reason,
    }
