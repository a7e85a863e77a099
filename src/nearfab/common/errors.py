"""Domain errors. Each carries a machine-readable `code`, and a field name where one is at fault."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a user can cause. `code` is stable; `message` is for people."""

    code = "domain_error"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "message": self.message}


class ValidationFailed(DomainError, ValueError):
    """Bad input. Also a ValueError, so pydantic validators report it against their field."""

    code = "validation_failed"
    http_status = 422


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class InvalidTransition(DomainError):
    code = "invalid_transition"
    http_status = 409


class Refused(DomainError):
    """A rule a regulator or QP relies on says no (production, dispense, release...)."""

    code = "refused"
    http_status = 409


class Unauthenticated(DomainError):
    code = "unauthenticated"
    http_status = 401


class Forbidden(DomainError):
    code = "forbidden"
    http_status = 403


def require_reason(reason: str | None, action: str) -> str:
    """The stated reason for a change a QP relies on, or ValidationFailed naming `reason`."""
    if not reason or not reason.strip():
        raise ValidationFailed(f"{action} needs a reason", field="reason")
    return reason.strip()
