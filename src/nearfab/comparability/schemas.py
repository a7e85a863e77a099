"""What the comparability use cases take and give (API, pages, CLI --json alike)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from nearfab.common.schemas import Out, Timestamp

LIMIT = 1e12  # a measured value's magnitude: sums and squares stay finite


class RoundIn(BaseModel):
    master_file_code: str = Field(min_length=1, max_length=64)
    attribute: str = Field(min_length=1, max_length=64, description="what the sites measure")
    unit: str = Field(min_length=1, max_length=32)
    reference: str = Field(
        min_length=1, max_length=500, description="the blind reference sample or print sent"
    )
    site_ids: list[str] = Field(
        min_length=3, max_length=200, description="sites (ids or codes) taking part"
    )
    assigned_value: float | None = Field(
        default=None,
        ge=-LIMIT,
        le=LIMIT,
        description="a known reference value; else Algorithm A's robust mean",
    )
    sd_pt: float | None = Field(
        default=None, gt=0, le=LIMIT, description="σ for proficiency; else Algorithm A's robust sd"
    )


class ResultIn(BaseModel):
    site_id: str = Field(min_length=1, max_length=64, description="the site (id or code) reporting")
    value: float = Field(ge=-LIMIT, le=LIMIT)


class CapaCloseIn(BaseModel):
    """Closing the CAPA of a suspension, e-signed by a QP of the control site."""

    capa_reference: str = Field(min_length=1, max_length=100)
    summary: str = Field(min_length=1, max_length=4000)
    password: str
    meaning: str = "CAPA closed: site may make the master file again"
    username: str | None = None
    totp: str | None = None


class ResultOut(Out):
    id: str
    site_id: str
    site_code: str
    value: float
    entered_at: Timestamp
    entered_by: str
    z: float | None
    verdict: str | None


class RoundOut(Out):
    id: str
    master_file_code: str
    attribute: str
    unit: str
    reference: str
    site_ids: list[str]
    status: str
    assigned_value: float | None
    sd_pt: float | None
    robust_mean: float | None
    robust_sd: float | None
    opened_at: Timestamp
    scored_at: Timestamp | None
    results: list[ResultOut]


class SuspensionOut(Out):
    id: str
    site_id: str
    site_code: str
    master_file_code: str
    round_id: str
    z: float
    status: str
    opened_at: Timestamp
    capa_reference: str | None
    capa_summary: str | None
    closed_at: Timestamp | None
    closed_by: str | None
    signature_id: str | None


class TostOut(Out):
    difference: float
    margin: float
    ci_low: float
    ci_high: float
    p_value: float
    equivalent: bool


class GroupCapabilityOut(Out):
    cpk: float
    cpk_low: float
    cpk_high: float
    lsl: float | None
    usl: float | None


class GroupOut(Out):
    """One site (or machine, material lot, month) for one attribute, against the rest."""

    group: str
    label: str
    site_id: str | None
    n: int
    batches: int
    mean: float
    sd: float | None
    lcl: float | None
    ucl: float | None
    outside_limits: bool
    run_of_eight_at: str | None  # the batch number at which 8 batch means sat on one side
    tost: TostOut | None
    capability: GroupCapabilityOut | None
    flags: list[str]


class BatchPointOut(Out):
    batch_number: str
    group: str
    finished_at: Timestamp
    mean: float


class AttributeOut(Out):
    name: str
    label: str
    unit: str
    margin: float | None
    centre: float | None
    sigma: float | None
    groups: list[GroupOut]
    points: list[BatchPointOut]


class MspcOut(Out):
    group: str
    label: str
    t2: float
    f: float
    df1: int
    df2: int
    p_value: float
    flagged: bool


class ReportOut(Out):
    master_file_code: str
    by: str
    alpha: float
    min_cpk: float
    margins_from: str  # "master file" or "none set"
    batches: int
    attributes: list[AttributeOut]
    mspc: list[MspcOut]
    flagged: list[str]  # groups drifting from the network, with the reason
    suspensions: list[SuspensionOut]
