"""The identity contracts every surface shares: one e-signature input, and one shape for a
signature and for an audit row on output. The API (as `response_model`), the web pages (as
`.model_dump()` dicts), the CLI `--json` and the record exports (JSON and PDF) all build them
here, so what an inspector sees cannot differ between them (21 CFR 11.50, EU GMP Annex 11 §8)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from nearfab.common.schemas import Day, Out, Timestamp

if TYPE_CHECKING:
    from nearfab.identity.models import AuditEntry, Signature


def _utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with its zone (`+00:00`); a naive time is taken as UTC."""
    at = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat()


class ESignatureIn(BaseModel):
    """The components of an electronic signature (21 CFR 11.200(a)): the password, the stated
    meaning, the user ID typed again (needed at the first signing of a session) and the
    authenticator code when a site or master file demands it. Routes that sign something
    inherit from it (keeping the JSON flat) and may give `meaning` a default."""

    password: str = Field(description="The signer's password, typed again for this signature")
    meaning: str = Field(description="What the signature means, e.g. 'performed by'")
    username: str | None = Field(
        default=None,
        description="The signer's user ID: needed at the first signing of a session "
        "(21 CFR 11.200(a)(1))",
    )
    totp: str | None = Field(
        default=None, description="The authenticator code, when the site or master file asks"
    )

    def signing(self) -> dict[str, Any]:
        """The components as the keyword arguments the signing services take."""
        return {
            "password": self.password,
            "meaning": self.meaning,
            "username": self.username,
            "totp": self.totp,
        }


class SignatureOut(Out):
    """A signature's manifestation (21 CFR 11.50): printed name, date and time with its zone,
    meaning, and what it binds (11.70)."""

    id: str
    signer_id: str
    printed_name: str
    meaning: str
    signed_at: str = Field(description="ISO 8601, UTC, with zone")
    signed_at_display: str = Field(description="e.g. 2026-01-31 14:05:09 UTC")
    time_zone: str = "UTC"
    record_type: str
    record_id: str
    record_hash: str
    signature_hash: str | None
    components: str | None = Field(
        default=None, description="What the signer gave, e.g. 'username+password+totp'"
    )
    valid_for_current_content: bool | None = Field(
        default=None,
        description="True: the record still hashes to what was signed and the signature row "
        "is unchanged; False: it does not; null: not checked",
    )

    @classmethod
    def of(cls, sig: Signature, *, valid: bool | None = None) -> SignatureOut:
        at = sig.signed_at if sig.signed_at.tzinfo else sig.signed_at.replace(tzinfo=UTC)
        at = at.astimezone(UTC)
        return cls(
            id=sig.id,
            signer_id=sig.signer_id,
            printed_name=sig.signer_name,
            meaning=sig.meaning,
            signed_at=at.isoformat(),
            signed_at_display=at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            record_type=sig.record_type,
            record_id=sig.record_id,
            record_hash=sig.record_hash,
            signature_hash=getattr(sig, "signature_hash", None),
            components=getattr(sig, "components", None),
            valid_for_current_content=valid,
        )


class AuditEntryOut(Out):
    """One audit-trail row: who (id and name), what, when (UTC, with zone), the record, the
    values before and after, why, and its place in the hash chain."""

    id: int
    seq: int = Field(description="Position in the hash chain")
    at: str = Field(description="ISO 8601, UTC, with zone")
    actor_id: str
    actor: str = Field(description="The actor's printed name")
    action: str
    entity_type: str
    entity_id: str
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    reason: str | None = None
    site_id: str | None = None
    prev_hash: str | None = None
    row_hash: str | None = None

    @classmethod
    def of(cls, r: AuditEntry) -> AuditEntryOut:
        return cls(
            id=r.id,
            seq=r.seq,
            at=_utc_iso(r.at),
            actor_id=r.actor_id,
            actor=r.actor_name,
            action=r.action,
            entity_type=r.entity_type,
            entity_id=r.entity_id,
            old=r.old,
            new=r.new,
            reason=r.reason,
            site_id=r.site_id,
            prev_hash=r.prev_hash,
            row_hash=r.row_hash,
        )


class AuditBadRowOut(Out):
    """A row (or a checkpoint) where the audit chain is broken, and why."""

    seq: int | None
    id: int | None
    entity_type: str | None
    entity_id: str | None
    problem: str = Field(
        description="edited | deleted | deleted before it | inserted | reordered | ..."
    )
    detail: str


class AuditCheckpointOut(Out):
    """A signed checkpoint of the audit head (the ledger heads it also signs are in its
    exported file, not here)."""

    id: int | None = Field(description="null: not a checkpoint held in the database")
    source: str = Field(description="database | file | file mark")
    seq: int
    head_hash: str
    at: Timestamp
    keyed_from: int | None
    key_id: str


class AuditCheckpointFileOut(AuditCheckpointOut):
    """The exported checkpoint file a verification was compared with."""

    same_key: bool = Field(description="Signed with this installation's audit key")
    marks: int = Field(description="How many exported (seq, hash) marks the file holds")


class AuditChainReportOut(Out):
    """The audit-chain check: hashes, keyed MACs and links of every row, compared with every
    signed checkpoint (and an exported file, when one was given)."""

    ok: bool
    rows_checked: int
    head_seq: int
    head_hash: str
    first_bad: AuditBadRowOut | None
    problems: list[AuditBadRowOut]
    keyed: bool = Field(description="Every row's MAC was checked with the audit key")
    checkpoint: AuditCheckpointOut | None = Field(description="The last signed checkpoint")
    anchored_seq: int = Field(description="Rows up to here match a signed checkpoint")
    unanchored_rows: int = Field(description="Rows after it: no checkpoint covers them yet")
    against: AuditCheckpointFileOut | None
    sealed_rows: int = Field(
        0,
        description="Rows of a key epoch whose audit key this node does not hold (before its "
        "rekey): sealed by the rekey row, their MACs not checked",
    )


class PatientIdentityOut(Out):
    """A patient's identifying data as the first prescription naming them gave it, decrypted
    from the orders' identity vault (read by the roles that need it; every read is audited)."""

    name: str | None
    identifiers: list[str] = Field(
        description="Business identifiers as system|value (e.g. an NHS number)"
    )
    birth_date: Day | None
    reference: str = Field(description="The sender's reference, e.g. Patient/123")
    display: str | None


def signature_out(sig: Signature, *, valid: bool | None = None) -> dict[str, Any]:
    """`SignatureOut` as a plain JSON-ready dict (pages, CLI, exports)."""
    return SignatureOut.of(sig, valid=valid).model_dump(mode="json")


def audit_entry_out(r: AuditEntry) -> dict[str, Any]:
    """`AuditEntryOut` as a plain JSON-ready dict (pages, CLI, exports)."""
    return AuditEntryOut.of(r).model_dump(mode="json")
