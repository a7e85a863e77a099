"""Response schemas of replication: the site nodes' release dossiers at the control site and
the QP's decision on one (replication/releases.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nearfab.common.schemas import Out


class RemoteDecisionOut(Out):
    """The control site's QP decision on a site node's dossier, as the control recorded it."""

    decision: str
    reason: str | None
    signed_by: str | None
    signed_at: str | None


class RemoteDossierOut(Out):
    """A site node's newest release dossier of a batch, as the control site holds it."""

    record_id: str
    origin_site: str
    seq: int
    received_at: str
    batch_id: str
    batch_number: str
    site_id: str
    master_file_code: str
    proposed_decision: str
    reasons: list[str]
    pending_results: list[str]
    blockers: list[str]
    # the release tests the batch failed, and the treating physician's request for its
    # exceptional release signed at the site (quality's `ExceptionalOut` shape), if any
    out_of_specification: list[str]
    exceptional_request: dict[str, Any] | None
    shown_hash: str
    decision: RemoteDecisionOut | None


class RemoteDossierDetailOut(RemoteDossierOut):
    """A dossier with what the QP signs: the batch record, its signed steps and laboratory
    results, the RTRT proposal and the deviations, as the site sent them."""

    content: dict[str, Any]


class RemoteSignatureOut(Out):
    id: str
    signer_id: str
    signer_name: str
    meaning: str
    signed_at: str
    record_type: str
    record_id: str
    record_hash: str
    signature_hash: str
    components: str | None


class RemoteReleaseOut(Out):
    """The decision signed at the control site, as it travels to the site node."""

    dossier_record: str
    dossier_record_hash: str
    origin_site: str
    site_id: str
    batch_id: str
    batch_number: str
    review_id: str
    shown_hash: str
    decision: str
    exceptional: bool
    reason: str | None
    signature: RemoteSignatureOut


class SiteAlertStepOut(Out):
    to_status: str
    outcome: str | None
    note: str
    acted_by_name: str
    acted_at: str | None


class SiteAlertOut(Out):
    """A site node's custody alert, in the newest state the control received (replication/
    alerts.py `site_alerts`)."""

    alert_id: str
    site_id: str
    site_code: str
    kind: str
    message: str
    scan: str
    raised_at: str | None
    status: str
    status_changed_at: str | None
    unit_id: str | None
    serial: str | None
    gtin: str | None
    batch_number: str | None
    unit_status: str | None
    steps: int
    last_step: SiteAlertStepOut | None
    audit_seq: int
    record_id: str
    received_at: str


class OrderTransferOut(Out):
    """An order moved from the site node holding it to another, as the control holds it
    (replication/transfers.py): `status` requested (the giving site has not answered), handed
    over (to the receiving site's node) or ended (`outcome` says why)."""

    transfer_id: str
    order_id: str
    from_site_id: str
    to_site_id: str
    reason: str
    requested_by: str
    requested_at: str
    record_id: str
    status: str
    outcome: str | None


class OrderTransferStateOut(OrderTransferOut):
    """A transfer as the control's people see it (`GET /api/v1/order-transfers`, the node
    page's "Orders moving between sites"): `state` requested, given_up (at the giving site,
    its release not handed over yet), refused (by the giving site), ended, handed_over, taken
    / waiting_there / refused_there (at the receiving site, from its records held here),
    `state_words` in words, `since` when it came to that state, and `stuck` (null when it is
    moving) saying why it does not move and what to do."""

    from_site_code: str
    to_site_code: str
    state: str
    state_words: str
    since: datetime
    stuck: str | None
    handover_record: str | None
