"""The rows a QP's release signature binds besides the batch record and its review, read in
one statement: the batch's manual-step sign-offs, its deviations, its exceptional-release
request and its laboratory results (`QualityService._signed_content`). Signing and every later
check of the signature read them here, in the same order as the four queries this replaces
(sign-offs by position, deviations by opening time then id, results by key then version,
ordered by the database as before), so signatures made before still verify.

One statement instead of four matters at verification: the first scan of a batch in a
server process checks the QP's signature, and each round trip costs more than its rows
(docs/performance.md, "Fifth pass"). The three tables are read side by side, not joined to
each other: a driving list of parts (1 sign-offs, 2 deviations, 3 the request, 4 results) is
outer-joined to each table on its own part only, so a row carries one of them (or none: a
part with no rows still gives one row of NULLs), never a product of their counts. The
sign-offs are production's: they come through its read view (`step_signoff_view`) as the
columns the signature binds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, and_, bindparam, literal_column, select, union_all
from sqlalchemy.orm import Session

from nearfab.production.reads import step_signoff_view
from nearfab.quality.models import Deviation, ExceptionalRelease, LabResult

_STEPS, _DEVIATIONS, _REQUEST, _RESULTS = 1, 2, 3, 4
_PARTS = union_all(
    *(
        select(literal_column(str(part)).label("part"))
        for part in (_STEPS, _DEVIATIONS, _REQUEST, _RESULTS)
    )
).subquery("signed_part")
_BATCH: BindParameter[str] = bindparam("batch_id")


@dataclass(frozen=True)
class SignedStep:
    """A manual-step sign-off as the release signature binds it (production's read view)."""

    id: str
    code: str
    position: int
    entry: dict[str, Any] | None
    performed_by: str
    signature_id: str
    deviation_id: str | None
    verified_by: str | None
    verify_signature_id: str | None


_STEP_FIELDS = tuple(SignedStep.__dataclass_fields__)
_SIGNOFFS = step_signoff_view()
# built once (the statement is immutable)
_SIGNED_ROWS = (
    select(
        _PARTS.c.part,
        Deviation,
        ExceptionalRelease,
        LabResult,
        *(_SIGNOFFS.c[name].label(f"step_{name}") for name in _STEP_FIELDS),
    )
    .select_from(_PARTS)
    .outerjoin(_SIGNOFFS, and_(_PARTS.c.part == _STEPS, _SIGNOFFS.c.batch_id == _BATCH))
    .outerjoin(Deviation, and_(_PARTS.c.part == _DEVIATIONS, Deviation.batch_id == _BATCH))
    .outerjoin(
        ExceptionalRelease,
        and_(_PARTS.c.part == _REQUEST, ExceptionalRelease.batch_id == _BATCH),
    )
    .outerjoin(LabResult, and_(_PARTS.c.part == _RESULTS, LabResult.batch_id == _BATCH))
    .order_by(
        _PARTS.c.part,
        _SIGNOFFS.c.position,
        Deviation.opened_at,
        Deviation.id,
        LabResult.key,
        LabResult.version,
    )
)


@dataclass(frozen=True)
class SignedRows:
    """A batch's sign-offs (by position), deviations (by opening, then id; every kind: the
    caller leaves out what the signature does not bind), exceptional-release request and
    laboratory results (every version, by key then version: `LabResults.in_force_rows`
    picks the ones in force)."""

    steps: list[SignedStep]
    deviations: list[Deviation]
    exceptional: ExceptionalRelease | None
    results: list[LabResult]


def signed_rows(session: Session, batch_id: str) -> SignedRows:
    steps: list[SignedStep] = []
    deviations: list[Deviation] = []
    exceptional: ExceptionalRelease | None = None
    results: list[LabResult] = []
    for _part, deviation, request, result, *step in session.execute(
        _SIGNED_ROWS, {"batch_id": batch_id}
    ):
        if step[0] is not None:  # the sign-off's id
            steps.append(SignedStep(*step))
        elif deviation is not None:
            deviations.append(deviation)
        elif request is not None:
            exceptional = request
        elif result is not None:
            results.append(result)
    return SignedRows(steps, deviations, exceptional, results)
