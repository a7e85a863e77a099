"""Response schemas of the network: sites, machines, qualifications, training, simulated runs."""

from __future__ import annotations

from nearfab.common.schemas import Out, Timestamp


class NetworkMachineOut(Out):
    id: str
    name: str
    machine_type: str
    firmware: str
    status: str
    qualified_for: list[str]


class SiteOut(Out):
    id: str
    code: str
    name: str
    kind: str
    status: str


class NetworkSiteOut(SiteOut):
    """A site with its machines and their states."""

    machines: list[NetworkMachineOut]


class SiteStatusOut(Out):
    id: str
    code: str
    status: str
    regulatory_reference: str | None


class SiteSigningPolicyOut(Out):
    id: str
    code: str
    totp_for_signing: bool


class SitePatientIdentificationOut(Out):
    """How a site identifies patients at a hand-over (docs/patient-identification.md)."""

    id: str
    code: str
    birth_date_required: bool
    mrn_system: str | None


class MachineOut(Out):
    id: str
    site_id: str
    name: str
    machine_type: str
    firmware: str
    status: str


class MachineStatusOut(Out):
    id: str
    name: str
    status: str


class QualificationOut(Out):
    machine_id: str
    master_file_code: str
    qualified_at: Timestamp
    valid_until: Timestamp | None


class QualificationRevokedOut(Out):
    machine_id: str
    master_file_code: str
    revoked: bool


class FaultOut(Out):
    machine_id: str
    fault: str


class TrainingOut(Out):
    user_id: str
    master_file_code: str
    trained_at: Timestamp
    valid_until: Timestamp | None
