"""Master files: one versioned, QP-approved definition per product."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from nearfab.db import Base


class MasterFile(Base):
    __tablename__ = "master_files"
    __table_args__ = (UniqueConstraint("code", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # optimistic locking: an update that lost a race raises instead of overwriting
    row_version: Mapped[int] = mapped_column(server_default="1")
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012
    code: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    title: Mapped[str] = mapped_column(String(200))
    product_family: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    accepted_codes: Mapped[list[Any]]
    design_envelope: Mapped[dict[str, Any]]
    process_parameters: Mapped[dict[str, Any]]
    cqa_specs: Mapped[dict[str, Any]]
    release_rule: Mapped[dict[str, Any]]
    material_code: Mapped[str] = mapped_column(String(64))
    shelf_life_days: Mapped[int]
    storage: Mapped[str] = mapped_column(Text)
    gtin: Mapped[str] = mapped_column(String(14))
    units_per_pack: Mapped[int]
    allowed_site_ids: Mapped[list[Any]]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(64))
    approved_at: Mapped[datetime | None]
    approval_signature_id: Mapped[str | None] = mapped_column(String(32))
    effective_from: Mapped[datetime | None]
    # e-signatures on this master file need a TOTP code as well (not part of content())
    totp_for_signing: Mapped[bool] = mapped_column(default=False, server_default=false())
    # the ordered batch-record steps (manual ones are signed by a person; see production.md)
    record_steps: Mapped[list[Any] | None]
    # equivalence margins and capability the sites are held to (docs/comparability.md)
    comparability: Mapped[dict[str, Any] | None]
    # the family's rule adjusting a dose from observations (docs/dose-adjustment.md)
    dose_rule: Mapped[dict[str, Any] | None]

    def content(self) -> dict[str, Any]:
        """The approved content: what a QP's signature is bound to."""
        return {
            "code": self.code,
            "version": self.version,
            "title": self.title,
            "product_family": self.product_family,
            "accepted_codes": self.accepted_codes,
            "design_envelope": self.design_envelope,
            "process_parameters": self.process_parameters,
            "cqa_specs": self.cqa_specs,
            "release_rule": self.release_rule,
            "material_code": self.material_code,
            "shelf_life_days": self.shelf_life_days,
            "storage": self.storage,
            "gtin": self.gtin,
            "units_per_pack": self.units_per_pack,
            "allowed_site_ids": self.allowed_site_ids,
            # only when listed: versions approved before steps existed keep their hash
            **({"record_steps": self.record_steps} if self.record_steps else {}),
            **({"comparability": self.comparability} if self.comparability else {}),
            **({"dose_rule": self.dose_rule} if self.dose_rule else {}),
        }

    def accepts(self, system: str, code: str) -> bool:
        return any(c["system"] == system and c["code"] == code for c in self.accepted_codes)


class MasterFileQP(Base):
    """A Qualified Person assigned to certify the batches of one master file (every version of
    its code). Unassigning keeps the row, inactive; the audit trail keeps the history."""

    __tablename__ = "master_file_qps"
    __table_args__ = (UniqueConstraint("master_file_code", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    master_file_code: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    active: Mapped[bool]
    assigned_at: Mapped[datetime]
    assigned_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    unassigned_at: Mapped[datetime | None]
    unassigned_by: Mapped[str | None] = mapped_column(String(64))
