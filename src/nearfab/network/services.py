"""Network use cases: sites and their lifecycle, machines, qualification and training."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from nearfab.common.errors import Conflict, NotFound, Refused, ValidationFailed, require_reason
from nearfab.common.ids import new_id
from nearfab.common.node import SIGNING_POLICY_CHANGE, NodeRole
from nearfab.common.states import check_transition, parse_state
from nearfab.identity import (
    Actor,
    AuditAction,
    Permission,
    Role,
    audit,
    audited_transition,
    authorize,
    authorize_network,
    refuse,
)
from nearfab.identity.reads import active_users_at
from nearfab.identity.reads import user as user_record
from nearfab.network.enums import (
    MACHINE_TRANSITIONS,
    SITE_TRANSITIONS,
    MachineStatus,
    SiteKind,
    SiteStatus,
)
from nearfab.network.models import Machine, Qualification, Site, Training
from nearfab.uow import UnitOfWork

if TYPE_CHECKING:
    from nearfab.identity import User


def _valid(valid_until: datetime | None, now: datetime) -> bool:
    return valid_until is None or valid_until > now


class NetworkService:
    """Sites, machines, qualification and training. Every change is audited in its transaction."""

    def __init__(self, node: NodeRole | None = None) -> None:
        self.node = node or NodeRole()  # a site node refuses the control site's use cases
        # holds on making a master file at a site, registered in bootstrap by domains above
        # (comparability's proficiency suspensions): each says why not, or None
        self.site_holds: list[Callable[[UnitOfWork, str, str], str | None]] = []

    def site_hold(self, uow: UnitOfWork, site_id: str, master_file_code: str) -> str | None:
        """Why `master_file_code` may not be made at the site now (a registered hold), or None."""
        for hold in self.site_holds:
            why = hold(uow, site_id, master_file_code)
            if why is not None:
                return why
        return None

    # --- sites -------------------------------------------------------------------------------
    def create_site(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        code: str,
        name: str,
        kind: str,
    ) -> Site:
        """A new site starts as proposed; it becomes active only through its lifecycle."""
        authorize_network(actor, Permission.SITE_CREATE)  # a new member of the network
        status = SiteStatus.PROPOSED
        try:
            kind_v = SiteKind(kind)
        except ValueError:
            raise ValidationFailed(
                f"unknown site kind {kind!r}; use one of {', '.join(SiteKind)}", field="kind"
            ) from None
        if not code.strip():
            raise ValidationFailed("site code is empty", field="code")
        if uow.session.scalar(select(Site).where(Site.code == code)):
            raise Conflict(f"site code {code!r} exists", field="code")
        site = Site(
            id=new_id("site"),
            code=code,
            name=name,
            kind=kind_v.value,
            status=status.value,
            regulatory_reference=None,
            created_at=uow.clock.now(),
        )
        uow.session.add(site)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "site",
            site.id,
            new={"code": code, "name": name, "kind": kind_v.value, "status": status.value},
            site_id=site.id,
        )
        uow.commit()
        return site

    def set_signing_policy(
        self, uow: UnitOfWork, actor: Actor, site_id: str, *, totp_for_signing: bool, reason: str
    ) -> Site:
        """Whether signatures on this site's records need a TOTP code as a third component
        (21 CFR 11.200); audited with the old and new setting and the reason."""
        site = self.get_site(uow, site_id)
        try:  # the control site's act: refused, on record, at a site node
            self.node.require_control(SIGNING_POLICY_CHANGE)
        except Refused as exc:
            refuse(uow, actor, exc, "site", site.id, site_id=site.id)
        # a site never relaxes its own signing rules: the network sets them
        authorize_network(actor, Permission.SIGNING_POLICY)
        require_reason(reason, "changing a site's signing policy")
        old = site.totp_for_signing
        site.totp_for_signing = bool(totp_for_signing)
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "site",
            site.id,
            old={"totp_for_signing": old},
            new={"totp_for_signing": site.totp_for_signing},
            reason=reason,
            site_id=site.id,
        )
        uow.commit()
        return site

    def set_patient_identification(
        self,
        uow: UnitOfWork,
        actor: Actor,
        site_id: str,
        *,
        birth_date_required: bool,
        mrn_system: str | None = None,
        reason: str,
    ) -> Site:
        """How this site identifies patients at dispense and at the bedside
        (docs/patient-identification.md): whether the birth date must agree too, and the FHIR
        identifier system of its hospital numbers (MRN). Set by the network; audited."""
        site = self.get_site(uow, site_id)
        authorize_network(actor, Permission.SITE_CREATE)
        require_reason(reason, "changing a site's patient identification rule")
        system = (mrn_system or "").strip() or None
        if system is not None and len(system) > 255:
            raise ValidationFailed("mrn_system: at most 255 characters", field="mrn_system")
        old = {"birth_date_required": site.birth_date_required, "mrn_system": site.mrn_system}
        site.birth_date_required = bool(birth_date_required)
        site.mrn_system = system
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "site",
            site.id,
            old=old,
            new={"birth_date_required": site.birth_date_required, "mrn_system": system},
            reason=reason,
            site_id=site.id,
        )
        uow.commit()
        return site

    def transition_site(
        self,
        uow: UnitOfWork,
        actor: Actor,
        site_id: str,
        target: SiteStatus | str,
        *,
        reason: str,
        regulatory_reference: str | None = None,
    ) -> Site:
        site = self.get_site(uow, site_id)
        # a site never lifts its own suspension: its licence holder (the network) decides
        authorize_network(actor, Permission.SITE_STATUS)
        target = parse_state(SiteStatus, target)
        current = SiteStatus(site.status)
        check_transition(f"site {site.code}", current, target, SITE_TRANSITIONS)
        require_reason(reason, "a site status change")
        if current is SiteStatus.REGULATOR_SUSPENDED and not (regulatory_reference or "").strip():
            raise ValidationFailed(
                "leaving regulator suspension needs the regulator's reference",
                field="regulatory_reference",
            )
        if target is SiteStatus.REGULATOR_SUSPENDED and not (regulatory_reference or "").strip():
            raise ValidationFailed(
                "a regulator suspension needs the regulator's reference",
                field="regulatory_reference",
            )
        audited_transition(
            uow,
            actor,
            site,
            target,
            SITE_TRANSITIONS,
            entity_type="site",
            label=f"site {site.code}",
            reason=reason,
            site_id=site.id,
            extra={"regulatory_reference": regulatory_reference},
        )
        if regulatory_reference:
            site.regulatory_reference = regulatory_reference
        uow.commit()
        return site

    def get_site(self, uow: UnitOfWork, site_id: str) -> Site:
        site = uow.session.get(Site, site_id) or uow.session.scalar(
            select(Site).where(Site.code == site_id)
        )
        if site is None:
            raise NotFound(f"no site {site_id!r}", field="site_id")
        return site

    def list_sites(self, uow: UnitOfWork) -> list[Site]:
        return list(uow.session.scalars(select(Site).order_by(Site.code)))

    def control_site(self, uow: UnitOfWork) -> Site | None:
        return uow.session.scalar(select(Site).where(Site.kind == SiteKind.CONTROL.value))

    # --- machines ----------------------------------------------------------------------------
    def register_machine(
        self,
        uow: UnitOfWork,
        actor: Actor,
        *,
        site_id: str,
        name: str,
        machine_type: str,
        firmware: str,
        serial_number: str,
        adapter: str = "simulated",
    ) -> Machine:
        site = self.get_site(uow, site_id)
        authorize(actor, Permission.MACHINE_REGISTER, site_id=site.id)
        if site.status == SiteStatus.CEASED.value:
            raise ValidationFailed(f"site {site.code} has ceased", field="site_id")
        if not firmware.strip():
            raise ValidationFailed("firmware version is empty", field="firmware")
        machine = Machine(
            id=new_id("mch"),
            site_id=site.id,
            name=name,
            machine_type=machine_type,
            firmware=firmware,
            serial_number=serial_number,
            adapter=adapter,
            status=MachineStatus.AVAILABLE.value,
            created_at=uow.clock.now(),
        )
        uow.session.add(machine)
        uow.flush()
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "machine",
            machine.id,
            new={
                "site_id": site.id,
                "name": name,
                "machine_type": machine_type,
                "firmware": firmware,
                "serial_number": serial_number,
                "adapter": adapter,
            },
            site_id=site.id,
        )
        uow.commit()
        return machine

    def get_machine(self, uow: UnitOfWork, machine_id: str) -> Machine:
        machine = uow.session.get(Machine, machine_id)
        if machine is None:
            raise NotFound(f"no machine {machine_id!r}", field="machine_id")
        return machine

    def list_machines(self, uow: UnitOfWork, site_id: str | None = None) -> list[Machine]:
        stmt = select(Machine).order_by(Machine.name)
        if site_id:
            stmt = stmt.where(Machine.site_id == site_id)
        return list(uow.session.scalars(stmt))

    def set_machine_status(
        self,
        uow: UnitOfWork,
        actor: Actor,
        machine_id: str,
        target: MachineStatus | str,
        *,
        reason: str,
        commit: bool = True,
    ) -> Machine:
        """Move a machine between states. `commit=False` lets a larger use case own the commit."""
        machine = self.get_machine(uow, machine_id)
        authorize(actor, Permission.MACHINE_STATE, site_id=machine.site_id)
        require_reason(reason, "a machine state change")
        target = parse_state(MachineStatus, target)
        if (
            machine.status == MachineStatus.BUSY.value
            and target is MachineStatus.AVAILABLE
            and "system" not in actor.roles
        ):
            raise Refused(
                f"machine {machine.name} is running a batch; it frees itself when the run ends",
                field="status",
                code="machine_busy",
            )
        audited_transition(
            uow,
            actor,
            machine,
            target,
            MACHINE_TRANSITIONS,
            entity_type="machine",
            label=f"machine {machine.name}",
            reason=reason,
            site_id=machine.site_id,
        )
        if commit:
            uow.commit()
        return machine

    def qualify_machine(
        self,
        uow: UnitOfWork,
        actor: Actor,
        machine_id: str,
        master_file_code: str,
        *,
        valid_until: datetime | None = None,
    ) -> Qualification:
        machine = self.get_machine(uow, machine_id)
        authorize(actor, Permission.MACHINE_QUALIFY, site_id=machine.site_id)
        row = uow.session.scalar(
            select(Qualification).where(
                Qualification.machine_id == machine.id,
                Qualification.master_file_code == master_file_code,
            )
        )
        old = None
        if row is None:
            row = Qualification(
                machine_id=machine.id,
                master_file_code=master_file_code,
                qualified_at=uow.clock.now(),
                qualified_by=actor.user_id,
                valid_until=valid_until,
                revoked=False,
            )
            uow.session.add(row)
        else:
            old = {"valid_until": row.valid_until, "revoked": row.revoked}
            row.qualified_at, row.qualified_by = uow.clock.now(), actor.user_id
            row.valid_until, row.revoked = valid_until, False
        audit(
            uow,
            actor,
            AuditAction.UPDATE if old else AuditAction.CREATE,
            "machine",
            machine.id,
            old=old,
            new={"qualified_for": master_file_code, "valid_until": valid_until},
            reason=f"qualified for {master_file_code}"
            + ("" if old is None else " again (qualification renewed)"),
            site_id=machine.site_id,
        )
        uow.commit()
        return row

    def revoke_qualification(
        self,
        uow: UnitOfWork,
        actor: Actor,
        machine_id: str,
        master_file_code: str,
        *,
        reason: str,
    ) -> Qualification:
        machine = self.get_machine(uow, machine_id)
        authorize(actor, Permission.MACHINE_QUALIFICATION_REVOKE, site_id=machine.site_id)
        require_reason(reason, "revoking a qualification")
        row = uow.session.scalar(
            select(Qualification).where(
                Qualification.machine_id == machine.id,
                Qualification.master_file_code == master_file_code,
            )
        )
        if row is None or row.revoked:
            raise NotFound(
                f"{machine.name} holds no qualification for {master_file_code}",
                field="master_file_code",
            )
        row.revoked = True
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            "machine",
            machine.id,
            old={"qualified_for": master_file_code},
            new={"revoked": master_file_code},
            reason=reason,
            site_id=machine.site_id,
        )
        uow.commit()
        return row

    def is_qualified(self, uow: UnitOfWork, machine_id: str, master_file_code: str) -> bool:
        row = uow.session.scalar(
            select(Qualification).where(
                Qualification.machine_id == machine_id,
                Qualification.master_file_code == master_file_code,
            )
        )
        return row is not None and not row.revoked and _valid(row.valid_until, uow.clock.now())

    def qualified_codes(self, uow: UnitOfWork, machine_id: str) -> list[str]:
        rows = uow.session.scalars(
            select(Qualification).where(
                Qualification.machine_id == machine_id, Qualification.revoked.is_(False)
            )
        )
        now = uow.clock.now()
        return sorted(r.master_file_code for r in rows if _valid(r.valid_until, now))

    # --- training ----------------------------------------------------------------------------
    def record_training(
        self,
        uow: UnitOfWork,
        actor: Actor,
        user_id: str,
        master_file_code: str,
        *,
        valid_until: datetime | None = None,
    ) -> Training:
        user = user_record(uow.session, user_id)
        if user is None:
            raise NotFound(f"no user {user_id!r}", field="user_id")
        authorize(actor, Permission.TRAINING_RECORD, site_id=user.home_site_id)
        row = uow.session.scalar(
            select(Training).where(
                Training.user_id == user_id, Training.master_file_code == master_file_code
            )
        )
        if row is None:
            row = Training(
                user_id=user_id,
                master_file_code=master_file_code,
                trained_at=uow.clock.now(),
                recorded_by=actor.user_id,
                valid_until=valid_until,
            )
            uow.session.add(row)
        else:
            row.trained_at, row.valid_until = uow.clock.now(), valid_until
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            "user",
            user_id,
            new={"trained_on": master_file_code, "valid_until": valid_until},
            site_id=user.home_site_id,
        )
        uow.commit()
        return row

    def is_trained(self, uow: UnitOfWork, user_id: str, master_file_code: str) -> bool:
        row = uow.session.scalar(
            select(Training).where(
                Training.user_id == user_id, Training.master_file_code == master_file_code
            )
        )
        return row is not None and _valid(row.valid_until, uow.clock.now())

    def home_site_of(self, uow: UnitOfWork, user_id: str) -> str | None:
        user = user_record(uow.session, user_id)
        return user.home_site_id if user else None

    def operators_at(self, uow: UnitOfWork, site_id: str) -> list[User]:
        users = active_users_at(uow.session, site_id)
        return [u for u in users if Role.OPERATOR.value in u.roles]
