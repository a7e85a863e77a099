"""The one permission matrix (role x action) and site scoping.

Every use case that reads or changes GMP data calls `authorize` with its `Permission` and,
when the record belongs to a site, that site: staff of a site act on their own site only;
control-site staff (and users with no home site, such as the platform administrator) act
on the whole network. Scope is per role grant: the auditor grant reads the network, any other
role acts at its holder's site only. Auditors hold no permission that changes anything.
The API declares the same permission on each route (`api.deps.allowed`), and a test calls
every route as every role from its own site and from another one against this matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum, StrEnum

from nearfab.common.errors import Forbidden
from nearfab.identity.enums import Role
from nearfab.identity.logic import Actor

Q, A, AU, PH, OP, PL, CL, RP = (
    Role.QP,
    Role.ADMIN,
    Role.AUDITOR,
    Role.PHARMACIST,
    Role.OPERATOR,
    Role.PLANNER,
    Role.CLINICIAN,
    Role.RESPONSIBLE_PERSON,
)
ALL_ROLES = frozenset(Role)
STAFF = frozenset({Q, A, AU, PH, OP, PL})  # everyone but prescribers


class Permission(StrEnum):
    """What a use case does, in words an inspector reads in the matrix (docs/security.md)."""

    # identity and audit
    PROFILE_READ = "profile.read"
    USERS_READ = "users.read"
    USERS_MANAGE = "users.manage"
    AUDIT_READ = "audit.read"
    AUDIT_VERIFY = "audit.verify"
    RECORD_EXPORT = "record.export"
    # network
    NETWORK_READ = "network.read"
    SITE_CREATE = "site.create"
    SITE_STATUS = "site.status"
    SITE_GLN = "site.gln"
    SIGNING_POLICY = "signing_policy.set"
    MACHINE_REGISTER = "machine.register"
    MACHINE_STATE = "machine.state"
    MACHINE_QUALIFY = "machine.qualify"
    MACHINE_QUALIFICATION_REVOKE = "machine.qualification_revoke"
    TRAINING_RECORD = "training.record"
    FAULT_INJECT = "machine.fault_inject"
    NETWORK_RUN = "network.run"
    # master files and materials
    MASTER_FILE_READ = "master_file.read"
    MASTER_FILE_DRAFT = "master_file.draft"
    MASTER_FILE_APPROVE = "master_file.approve"
    MASTER_FILE_EFFECTIVE = "master_file.effective"
    MASTER_FILE_WITHDRAW = "master_file.withdraw"
    MASTER_FILE_QP_ASSIGN = "master_file.qp_assign"
    LOT_READ = "lot.read"
    LOT_RECEIVE = "lot.receive"
    LOT_STATUS = "lot.status"
    # orders and planning
    ORDER_SUBMIT = "order.submit"
    ORDER_READ = "order.read"
    ORDER_CANCEL = "order.cancel"
    ORDER_SCHEDULE = "order.schedule"
    ORDER_REPLAN = "order.replan"
    ORDER_PRIORITY = "order.priority"
    PATIENT_IDENTITY_READ = "patient_identity.read"
    # dose adjusted from the patient's observations (docs/dose-adjustment.md): observations
    # recorded by the ward or pharmacy, a proposal accepted or rejected by a clinician's signature
    ORDER_OBSERVATION_RECORD = "order.observation_record"
    DOSE_DECIDE = "dose.decide"
    # pharmacovigilance (docs/pharmacovigilance.md): an adverse event reported against a pack
    ADVERSE_EVENT_REPORT = "adverse_event.report"
    # before a collection from the patient: eligibility and consent (e-signed), then the
    # collection itself with the patient's and the chain's identifiers
    COLLECTION_PRE_RECORD = "collection.pre_record"
    COLLECTION_RECORD = "collection.record"
    PLAN_READ = "plan.read"
    PLAN_RUN = "plan.run"
    DOWNTIME_BOOK = "plan.downtime"
    SHIFT_RECORD = "plan.shift"
    TRANSPORT_RECORD = "plan.transport"
    # production and quality
    TICKET_ISSUE = "job.ticket"
    # a build the product's family wants approved at some kinds of site (production.kit
    # build_approver): the control site's e-signed approval issues its ticket
    BUILD_APPROVE = "job.build_approve"
    BATCH_START = "batch.start"
    BATCH_READ = "batch.read"
    BATCH_ABANDON = "batch.abandon"
    BATCH_STEP_SIGN = "batch.step_sign"
    BATCH_ENTRY_VERIFY = "batch.entry_verify"
    AUDIT_TRAIL_REVIEW = "batch.audit_trail_review"
    DEVIATION_OPEN = "batch.deviation_open"
    # a batch's laboratory results, entered and e-signed by the analyst (QA or a QP)
    LAB_RESULT_ENTER = "batch.lab_result_enter"
    RELEASE_QUEUE_READ = "release.queue"
    RELEASE_DECIDE = "release.decide"
    # results pending at release, entered later; exceptional release of an out-of-spec batch
    RELEASE_FOLLOWUP_READ = "release.followup_read"
    RELEASE_FOLLOWUP_ENTER = "release.followup_enter"
    RELEASE_EXCEPTIONAL_REQUEST = "release.exceptional_request"
    NOTICE_READ = "notice.read"
    NOTICE_ACKNOWLEDGE = "notice.acknowledge"
    # telemetry and monitoring
    TELEMETRY_READ = "telemetry.read"
    DEAD_LETTERS_READ = "telemetry.dead_letters"
    TELEMETRY_RETENTION = "telemetry.retention"
    MONITORING_READ = "monitoring.read"
    MODEL_TRAIN = "model.train"
    MODEL_APPROVE = "model.approve"
    MODEL_RETIRE = "model.retire"
    ALARM_ACKNOWLEDGE = "alarm.acknowledge"
    ALARM_CLOSE = "alarm.close"
    # comparability between sites: statistics of each site against the network, proficiency
    # rounds (the control site opens and scores them), results entered by the site, suspensions
    # lifted when the site's CAPA is closed by an e-signature
    COMPARABILITY_READ = "comparability.read"
    PROFICIENCY_ROUND = "proficiency.round"
    PROFICIENCY_RESULT_ENTER = "proficiency.result_enter"
    PROFICIENCY_CAPA_CLOSE = "proficiency.capa_close"
    # the network's quality system (docs/central-qa.md): deviations, CAPAs, complaints and
    # change controls in one place; a QP closes a CAPA and decides a change control (e-signed);
    # the annual report per master file goes to the control site's regulator
    QA_READ = "qa.read"
    QA_RECORD = "qa.record"
    CAPA_CLOSE = "qa.capa_close"
    CHANGE_CONTROL_RAISE = "change_control.raise"
    CHANGE_CONTROL_APPROVE = "change_control.approve"
    ANNUAL_REPORT_READ = "annual_report.read"
    # custody
    EPCIS_QUERY = "epcis.query"
    EPCIS_CAPTURE = "epcis.capture"
    TRACE_READ = "trace.read"
    RECALL_CREATE = "recall.create"
    RECALL_REPORT_READ = "recall.report"
    LEDGER_VERIFY = "ledger.verify"
    PACK_VERIFY = "pack.verify"
    DISPENSE = "pack.dispense"
    DISPENSE_UNDO = "pack.dispense_undo"
    PACKS_MOVE = "pack.move"
    PACKS_DESTROY = "pack.destroy"
    READINGS_RECORD = "pack.readings"
    # a QP judges a unit held by a refused hand-over or a storage excursion
    HOLD_DECIDE = "pack.hold_decide"


MATRIX: Mapping[Permission, frozenset[Role]] = {
    Permission.PROFILE_READ: ALL_ROLES,
    Permission.USERS_READ: frozenset({A, AU, Q}),
    Permission.USERS_MANAGE: frozenset({A}),
    Permission.AUDIT_READ: frozenset({Q, A, AU, PH}),
    Permission.AUDIT_VERIFY: frozenset({Q, A, AU}),
    Permission.RECORD_EXPORT: frozenset({Q, A, AU, PH}),
    Permission.NETWORK_READ: ALL_ROLES,
    Permission.SITE_CREATE: frozenset({A}),
    Permission.SITE_STATUS: frozenset({A, Q}),
    Permission.SITE_GLN: frozenset({A}),
    Permission.SIGNING_POLICY: frozenset({A, Q}),
    Permission.MACHINE_REGISTER: frozenset({A}),
    Permission.MACHINE_STATE: frozenset({OP, A, Q}),
    Permission.MACHINE_QUALIFY: frozenset({Q, A}),
    Permission.MACHINE_QUALIFICATION_REVOKE: frozenset({Q}),
    Permission.TRAINING_RECORD: frozenset({Q, A}),
    Permission.FAULT_INJECT: frozenset({A, PL}),
    Permission.NETWORK_RUN: frozenset({A, PL}),
    Permission.MASTER_FILE_READ: ALL_ROLES,
    Permission.MASTER_FILE_DRAFT: frozenset({Q, A}),
    Permission.MASTER_FILE_APPROVE: frozenset({Q}),
    Permission.MASTER_FILE_EFFECTIVE: frozenset({Q, A}),
    Permission.MASTER_FILE_WITHDRAW: frozenset({Q}),
    Permission.MASTER_FILE_QP_ASSIGN: frozenset({A}),
    Permission.LOT_READ: STAFF,
    Permission.LOT_RECEIVE: frozenset({OP, PH, A}),
    Permission.LOT_STATUS: frozenset({Q, PH}),
    Permission.ORDER_SUBMIT: frozenset({CL, PH, A}),
    Permission.ORDER_READ: ALL_ROLES,
    Permission.ORDER_CANCEL: frozenset({CL, PH, A}),
    Permission.ORDER_SCHEDULE: frozenset({PL, PH}),
    Permission.ORDER_REPLAN: frozenset({PL, PH}),
    Permission.ORDER_PRIORITY: frozenset({PL, PH, CL, A}),
    Permission.PATIENT_IDENTITY_READ: frozenset({PH, CL}),
    Permission.ORDER_OBSERVATION_RECORD: frozenset({CL, PH}),
    Permission.DOSE_DECIDE: frozenset({CL}),
    Permission.ADVERSE_EVENT_REPORT: frozenset({CL, PH, Q}),
    Permission.COLLECTION_PRE_RECORD: frozenset({CL}),
    Permission.COLLECTION_RECORD: frozenset({CL, PH}),
    Permission.PLAN_READ: frozenset({PL, PH, A, Q, AU, OP}),
    Permission.PLAN_RUN: frozenset({PL, PH, A}),
    Permission.DOWNTIME_BOOK: frozenset({PL, A, Q}),
    Permission.SHIFT_RECORD: frozenset({PL, A}),
    Permission.TRANSPORT_RECORD: frozenset({PL, A}),
    Permission.TICKET_ISSUE: frozenset({PL, Q, PH}),
    # which of the two approves is the family's choice (production.kit build_approver): the
    # device manufacturer's responsible person a home build of a device
    Permission.BUILD_APPROVE: frozenset({Q, RP}),
    Permission.BATCH_START: frozenset({OP}),
    # the responsible person reads the records of the batches it releases
    Permission.BATCH_READ: STAFF | {RP},
    Permission.BATCH_ABANDON: frozenset({Q, A}),
    Permission.BATCH_STEP_SIGN: frozenset({OP, PH}),
    Permission.BATCH_ENTRY_VERIFY: frozenset({OP, PH, Q}),
    Permission.AUDIT_TRAIL_REVIEW: frozenset({Q}),
    Permission.DEVIATION_OPEN: frozenset({OP, PH, Q}),
    # no laboratory role: QA (the site's pharmacist) or a QP enters the laboratory's results
    Permission.LAB_RESULT_ENTER: frozenset({Q, PH}),
    Permission.RELEASE_QUEUE_READ: frozenset({Q, A, AU, PH, RP}),
    # which of the two signs a batch is its product family's choice (quality.kit
    # release_signatory): a QP a medicine's, the responsible person a medical device's
    Permission.RELEASE_DECIDE: frozenset({Q, RP}),
    Permission.RELEASE_FOLLOWUP_READ: frozenset({Q, A, AU, PH, RP}),
    # the result is entered by QA (the site's pharmacist) or a QP
    Permission.RELEASE_FOLLOWUP_ENTER: frozenset({Q, PH}),
    # the treating physician asks for it; the QP releases it (RELEASE_DECIDE)
    Permission.RELEASE_EXCEPTIONAL_REQUEST: frozenset({CL}),
    # notices to the treating prescriber (a result that failed after release)
    Permission.NOTICE_READ: frozenset({CL, Q, PH, AU}),
    Permission.NOTICE_ACKNOWLEDGE: frozenset({CL}),
    Permission.TELEMETRY_READ: STAFF,
    Permission.DEAD_LETTERS_READ: frozenset({Q, A, AU}),
    Permission.TELEMETRY_RETENTION: frozenset({A, Q}),
    Permission.MONITORING_READ: STAFF,
    Permission.MODEL_TRAIN: frozenset({Q, A}),
    Permission.MODEL_APPROVE: frozenset({Q}),
    Permission.MODEL_RETIRE: frozenset({Q}),
    Permission.ALARM_ACKNOWLEDGE: frozenset({OP, PH, Q, A}),
    Permission.ALARM_CLOSE: frozenset({Q, PH}),
    Permission.COMPARABILITY_READ: frozenset({Q, A, AU, PH}),
    Permission.PROFICIENCY_ROUND: frozenset({Q}),
    Permission.PROFICIENCY_RESULT_ENTER: frozenset({Q, PH}),
    Permission.PROFICIENCY_CAPA_CLOSE: frozenset({Q}),
    Permission.QA_READ: frozenset({Q, A, AU, PH}),
    Permission.QA_RECORD: frozenset({Q, PH}),
    Permission.CAPA_CLOSE: frozenset({Q}),
    Permission.CHANGE_CONTROL_RAISE: frozenset({Q, A}),
    Permission.CHANGE_CONTROL_APPROVE: frozenset({Q}),
    Permission.ANNUAL_REPORT_READ: frozenset({Q, A, AU}),
    Permission.EPCIS_QUERY: frozenset({Q, A, AU, PH}),
    Permission.EPCIS_CAPTURE: frozenset({Q, A, PH}),
    Permission.TRACE_READ: frozenset({Q, A, AU, PH}),
    Permission.RECALL_CREATE: frozenset({Q, A}),
    Permission.RECALL_REPORT_READ: frozenset({Q, A, AU}),
    Permission.LEDGER_VERIFY: frozenset({Q, A, AU}),
    Permission.PACK_VERIFY: frozenset({PH, Q, A}),
    Permission.DISPENSE: frozenset({PH}),
    Permission.DISPENSE_UNDO: frozenset({PH}),
    Permission.PACKS_MOVE: frozenset({PH, OP, Q}),
    Permission.PACKS_DESTROY: frozenset({PH, Q}),
    Permission.READINGS_RECORD: frozenset({PH, OP, Q}),
    Permission.HOLD_DECIDE: frozenset({Q}),
}

# Network-level permissions: they change records of the whole network (sites, their
# lifecycle, GS1 identity and signing policy; master files; recalls across sites; partners'
# EPCIS events; monitoring models approved for every site; platform-wide telemetry retention;
# the simulated network itself) or report on the whole network. Their use cases call
# `authorize_network`, and `api.deps.allowed` / `web.pages.page` before the request is read:
# only a grant reaching the network passes (staff of the control site, home-less accounts,
# the auditor grant for the reports); a site's administrator, QP or planner is refused
# `other_site` even for their own site's entry.
NETWORK_LEVEL: frozenset[Permission] = frozenset(
    {
        Permission.SITE_CREATE,
        Permission.SITE_STATUS,
        Permission.SITE_GLN,
        Permission.SIGNING_POLICY,
        Permission.FAULT_INJECT,
        Permission.NETWORK_RUN,
        Permission.MASTER_FILE_DRAFT,
        Permission.MASTER_FILE_APPROVE,
        Permission.MASTER_FILE_EFFECTIVE,
        Permission.MASTER_FILE_WITHDRAW,
        Permission.MASTER_FILE_QP_ASSIGN,
        Permission.RECALL_CREATE,
        # captured events belong to no site (the network's store, ledgered by the control
        # site), and a captured errorDeclaration rewrites an event already held, of any site
        Permission.EPCIS_CAPTURE,
        # proficiency rounds go to every site; a suspension is lifted by the control site's QP
        Permission.PROFICIENCY_ROUND,
        Permission.PROFICIENCY_CAPA_CLOSE,
        # a master file's change control and its annual report are the network's records
        Permission.CHANGE_CONTROL_RAISE,
        Permission.CHANGE_CONTROL_APPROVE,
        Permission.ANNUAL_REPORT_READ,
        Permission.MODEL_TRAIN,
        Permission.MODEL_APPROVE,
        Permission.MODEL_RETIRE,
        Permission.TELEMETRY_RETENTION,
        # a build at a supervised site is approved by the control site (the manufacturer)
        Permission.BUILD_APPROVE,
        # reports on the whole network (the auditor grant reaches them too): the audit chain
        # and its checkpoints signed with the control site's key, every site's ledger, and
        # telemetry no site could be read from
        Permission.AUDIT_VERIFY,
        Permission.LEDGER_VERIFY,
        Permission.DEAD_LETTERS_READ,
    }
)

# what each permission is for, in the refusal message
_WORDS: Mapping[Permission, str] = {
    p: p.value.replace(".", ": ").replace("_", " ") for p in Permission
}


class _Unset(Enum):
    UNSET = 0


_UNSET = _Unset.UNSET


def _network_account(actor: Actor) -> bool:
    """Control-site staff and accounts with no home site (only a network administrator may
    create those, identity/services/users.py) act for the network."""
    return actor.network or actor.site_id is None


def _grant_reaches_network(actor: Actor, role: str) -> bool:
    """Scope is per role grant: the auditor grant reads the network; any other role acts at
    the account's home site only, unless that home is the control site (or none)."""
    return role == Role.AUDITOR.value or _network_account(actor)


