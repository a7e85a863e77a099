"""Electronic signatures: password re-entry plus a stated meaning, bound to the record's hash."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from nearfab.common.errors import Unauthenticated, ValidationFailed
from nearfab.common.ids import new_id
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor, record_hash
from nearfab.identity.models import Signature, User
from nearfab.identity.services.audit import audit
from nearfab.identity.services.users import UserService
from nearfab.uow import UnitOfWork


class SignatureService:
    """E-signatures: password re-entry plus a stated meaning, bound to the record's hash."""

    def __init__(self, users: UserService) -> None:
        self._users = users

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
    ) -> Signature:
        """Add a signature to the current transaction; the caller commits it with the change."""
        if not meaning or not meaning.strip():
            raise ValidationFailed("a signature needs its meaning", field="meaning")
        user = uow.session.get(User, actor.user_id)
        if user is None or not user.active or not self._users.check_password(user, password):
            raise Unauthenticated("signature refused: the password does not match the signer")
        sig = Signature(
            id=new_id("sig"),
            signer_id=user.id,
            signer_name=user.full_name,
            meaning=meaning.strip(),
            signed_at=uow.clock.now(),
            record_type=record_type,
            record_id=record_id,
            record_hash=record_hash(content),
        )
        uow.session.add(sig)
        audit(
            uow,
            actor,
            AuditAction.SIGN,
            record_type,
            record_id,
            new={"signature_id": sig.id, "meaning": sig.meaning, "record_hash": sig.record_hash},
        )
        return sig

    def signatures_for(self, uow: UnitOfWork, record_type: str, record_id: str) -> list[Signature]:
        stmt = (
            select(Signature)
            .where(Signature.record_type == record_type, Signature.record_id == record_id)
            .order_by(Signature.signed_at)
        )
        return list(uow.session.scalars(stmt))

    @staticmethod
    def is_valid(sig: Signature, content: dict[str, Any]) -> bool:
        """True while the record still hashes to what was signed."""
        return sig.record_hash == record_hash(content)
