"""Master-file use cases: draft, QP approval by e-signature, effectiveness, look-ups."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import func, select

from nearfab.common.errors import (
    Conflict,
    DomainError,
    NotFound,
    Refused,
    ValidationFailed,
    require_reason,
)
from nearfab.common.ids import new_id
from nearfab.common.node import MASTER_FILE_CHANGE, NodeRole
from nearfab.common.states import check_transition
from nearfab.identity import (
    APPROVAL_MASTER_FILE_QP,
    Actor,
    AuditAction,
    Permission,
    Role,
    SignatureService,
    audit,
    audited_transition,
    authorize_network,
    refuse,
    request_approval,
)
from nearfab.identity.reads import user as user_record
from nearfab.identity.reads import user_by_username
from nearfab.masterfiles.enums import MASTER_FILE_TRANSITIONS, MasterFileStatus
from nearfab.masterfiles.models import MasterFile, MasterFileQP
from nearfab.masterfiles.published import PUBLISHED_ENTITY, from_published, published_fields
from nearfab.masterfiles.schemas import MasterFileIn
from nearfab.network import NetworkService
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import ApprovalRequest, User

# Checks owned by other parts (the family's design envelope, quality's release rule), wired in
# bootstrap so a bad draft is refused when it is written, not when a batch needs it.
DraftCheck = Callable[[MasterFileIn], None]


def pydantic_to_domain(exc: ValidationError, prefix: str) -> ValidationFailed:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    field = f"{prefix}.{loc}" if loc else prefix
    return ValidationFailed(f"{field}: {first['msg']}", field=field)


class MasterFileService:
    def __init__(
        self,
        signatures: SignatureService,
        network: NetworkService,
        checks: Sequence[DraftCheck] = (),
        node: NodeRole | None = None,
    ) -> None:
        self._signatures = signatures
        self.node = node or NodeRole()  # a site node refuses master-file changes
        self._network = network
        self._checks = tuple(checks)
        self._on_published: list[Callable[[UnitOfWork, str, dict[str, Any]], None]] = []
        self._on_withdrawn: list[Callable[[UnitOfWork, str, dict[str, Any]], None]] = []
        # naming a QP takes effect when a second administrator approves (separation of duties)
        signatures.users.register_applier(APPROVAL_MASTER_FILE_QP, self._apply_qp_request)

    def draft(self, uow: UnitOfWork, actor: Actor, data: Mapping[str, Any]) -> MasterFile:
        """Create the next version of a master file as a draft."""
        self.require_control(uow, actor, str(data.get("code") or "draft"))
        authorize_network(actor, Permission.MASTER_FILE_DRAFT)  # master files: network records
        try:
            spec = MasterFileIn.model_validate(data)
        except ValidationError as exc:
            raise pydantic_to_domain(exc, "master_file") from None
        for check in self._checks:
            check(spec)
        # sites may be named by id or code; the master file stores ids
        spec.allowed_site_ids = [self._network.get_site(uow, s).id for s in spec.allowed_site_ids]
        latest = uow.session.scalar(
            select(func.max(MasterFile.version)).where(MasterFile.code == spec.code)
        )
        dumped = spec.model_dump()
        dumped["record_steps"] = dumped.get("record_steps") or None  # none: content unchanged
        mf = MasterFile(
            id=new_id("mf"),
            version=(latest or 0) + 1,
            status=MasterFileStatus.DRAFT.value,
            created_at=uow.clock.now(),
            created_by=actor.user_id,
            approved_at=None,
            approval_signature_id=None,
            effective_from=None,
            **dumped,
        )
        uow.session.add(mf)
        uow.flush()
        audit(uow, actor, AuditAction.CREATE, "master_file", mf.id, new=mf.content())
        uow.commit()
        return mf

    def approve(
        self,
        uow: UnitOfWork,
        actor: Actor,
        master_file_id: str,
        *,
        password: str,
        meaning: str = "QP approval of master file",
        username: str | None = None,
        totp: str | None = None,
    ) -> MasterFile:
        """QP approval: an e-signature bound to the hash of the master file's content."""
        self.require_control(uow, actor, master_file_id)
        authorize_network(actor, Permission.MASTER_FILE_APPROVE)
        mf = self.get(uow, master_file_id)
        try:
            self._transition(uow, actor, mf, MasterFileStatus.APPROVED, reason=meaning)
            sig = self._signatures.sign(
                uow,
                actor,
                password=password,
                meaning=meaning,
                record_type="master_file",
                record_id=mf.id,
                content=mf.content(),
                username=username,
                totp=totp,
                require_totp=mf.totp_for_signing,
            )
        except DomainError as exc:  # a failed signing attempt is on record too
            refuse(uow, actor, exc, "master_file", mf.id)
        mf.approved_at = uow.clock.now()
        mf.approval_signature_id = sig.id
        uow.commit()
        return mf

    def make_effective(self, uow: UnitOfWork, actor: Actor, master_file_id: str) -> MasterFile:
        """Make an approved version effective; the previous effective version is superseded."""
        self.require_control(uow, actor, master_file_id)
        authorize_network(actor, Permission.MASTER_FILE_EFFECTIVE)
        mf = self.get(uow, master_file_id)
        check_transition(
            f"master file {mf.code} v{mf.version}",
            MasterFileStatus(mf.status),
            MasterFileStatus.EFFECTIVE,
            MASTER_FILE_TRANSITIONS,
        )
        if not self.approval_is_valid(uow, mf):
            raise Refused(
                f"master file {mf.code} v{mf.version} does not match its QP approval signature",
                field="master_file",
                code="approval_invalid",
            )
        for prev in uow.session.scalars(
            select(MasterFile).where(
                MasterFile.code == mf.code, MasterFile.status == MasterFileStatus.EFFECTIVE.value
            )
        ):
            self._transition(
                uow,
                actor,
                prev,
                MasterFileStatus.SUPERSEDED,
                reason=f"superseded by version {mf.version}",
            )
        superseded = [
            prev.id
            for prev in uow.session.scalars(
                select(MasterFile).where(
                    MasterFile.code == mf.code,
                    MasterFile.status == MasterFileStatus.SUPERSEDED.value,
                    MasterFile.id != mf.id,
                )
            )
        ]
        self._transition(uow, actor, mf, MasterFileStatus.EFFECTIVE, reason="made effective")
        mf.effective_from = uow.clock.now()
        self._publish(uow, actor, mf, superseded)
        uow.commit()
        return mf

    def _publish(
        self, uow: UnitOfWork, actor: Actor, mf: MasterFile, superseded: list[str]
    ) -> None:
        """The effective version as the site nodes install it (masterfiles/published.py): the
        whole version and its approval signature row, in the transaction that made it
        effective (in one database nobody installs it; the row is the record either way)."""
        sig = next(
            s
            for s in self._signatures.signatures_for(uow, "master_file", mf.id)
            if s.id == mf.approval_signature_id
        )
        body = {
            "master_file": published_fields(mf),
            "signature": SignatureService.carried(sig),
            "supersedes": superseded,
        }
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            PUBLISHED_ENTITY,
            mf.id,
            new=body,
            reason=f"master file {mf.code} v{mf.version} effective: published to the sites",
        )
        for sign in self._on_published:  # the control node signs it in its chain (bootstrap)
            sign(uow, mf.id, body)

    def on_published(self, hook: Callable[[UnitOfWork, str, dict[str, Any]], None]) -> None:
        """Called with (uow, version id, published body) in the transaction that publishes a
        version: the control node of a replicated network signs the publication in its own
        ledger chain, which the site nodes require before installing it (bootstrap)."""
        self._on_published.append(hook)

    def on_withdrawn(self, hook: Callable[[UnitOfWork, str, dict[str, Any]], None]) -> None:
        """Called with (uow, version id, the withdrawal's audit body) in the transaction that
        withdraws a version: the control node signs the withdrawal in its ledger chain, which
        the site nodes require before withdrawing it there (bootstrap)."""
        self._on_withdrawn.append(hook)

    def install_published(
        self, uow: UnitOfWork, actor: Actor, published: dict[str, Any]
    ) -> tuple[MasterFile, bool]:
        """At a site node: install a version the control site made effective (its
        `master_file_published` row), in the caller's transaction (the caller writes what it
        applied and commits). The approval signature row is stored as it was made and must
        match the version's content; the versions of its code effective here are superseded.
        Refused (nothing written) at the control site or in one database, for a version whose
        content is not what the QP approved, or whose signature is not the one made for it;
        an already effective version is left as it is. Returns the version and whether it
        was installed now."""
        if not self.node.site_node:
            raise Refused(
                "a published master file is installed at a site node only",
                field="node",
                code="not_a_site_node",
            )
        try:
            mf = from_published(dict(published["master_file"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationFailed(
                f"the published master file lacks or garbles {exc}", field="master_file"
            ) from None
        here = uow.session.get(MasterFile, mf.id)
        if here is not None and here.status in (
            MasterFileStatus.EFFECTIVE.value,
            MasterFileStatus.SUPERSEDED.value,  # a later version came first (a copy of later)
            MasterFileStatus.WITHDRAWN.value,
        ):
            return here, False
        fields = dict(published.get("signature") or {})
        sig = next(
            (
                s
                for s in self._signatures.signatures_for(uow, "master_file", mf.id)
                if s.id == fields.get("id")
            ),
            None,
        )
        if sig is None:
            sig = self._signatures.carried_from(
                uow, fields, record_type="master_file", record_id=mf.id
            )
            fresh_sig = True
        else:
            fresh_sig = False
        if (
            mf.status != MasterFileStatus.EFFECTIVE.value
            or mf.approval_signature_id != sig.id
            or not self._signatures.is_valid(sig, mf.content())
            or sig.signature_hash != fields.get("signature_hash")
        ):
            raise Refused(
                f"master file {mf.code} v{mf.version} does not match its QP approval signature; "
                "nothing was installed",
                field="master_file",
                code="approval_invalid",
            )
        if fresh_sig:
            uow.session.add(sig)
        for prev in uow.session.scalars(
            select(MasterFile).where(
                MasterFile.code == mf.code,
                MasterFile.status == MasterFileStatus.EFFECTIVE.value,
                MasterFile.id != mf.id,
            )
        ):
            self._transition(
                uow,
                actor,
                prev,
                MasterFileStatus.SUPERSEDED,
                reason=f"superseded by version {mf.version} (installed from the control site)",
            )
        reason = f"master file {mf.code} v{mf.version} installed from the control site"
        if here is None:
            uow.session.add(mf)
            uow.flush()
            audit(uow, actor, AuditAction.CREATE, "master_file", mf.id, new=mf.content())
            audit(
                uow,
                actor,
                AuditAction.TRANSITION,
                "master_file",
                mf.id,
                old=None,
                new={"status": mf.status, "approval_signature_id": sig.id},
                reason=reason,
            )
            return mf, True
        if here.content() != mf.content():
            raise Refused(
                f"master file {mf.code} v{mf.version} here is not the version the control "
                "site published; nothing was installed",
                field="master_file",
                code="approval_invalid",
            )
        here.approved_at, here.approval_signature_id = mf.approved_at, sig.id
        here.effective_from = mf.effective_from
        if here.status == MasterFileStatus.DRAFT.value:
            self._transition(uow, actor, here, MasterFileStatus.APPROVED, reason=reason)
        self._transition(uow, actor, here, MasterFileStatus.EFFECTIVE, reason=reason)
        return here, True

    def withdraw_published(
        self, uow: UnitOfWork, actor: Actor, master_file_id: str, *, reason: str
    ) -> MasterFile | None:
        """At a site node: a version the control site withdrew is withdrawn here, in the
        caller's transaction (None: this node never held it; an already withdrawn one is left)."""
        if not self.node.site_node:
            raise Refused(
                "a control-site withdrawal is applied at a site node only",
                field="node",
                code="not_a_site_node",
            )
        mf = uow.session.get(MasterFile, master_file_id)
        if mf is None or mf.status == MasterFileStatus.WITHDRAWN.value:
            return mf
        self._transition(uow, actor, mf, MasterFileStatus.WITHDRAWN, reason=reason)
        return mf

    def set_signing_policy(
        self,
        uow: UnitOfWork,
        actor: Actor,
        master_file_id: str,
        *,
        totp_for_signing: bool,
        reason: str,
    ) -> MasterFile:
        """Whether signatures on this product's records (approval, steps, review, release)
        need a TOTP code as a third component; audited with the reason. The setting is not
        part of the approved content, so it can change without a new version."""
        self.require_control(uow, actor, master_file_id)
        authorize_network(actor, Permission.SIGNING_POLICY)
        require_reason(reason, "changing a master file's signing policy")
        mf = self.get(uow, master_file_id)
        old = mf.totp_for_signing
        mf.totp_for_signing = bool(totp_for_signing)
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "master_file",
            mf.id,
            old={"totp_for_signing": old},
            new={"totp_for_signing": mf.totp_for_signing},
            reason=reason,
        )
        uow.commit()
        return mf

    def withdraw(
        self, uow: UnitOfWork, actor: Actor, master_file_id: str, *, reason: str
    ) -> MasterFile:
        self.require_control(uow, actor, master_file_id)
        authorize_network(actor, Permission.MASTER_FILE_WITHDRAW)
        require_reason(reason, "withdrawing a master file")
        mf = self.get(uow, master_file_id)
        # the withdrawal names the version and the reason, so the control's signature of it
        # (`on_withdrawn`) covers what a site node acts on, not just a status
        body = {
            "status": MasterFileStatus.WITHDRAWN.value,
            "master_file_id": mf.id,
            "code": mf.code,
            "version": mf.version,
            "reason": reason,
        }
        self._transition(uow, actor, mf, MasterFileStatus.WITHDRAWN, reason=reason, extra=body)
        for sign in self._on_withdrawn:  # the control node signs it in its chain (bootstrap)
            sign(uow, mf.id, body)
        uow.commit()
        return mf

    def require_control(
        self, uow: UnitOfWork, actor: Actor, entity_id: str, entity_type: str = "master_file"
    ) -> None:
        """A master-file change waits for the control site at a site node: refused, audited."""
        try:
            self.node.require_control(MASTER_FILE_CHANGE)
        except Refused as exc:
            refuse(uow, actor, exc, entity_type, entity_id)

    def _transition(
        self,
        uow: UnitOfWork,
        actor: Actor,
        mf: MasterFile,
        target: MasterFileStatus,
        *,
        reason: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        audited_transition(
            uow,
            actor,
            mf,
            target,
            MASTER_FILE_TRANSITIONS,
            entity_type="master_file",
            label=f"master file {mf.code} v{mf.version}",
            reason=reason,
            extra={k: v for k, v in (extra or {}).items() if k != "status"},
        )

    def get(self, uow: UnitOfWork, master_file_id: str) -> MasterFile:
        mf = uow.session.get(MasterFile, master_file_id)
        if mf is None:
            raise NotFound(f"no master file {master_file_id!r}", field="master_file_id")
        return mf

    def list_all(self, uow: UnitOfWork) -> list[MasterFile]:
        return list(
            uow.session.scalars(select(MasterFile).order_by(MasterFile.code, MasterFile.version))
        )

    def effective(self, uow: UnitOfWork) -> list[MasterFile]:
        return list(
            uow.session.scalars(
                select(MasterFile)
                .where(MasterFile.status == MasterFileStatus.EFFECTIVE.value)
                .order_by(MasterFile.code)
            )
        )

    def effective_for_code(self, uow: UnitOfWork, code: str) -> MasterFile:
        mf = uow.session.scalar(
            select(MasterFile).where(
                MasterFile.code == code, MasterFile.status == MasterFileStatus.EFFECTIVE.value
            )
        )
        if mf is None:
            raise Refused(
                f"master file {code} has no approved, effective version",
                field="master_file",
                code="no_effective_master_file",
            )
        return mf

    def accepting(self, uow: UnitOfWork, codings: list[tuple[str, str]]) -> list[MasterFile]:
        """Effective master files accepting any of the (system, code) pairs."""
        return [mf for mf in self.effective(uow) if any(mf.accepts(s, c) for s, c in codings)]

    def approval_is_valid(self, uow: UnitOfWork, mf: MasterFile) -> bool:
        """True while the approved content still hashes to what the QP signed."""
        if not mf.approval_signature_id:
            return False
        sigs = self._signatures.signatures_for(uow, "master_file", mf.id)
        sig = next((s for s in sigs if s.id == mf.approval_signature_id), None)
        return sig is not None and self._signatures.is_valid(sig, mf.content())

    # --- the QPs who certify a master file's batches -------------------------------------------
    def assign_qp(
        self, uow: UnitOfWork, actor: Actor, code: str, user: str, *, reason: str
    ) -> ApprovalRequest:
        """Ask for a QP (user id or username) to certify the batches of master file `code`.
        Separation of duties: the assignment takes effect only when another administrator of
        the control site approves the request (`UserService.decide_request`)."""
        self.require_control(uow, actor, code)
        # master files belong to the network: only a network administrator names their QPs
        authorize_network(actor, Permission.MASTER_FILE_QP_ASSIGN)
        why = require_reason(reason, "assigning a QP to a master file")
        self._code_exists(uow, code)
        person = self._user(uow, user)
        self._check_assignable(uow, code, person)
        request = request_approval(
            uow, actor, APPROVAL_MASTER_FILE_QP, person, master_file_code=code, reason=why
        )
        uow.commit()
        return request

    def _check_assignable(self, uow: UnitOfWork, code: str, person: User) -> None:
        if not person.active:
            raise ValidationFailed(f"user {person.username} is not active", field="user")
        # a certifier holds a release signatory's role: a QP, or the responsible person a
        # device family names (quality.kit.release_signatory checks which signs which batch)
        if not {Role.QP.value, Role.RESPONSIBLE_PERSON.value} & set(person.roles):
            raise ValidationFailed(
                f"user {person.username} does not hold the QP (or responsible_person) role",
                field="user",
            )
        row = self._assignment(uow, code, person.id)
        if row is not None and row.active:
            raise Conflict(
                f"{person.username} is already a QP for {code}",
                field="user",
                code="already_assigned",
            )

    def _apply_qp_request(self, uow: UnitOfWork, actor: Actor, request: ApprovalRequest) -> None:
        """An approved request names the QP (in the approval's transaction, audited)."""
        code = request.master_file_code or ""
        self._code_exists(uow, code)
        person = self._user(uow, request.subject_user_id)
        self._check_assignable(uow, code, person)
        row = self._assignment(uow, code, person.id)
        now = uow.clock.now()
        old = None if row is None else {"active": False}
        if row is None:
            row = MasterFileQP(
                master_file_code=code,
                user_id=person.id,
                active=True,
                assigned_at=now,
                assigned_by=request.requested_by,
                reason=request.reason,
                unassigned_at=None,
                unassigned_by=None,
            )
            uow.session.add(row)
        else:
            row.active, row.assigned_at, row.assigned_by = True, now, request.requested_by
            row.reason, row.unassigned_at, row.unassigned_by = request.reason, None, None
        audit(
            uow,
            actor,
            AuditAction.CREATE if old is None else AuditAction.UPDATE,
            "master_file_qp",
            f"{code}:{person.id}"[:64],
            old=old,
            new={
                "master_file_code": code,
                "user_id": person.id,
                "active": True,
                "requested_by": request.requested_by,
                "approved_by": actor.user_id,
                "approval_request": request.id,
            },
            reason=request.reason,
        )

    def unassign_qp(
        self, uow: UnitOfWork, actor: Actor, code: str, user: str, *, reason: str
    ) -> MasterFileQP:
        """End a QP's assignment to a master file; they can no longer certify its batches."""
        self.require_control(uow, actor, code)
        authorize_network(actor, Permission.MASTER_FILE_QP_ASSIGN)  # a network record
        require_reason(reason, "unassigning a QP from a master file")
        person = self._user(uow, user)
        row = self._assignment(uow, code, person.id)
        if row is None or not row.active:
            raise NotFound(f"{person.username} is not a QP for {code}", field="user")
        row.active, row.unassigned_at, row.unassigned_by = False, uow.clock.now(), actor.user_id
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "master_file_qp",
            f"{code}:{person.id}"[:64],
            old={"active": True},
            new={"master_file_code": code, "user_id": person.id, "active": False},
            reason=reason.strip(),
        )
        uow.commit()
        return row

    def qps(self, uow: UnitOfWork, code: str) -> list[MasterFileQP]:
        """Every assignment to `code`, active or not."""
        return list(
            uow.session.scalars(
                select(MasterFileQP)
                .where(MasterFileQP.master_file_code == code)
                .order_by(MasterFileQP.assigned_at, MasterFileQP.id)
            )
        )

    def is_assigned_qp(
        self, uow: UnitOfWork, code: str, user_id: str, role: str = Role.QP.value
    ) -> bool:
        """True when the user is active, holds `role` (the QP role, or the release signatory
        role the product's family names) and is assigned to `code` now."""
        return (code, user_id, role) in self.assigned_signers(uow, [(code, user_id, role)])

    def assigned_signers(
        self, uow: UnitOfWork, wanted: Iterable[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        """Which of these (master file code, user id, role) `is_assigned_qp` holds for: one
        statement for the assignments, whatever their number (a release queue asks for each
        waiting batch), and each person read once."""
        asked = set(wanted)
        if not asked:
            return set()
        rows = uow.session.scalars(
            select(MasterFileQP).where(
                MasterFileQP.master_file_code.in_({code for code, _, _ in asked}),
                MasterFileQP.user_id.in_({user for _, user, _ in asked}),
            )
        )
        active = {(row.master_file_code, row.user_id) for row in rows if row.active}
        people = {user: user_record(uow.session, user) for _, user, _ in asked}
        return {
            (code, user, role)
            for code, user, role in asked
            if (code, user) in active
            and (person := people[user]) is not None
            and person.active
            and role in person.roles
        }

    def _assignment(self, uow: UnitOfWork, code: str, user_id: str) -> MasterFileQP | None:
        return uow.session.scalar(
            select(MasterFileQP).where(
                MasterFileQP.master_file_code == code, MasterFileQP.user_id == user_id
            )
        )

    def _code_exists(self, uow: UnitOfWork, code: str) -> None:
        if (
            uow.session.scalar(select(MasterFile.id).where(MasterFile.code == code).limit(1))
            is None
        ):
            raise NotFound(f"no master file {code!r}", field="master_file_code")

    def _user(self, uow: UnitOfWork, user: str) -> User:
        person = user_record(uow.session, user) or user_by_username(uow.session, user)
        if person is None:
            raise NotFound(f"no user {user!r}", field="user")
        return person