def is_network_wide(actor: Actor, permission: Permission | None = None) -> bool:
    """True when the actor may act on (or read) every site's records under `permission`: a
    system component; or one of the actor's roles that the matrix gives `permission` reaches
    the network (the auditor grant, or any grant of control-site / home-less staff).

    Without a permission: control-site / home-less staff, and accounts that hold nothing but
    the auditor role. An auditor grant never widens another role's reach."""
    if "system" in actor.roles:
        return True
    if permission is None:
        return _network_account(actor) or set(actor.roles) == {Role.AUDITOR.value}
    allowed = MATRIX[permission]
    return any(_grant_reaches_network(actor, role) for role in actor.roles if role in allowed)


def visible_sites(actor: Actor, permission: Permission | None = None) -> frozenset[str] | None:
    """The sites whose records the actor may see: None means every site (see
    `is_network_wide`); an actor with no site of its own and no network reach sees none."""
    if is_network_wide(actor, permission):
        return None
    return frozenset({actor.site_id} if actor.site_id else ())


def site_filter(actor: Actor, permission: Permission, requested: str | None = None) -> str | None:
    """The site a list is limited to: what was asked for (None: every site) by someone whose
    grant reaches the network, the actor's own site for site staff (asking for another site
    is refused)."""
    if requested is None:
        authorize(actor, permission)
    else:
        authorize(actor, permission, site_id=requested)
    if is_network_wide(actor, permission):
        return requested
    if actor.site_id is None:  # pragma: no cover - an account with no site is network-wide
        raise Forbidden(f"{actor.username} acts for no site", field="site_id", code="other_site")
    return actor.site_id


