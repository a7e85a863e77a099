"""What a master-file draft must contain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from nearfab.common.gs1 import validate_gtin
from nearfab.common.schemas import Out, Timestamp


class CodeIn(BaseModel):
    """A medication coding the master file accepts: an ingredient (SNOMED CT substance, RxNorm
    IN), or a product it makes (RxNorm SCD/SBD, dm+d VMP/AMP, SNOMED CT clinical drug). A
    product code whose strength its family ships (families/solid_dose/codes) is checked
    against the dose at intake (docs/prescriptions.md, "Product codes")."""

    system: str = Field(min_length=1)
    code: str = Field(min_length=1)
    display: str | None = None


class ParameterLimit(BaseModel):
    target: float
    low: float
    high: float
    unit: str

    @field_validator("high")
    @classmethod
    def _ordered(cls, high: float, info: Any) -> float:
        low = info.data.get("low")
        target = info.data.get("target")
        if low is not None and not (low <= (target if target is not None else low) <= high):
            raise ValueError("limits must satisfy low <= target <= high")
        return high


# steps the platform records itself (production and quality write them in the batch record):
# a master file may list them among its steps, as machine steps, to fix their place
MACHINE_STEPS = frozenset(
    {"material_dispensed", "run_started", "handed_to_machine", "run_finished", "rtrt_evaluated"}
)
# what an entry field holds: free text, or a number in one of these units
ENTRY_KINDS = frozenset({"text", "g", "mg", "count", "%", "°C", "mm", "min"})


class RecordStepIn(BaseModel):
    """One step of the batch record, in master-file order. A manual step is performed and
    e-signed by a person, with the values of its `entry` fields; a critical one is verified
    and e-signed by a second person. A machine step is recorded by the platform."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    title: str = Field(min_length=1, max_length=200)
    manual: bool = True
    critical: bool = False
    # field name -> "text" or a unit ("g", "count", ...)
    entry: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> RecordStepIn:
        if not self.manual and self.code not in MACHINE_STEPS:
            raise ValueError(
                f"machine step {self.code!r} is not one the platform records "
                f"({', '.join(sorted(MACHINE_STEPS))})"
            )
        if not self.manual and (self.critical or self.entry):
            raise ValueError("a machine step has no critical entry: the platform records it")
        if self.critical and not self.entry:
            raise ValueError("a critical step needs entry fields for the second person to verify")
        for name, kind in self.entry.items():
            if not name or len(name) > 48:
                raise ValueError("entry field names have 1 to 48 characters")
            if kind not in ENTRY_KINDS:
                raise ValueError(
                    f"entry field {name!r}: {kind!r} is not one of {', '.join(sorted(ENTRY_KINDS))}"
                )
        return self


# what a master file's comparability section may name: the family's per-unit measurement as a
# percentage of its target, or a critical process parameter (docs/comparability.md)
MEASUREMENT_PCT = "measurement_pct"


class ComparabilityIn(BaseModel):
    """How the network's sites are held to one another for this product: the equivalence
    margin of each attribute (TOST), the confidence level, and the Cpk a site must show."""

    model_config = {"extra": "forbid"}

    margins: dict[str, float] = Field(min_length=1)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_cpk: float = Field(default=1.33, gt=0, le=10)

    @field_validator("margins")
    @classmethod
    def _positive(cls, margins: dict[str, float]) -> dict[str, float]:
        for name, margin in margins.items():
            if not margin > 0:
                raise ValueError(f"the margin of {name!r} must be above 0, got {margin!r}")
        return margins


class MasterFileIn(BaseModel):
    code: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    product_family: str = Field(min_length=1)
    accepted_codes: list[CodeIn] = Field(min_length=1)
    design_envelope: dict[str, Any]
    process_parameters: dict[str, ParameterLimit] = Field(min_length=1)
    cqa_specs: dict[str, Any]
    release_rule: dict[str, Any]
    material_code: str = Field(min_length=1)
    shelf_life_days: int = Field(gt=0, le=3650)
    storage: str = Field(min_length=1)
    gtin: str
    units_per_pack: int = Field(gt=0, le=1000)
    allowed_site_ids: list[str] = Field(min_length=1)
    record_steps: list[RecordStepIn] = Field(default_factory=list, max_length=50)
    comparability: ComparabilityIn | None = None
    # validated by the product family when drafted (orders.kit.DoseRuleKit)
    dose_rule: dict[str, Any] | None = None

    @field_validator("comparability")
    @classmethod
    def _comparability_names(cls, section: ComparabilityIn | None, info: Any) -> Any:
        if section is not None:
            known = {MEASUREMENT_PCT, *(info.data.get("process_parameters") or {})}
            for name in section.margins:
                if name not in known:
                    raise ValueError(
                        f"margins.{name} is neither {MEASUREMENT_PCT} nor a process "
                        f"parameter ({', '.join(sorted(known))})"
                    )
        return section

    @field_validator("record_steps")
    @classmethod
    def _unique_steps(cls, steps: list[RecordStepIn]) -> list[RecordStepIn]:
        codes = [s.code for s in steps]
        repeated = sorted({c for c in codes if codes.count(c) > 1})
        if repeated:
            raise ValueError(f"step codes must be unique: {', '.join(repeated)} repeated")
        return steps

    @field_validator("gtin")
    @classmethod
    def _gtin(cls, value: str) -> str:
        return validate_gtin(value)


class MasterFileOut(Out):
    """A master file version as the API shows it (draft, approved, effective or withdrawn)."""

    id: str
    code: str
    version: int
    title: str
    product_family: str
    status: str
    accepted_codes: list[Any]
    design_envelope: dict[str, Any]
    process_parameters: dict[str, Any]
    cqa_specs: dict[str, Any]
    release_rule: dict[str, Any]
    material_code: str
    shelf_life_days: int
    storage: str
    gtin: str
    units_per_pack: int
    allowed_site_ids: list[str]
    comparability: dict[str, Any] | None = None
    dose_rule: dict[str, Any] | None = None
    approved_at: Timestamp | None
    approval_signature_id: str | None
    effective_from: Timestamp | None


class MasterFileSigningPolicyOut(Out):
    id: str
    code: str
    version: int
    totp_for_signing: bool
