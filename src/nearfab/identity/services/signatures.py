"""Electronic signatures (21 CFR 11.50, 11.70, 11.100, 11.200; EU GMP Annex 11 §14).

- 11.200(a)(1): the first signing in a continuous session (a web session or an API token,
  `Actor.session_id`) needs both components, the user ID (typed username) and the password;
  later signings in the same session need the password. A signer without a session (a
  direct service call, the CLI) is identified by its entry point at each signing.
- A site (`sites.totp_for_signing`) or the caller (a master file's `totp_for_signing`) may
  demand a TOTP code as a third component.
- 11.50: each signature keeps the printed name, the date and time (UTC) and the meaning.
- 11.70: `record_hash` binds it to the record's content, `signature_hash` binds its own
  fields (signer, name, meaning, time, record type and id, record hash) together, so neither
  an edited record nor a signature row moved or edited in the database stays valid.
- Failed attempts are audited on the signer's account (`sign_failed`, committed even though
  the use case is rolled back) and count toward the account lockout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text

from nearfab.common.canonical import canonical_json, sha256_hex
from nearfab.common.errors import Refused, Unauthenticated, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor, record_hash
from nearfab.identity.models import Signature, User, UserSession
from nearfab.identity.schemas import signature_out
from nearfab.identity.services.audit import audit
from nearfab.identity.services.users import UserService
from nearfab.uow import UnitOfWork


def signature_hash(
    *,
    signer_id: str,
    signer_name: str,
    meaning: str,
    signed_at: datetime,
    record_type: str,
    record_id: str,
    record_hash: str,
) -> str:
    """SHA-256 of the canonical JSON of a signature's own fields (time as UTC ISO text)."""
    moment = signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=UTC)
    return sha256_hex(
        canonical_json(
            {
                "signer_id": signer_id,
                "signer_name": signer_name,
                "meaning": meaning,
                "signed_at": moment.astimezone(UTC).isoformat(),
                "record_type": record_type,
                "record_id": record_id,
                "record_hash": record_hash,
            }
        )
    )


# a signature row's fields as another node receives them (SignatureService.carried)
CARRIED = (
    "id",
    "signer_id",
    "signer_name",
    "meaning",
    "signed_at",
    "record_type",
    "record_id",
    "record_hash",
    "signature_hash",
    "components",
)


def hash_of(sig: Signature) -> str:
    return signature_hash(
        signer_id=sig.signer_id,
        signer_name=sig.signer_name,
        meaning=sig.meaning,
        signed_at=sig.signed_at,
        record_type=sig.record_type,
        record_id=sig.record_id,
        record_hash=sig.record_hash,
    )


def signature_dict(sig: Signature) -> dict[str, Any]:
    """A signature as shown on screen and in exports: printed name, date and time with its
    zone, meaning (21 CFR 11.50); the one shape, `SignatureOut`."""
    return signature_out(sig)