def _site_reached(
    actor: Actor,
    permission: Permission,
    site_id: str | _Unset | None,
    one_of: Iterable[str | None] | None,
) -> bool:
    if "system" in actor.roles:
        return True
    if site_id is _UNSET and one_of is None:
        return True  # a role check only: the caller limits what it returns (site_filter)
    if is_network_wide(actor, permission):
        return True
    if site_id is not _UNSET and (site_id is None or site_id != actor.site_id):
        # a record of no site belongs to the network: only a network-wide grant reaches it
        return False
    if one_of is not None:
        # a site named by none of the sharers (None) opens nothing
        shared = {s for s in one_of if s is not None}
        if actor.site_id not in shared:
            return False
    return True


def can(
    actor: Actor,
    permission: Permission,
    *,
    site_id: str | _Unset | None = _UNSET,
    one_of: Iterable[str | None] | None = None,
) -> bool:
    """`authorize` as a yes/no (for showing a button)."""
    if "system" in actor.roles:
        return True
    if not actor.has_any(MATRIX[permission]):
        return False
    return _site_reached(actor, permission, site_id, None if one_of is None else list(one_of))


def authorize(
    actor: Actor,
    permission: Permission,
    *,
    site_id: str | _Unset | None = _UNSET,
    one_of: Iterable[str | None] | None = None,
) -> None:
    """Raise Forbidden unless the matrix gives one of the actor's roles `permission` and,
    for a site's record, that role's grant reaches the site (`site_id`), or at least one of
    the sites a record is shared by (`one_of`: e.g. the ordering and the making site).

    `site_id=None` is a record of no site: it belongs to the network, and only a grant that
    reaches the network may act on it (never "allowed everywhere"). `None` in `one_of` names
    no site and opens nothing. With neither argument this is a role check only, for a use
    case that then limits what it returns (`site_filter`, `visible_sites`)."""
    if "system" in actor.roles:
        return
    shared = None if one_of is None else list(one_of)
    allowed = MATRIX[permission]
    if not actor.has_any(allowed):
        wanted = ", ".join(sorted(r.value for r in allowed))
        raise Forbidden(
            f"{_WORDS[permission]} needs one of the roles: {wanted}; {actor.username} has none",
            code="forbidden",
        )
    if not _site_reached(actor, permission, site_id, shared):
        raise Forbidden(
            (
                f"this record belongs to the whole network; {actor.username} acts for site "
                f"{actor.site_id or '(none)'} only"
                if site_id is None or (shared is not None and not any(shared))
                else f"this record belongs to another site; {actor.username} acts for site "
                f"{actor.site_id or '(none)'} only"
            ),
            field="site_id",
            code="other_site",
        )


