"""Shared building blocks: ids, clocks, errors, JSON canonicalisation. Imports no domain."""

from nearfab.common.canonical import canonical_json, sha256_hex, to_jsonable
from nearfab.common.clock import Clock, ManualClock, SystemClock, utcnow
from nearfab.common.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidTransition,
    NotFound,
    Refused,
    Unauthenticated,
    ValidationFailed,
)
from nearfab.common.ids import new_id, new_token

__all__ = [
    "Clock",
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidTransition",
    "ManualClock",
    "NotFound",
    "Refused",
    "SystemClock",
    "Unauthenticated",
    "ValidationFailed",
    "canonical_json",
    "new_id",
    "new_token",
    "sha256_hex",
    "to_jsonable",
    "utcnow",
]
