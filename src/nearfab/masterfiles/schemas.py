"""What a master-file draft must contain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from nearfab.common.gs1 import validate_gtin


class CodeIn(BaseModel):
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

    @field_validator("gtin")
    @classmethod
    def _gtin(cls, value: str) -> str:
        return validate_gtin(value)