def authorize_network(actor: Actor, permission: Permission) -> None:
    """`authorize` for a network-level action (`NETWORK_LEVEL`): the record is the whole
    network's (`site_id=None`), so only a grant that reaches the network passes."""
    if permission not in NETWORK_LEVEL:  # pragma: no cover - a programming error
        raise ValueError(f"{permission} is not a network-level permission")
    authorize(actor, permission, site_id=None)


def authorize_declared(actor: Actor, permission: Permission) -> None:
    """The check a route's declared permission makes before the route runs (`api.deps.allowed`,
    `web.pages.page`): `authorize_network` for a network-level permission (a site's holder of
    the role is refused: other_site), else the role check of `authorize`."""
    if permission in NETWORK_LEVEL:
        authorize_network(actor, permission)
    else:
        authorize(actor, permission)


def can_network(actor: Actor, permission: Permission) -> bool:
    """`authorize_network` as a yes/no (for showing a button)."""
    return can(actor, permission, site_id=None)


def matrix_markdown() -> str:
    """The matrix as the table in docs/security.md (a test keeps the two the same)."""
    roles = list(Role)
    head = "| permission | " + " | ".join(r.value for r in roles) + " |"
    rule = "|---|" + "|".join(":-:" for _ in roles) + "|"
    rows = [
        f"| `{p.value}` | " + " | ".join("✓" if r in MATRIX[p] else "" for r in roles) + " |"
        for p in Permission
    ]
    return "\n".join([head, rule, *rows])
