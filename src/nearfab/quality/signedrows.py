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
columns the signature binds. Every part is read as plain columns into small frozen records
(`SignedStep`, `SignedDeviation`, `SignedRequest`, `SignedResult`: what the signature binds,
and what decides whether it binds it), not as ORM entities: building entities for them was a
large part of a first scan's QP signature check (docs/performance.md, "Eighth pass")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True)
class SignedDeviation:
    """A deviation as the release signature binds it (and its kind, which says whether it
    does: a result failing after release opens one the signature does not bind)."""

    id: str
    kind: str
    description: str
    step_code: str | None
    opened_at: datetime  # with the id, the order they are bound in


@dataclass(frozen=True)
class SignedRequest:
    """An exceptional-release request as the release signature binds it
    (`ExceptionalReleases.signed_part`), and the QP signature that completed it, if any."""

    id: str
    physician_signature_id: str
    requested_by: str
    out_of_specification: list[Any]
    circumstances: str
    qp_signature_id: str | None


@dataclass(frozen=True)
class SignedResult:
    """A laboratory result as the release signature binds it (`LabResults.signed_part`)."""

    id: str
    key: str
    value: Any
    signature_id: str
    version: int  # which of the key's results is in force: the latest


_DEVIATION_FIELDS = tuple(SignedDeviation.__dataclass_fields__)
_REQUEST_FIELDS = tuple(SignedRequest.__dataclass_fields__)
_RESULT_FIELDS = tuple(SignedResult.__dataclass_fields__)
_SIGNOFFS = step_signoff_view()
_DEVIATION = Deviation.__table__.c
_REQUEST_T = ExceptionalRelease.__table__.c
_RESULT = LabResult.__table__.c
# built once (the statement is immutable): plain columns, each part's under a prefix of its
# own, read as tuples (no ORM objects: a first scan of a batch at verification reads these)
_SIGNED_ROWS = (
    select(
        _PARTS.c.part,
        *(_SIGNOFFS.c[name].label(f"step_{name}") for name in _STEP_FIELDS),
        *(_DEVIATION[name].label(f"deviation_{name}") for name in _DEVIATION_FIELDS),
        *(_REQUEST_T[name].label(f"request_{name}") for name in _REQUEST_FIELDS),
        *(_RESULT[name].label(f"result_{name}") for name in _RESULT_FIELDS),
    )
    .select_from(_PARTS)
    .outerjoin(_SIGNOFFS, and_(_PARTS.c.part == _STEPS, _SIGNOFFS.c.batch_id == _BATCH))
    .outerjoin(
        Deviation.__table__, and_(_PARTS.c.part == _DEVIATIONS, _DEVIATION.batch_id == _BATCH)
    )
    .outerjoin(
        ExceptionalRelease.__table__,
        and_(_PARTS.c.part == _REQUEST, _REQUEST_T.batch_id == _BATCH),
    )
    .outerjoin(LabResult.__table__, and_(_PARTS.c.part == _RESULTS, _RESULT.batch_id == _BATCH))
    .order_by(
        _PARTS.c.part,
        _SIGNOFFS.c.position,
        _DEVIATION.opened_at,
        _DEVIATION.id,
        _RESULT.key,
        _RESULT.version,
    )
)
# where each part's columns sit in a row (after `part`)
_S0 = 1
_D0 = _S0 + len(_STEP_FIELDS)
_Q0 = _D0 + len(_DEVIATION_FIELDS)
_R0 = _Q0 + len(_REQUEST_FIELDS)
_END = _R0 + len(_RESULT_FIELDS)


@dataclass(frozen=True)
class SignedRows:
    """A batch's sign-offs (by position), deviations (by opening, then id; every kind: the
    caller leaves out what the signature does not bind), exceptional-release request and
    laboratory results (every version, by key then version: `LabResults.in_force_rows`
    picks the ones in force), as plain values."""

    steps: list[SignedStep]
    deviations: list[SignedDeviation]
    exceptional: SignedRequest | None
    results: list[SignedResult]


def signed_rows(session: Session, batch_id: str) -> SignedRows:
    steps: list[SignedStep] = []
    deviations: list[SignedDeviation] = []
    exceptional: SignedRequest | None = None
    results: list[SignedResult] = []
    if session.autoflush:
        # the session's pending changes first, as an ORM query's autoflush did (a statement of
        # plain columns does not flush): signing reads what its own transaction added
        session.flush()
    # the session's own connection (its transaction), without the ORM's execution layer
    for row in session.connection().execute(_SIGNED_ROWS, {"batch_id": batch_id}):
        if row[_S0] is not None:  # the sign-off's id
            steps.append(SignedStep(*row[_S0:_D0]))
        elif row[_D0] is not None:
            deviations.append(SignedDeviation(*row[_D0:_Q0]))
        elif row[_Q0] is not None:
            exceptional = SignedRequest(*row[_Q0:_R0])
        elif row[_R0] is not None:
            results.append(SignedResult(*row[_R0:_END]))
    return SignedRows(steps, deviations, exceptional, results)