class SignatureService:
    """E-signatures: user ID and password (and TOTP when demanded) plus a stated meaning,
    bound to the record's hash."""

    def __init__(self, users: UserService) -> None:
        self._users = users

    @property
    def users(self) -> UserService:
        return self._users

    def sign(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        password: str,
        meaning: str,
        record_type: str,
        record_id: str,
        content: dict[str, Any],
        username: str | None = None,
        totp: str | None = None,
        require_totp: bool = False,
        site_id: str | None = None,
    ) -> Signature:
        """Add a signature to the current transaction; the caller commits it with the change.
        `site_id`: the site the record belongs to (its `totp_for_signing` is honoured);
        `require_totp`: the record itself demands TOTP (a master file's flag)."""
        if not meaning or not meaning.strip():
            raise ValidationFailed("a signature needs its meaning", field="meaning")
        user = uow.session.get(User, actor.user_id)
        if user is None or not user.active:
            raise Unauthenticated(
                "signature refused: the signer has no active account", field="password"
            )
        if user.locked_at is not None:
            raise self._users.locked_error(user)
        session = uow.session.get(UserSession, actor.session_id) if actor.session_id else None
        first_in_session = session is not None and session.first_signed_at is None
        components = []
        typed = (username or "").strip()
        if typed:
            if typed != user.username:
                self._failed(uow, actor, user, record_type, record_id, "user ID does not match")
            components.append("user_id")
        elif first_in_session:
            raise Unauthenticated(
                "the first signature in a session needs your user ID and your password",
                field="username",
                code="username_required",
            )
        if not password or not self._users.check_password(user, password):
            self._failed(uow, actor, user, record_type, record_id, "wrong password")
        components.append("password")
        if require_totp or self._site_demands_totp(uow, site_id):
            self._check_totp(uow, actor, user, totp, record_type, record_id)
            components.append("totp")
        user.failed_attempts = 0
        now = uow.clock.now()
        digest = record_hash(content)
        sig = Signature(
            id=new_id("sig"),
            signer_id=user.id,
            signer_name=user.full_name,
            meaning=meaning.strip(),
            signed_at=now,
            record_type=record_type,
            record_id=record_id,
            record_hash=digest,
            components="+".join(components),
            session_id=actor.session_id,
        )
        sig.signature_hash = hash_of(sig)
        uow.session.add(sig)
        if session is not None and session.first_signed_at is None:
            session.first_signed_at = now
        audit(
            uow,
            actor,
            AuditAction.SIGN,
            record_type,
            record_id,
            new={
                "signature_id": sig.id,
                "meaning": sig.meaning,
                "record_hash": sig.record_hash,
                "signature_hash": sig.signature_hash,
                "components": sig.components,
                "session_id": sig.session_id,
            },
            site_id=site_id,
        )
        return sig

    @staticmethod
    def _site_demands_totp(uow: UnitOfWork, site_id: str | None) -> bool:
        if site_id is None:
            return False
        # identity sits below network: the site's flag is read by name only
        flag = uow.session.execute(
            text("SELECT totp_for_signing FROM sites WHERE id = :id"), {"id": site_id}
        ).scalar_one_or_none()
        return bool(flag)

    def _check_totp(
        self,
        uow: UnitOfWork,
        actor: Actor,
        user: User,
        totp: str | None,
        record_type: str,
        record_id: str,
    ) -> None:
        if user.totp_enabled_at is None:
            raise Refused(
                "this record needs a TOTP code with the signature, and you have not enrolled "
                "an authenticator (My account)",
                field="totp",
                code="totp_not_enrolled",
            )
        if not (totp or "").strip():
            raise Unauthenticated(
                "this record needs your authenticator code with the signature",
                field="totp",
                code="totp_required",
            )
        step = self._users.totp_step_for(user, totp or "", uow.clock.now())
        if step is None:
            self._failed(uow, actor, user, record_type, record_id, "wrong authenticator code")
        user.totp_last_step = step  # a code works once

    def _failed(
        self,
        uow: UnitOfWork,
        actor: Actor,
        user: User,
        record_type: str,
        record_id: str,
        why: str,
    ) -> None:
        """Roll the attempt back, commit the failure (audit row, failure count, maybe the
        lock and its alert), then raise: the caller's own refusal row follows."""
        user_id = user.id
        uow.session.rollback()
        fresh = uow.session.get(User, user_id)
        locked = self._users.record_failure(
            uow,
            fresh,
            actor.username,
            action=AuditAction.SIGN_FAILED,
            why=why,
            actor=actor,
            # on the signer's account; the caller records its own refusal on the record
            about={"record_type": record_type, "record_id": record_id},
        )
        uow.session.commit()
        if locked and fresh is not None:
            raise self._users.locked_error(fresh)
        if why == "wrong authenticator code":
            raise Unauthenticated(
                "signature refused: the authenticator code does not match",
                field="totp",
                code="totp_invalid",
            )
        raise Unauthenticated(
            "signature refused: the user ID or password does not match the signer",
            field="password",
        )

    def signatures_for(self, uow: UnitOfWork, record_type: str, record_id: str) -> list[Signature]:
        stmt = (
            select(Signature)
            .where(Signature.record_type == record_type, Signature.record_id == record_id)
            .order_by(Signature.signed_at)
        )
        return list(uow.session.scalars(stmt))

    @staticmethod
    def is_valid(sig: Signature, content: dict[str, Any]) -> bool:
        """True while the record still hashes to what was signed AND the signature row is the
        one that was made (not moved to another record, its fields not edited)."""
        if sig.record_hash != record_hash(content):
            return False
        return sig.signature_hash is not None and sig.signature_hash == hash_of(sig)

    @staticmethod
    def describe(sig: Signature) -> dict[str, Any]:
        return signature_dict(sig)

    @staticmethod
    def carried(sig: Signature) -> dict[str, Any]:
        """A signature row as another node receives it (`carried_from`): every field its hash
        covers, its hashes, and how it was given; the time as UTC ISO text."""
        out = {name: getattr(sig, name) for name in CARRIED}
        moment = sig.signed_at if sig.signed_at.tzinfo else sig.signed_at.replace(tzinfo=UTC)
        out["signed_at"] = moment.astimezone(UTC).isoformat()
        return out

    def carried_from(
        self, uow: UnitOfWork, fields: dict[str, Any], *, record_type: str, record_id: str
    ) -> Signature:
        """A signature made at another node (the control site's QP release of this site's
        batch: replication/releases.py), to be stored here exactly as it was made (the same
        id, time and hashes) so this node's records check against it; not added to the
        session (the caller adds it with the change it certifies). Refused (field
        `signature`) when a field is missing, when it is not about `record_type`/`record_id`,
        when its hash does not cover its fields, or when its signer is not known here."""
        missing = [n for n in CARRIED if n != "components" and not fields.get(n)]
        if missing:
            raise ValidationFailed(
                f"the signature carried lacks {', '.join(missing)}", field="signature"
            )
        values = {n: fields.get(n) for n in CARRIED}
        values["signed_at"] = datetime.fromisoformat(str(fields["signed_at"]))
        sig = Signature(**values, session_id=None)
        if (
            sig.record_type != record_type
            or sig.record_id != record_id
            or sig.signature_hash != hash_of(sig)
        ):
            raise Refused(
                f"the signature carried is not the one made for {record_type} {record_id}",
                field="signature",
                code="signature_invalid",
            )
        if uow.session.get(User, sig.signer_id) is None:
            raise Refused(
                f"the signer {sig.signer_name} ({sig.signer_id}) is not known at this node",
                field="signature",
                code="signer_unknown",
            )
        if uow.session.get(Signature, sig.id) is not None:
            raise Refused(
                f"signature {sig.id} is already stored here", field="signature", code="duplicate"
            )
        return sig
