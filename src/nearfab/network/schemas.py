"""Response schemas of the network: sites, machines, qualifications, training, simulated runs."""

from __future__ import annotations

from pydantic import ConfigDict

from nearfab.common.schemas import Out, Timestamp


class NetworkMachineOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    machine_type: str
    firmware: str
    status: str
    qualified_for: list[str]


class NetworkSiteOut(Out):
    """A site with its machines and their states."""

    model_config = ConfigDict(extra="forbid")
    id: str
    code: str
    name: str
    kind: str
    status: str
    machines: list[NetworkMachineOut]


class SiteOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    code: str
    name: str
    kind: str
    status: str


class SiteStatusOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    code: str
    status: str
    regulatory_reference: str | None


class SiteSigningPolicyOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    code: str
    totp_for_signing: bool


class MachineOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    site_id: str
    name: str
    machine_type: str
    firmware: str
    status: str


class MachineStatusOut(Out):
    model_config = ConfigDict(extra="forbid")
    id: str
    name: str
    status: str


class QualificationOut(Out):
    model_config = ConfigDict(extra="forbid")
    machine_id: str
    master_file_code: str
    qualified_at: Timestamp
    valid_until: Timestamp | None


class QualificationRevokedOut(Out):
    model_config = ConfigDict(extra="forbid")
    machine_id: str
    master_file_code: str
    revoked: bool


class FaultOut(Out):
    model_config = ConfigDict(extra="forbid")
    machine_id: str
    fault: str


class TrainingOut(Out):
    model_config = ConfigDict(extra="forbid")
    user_id: str
    master_file_code: str
    trained_at: Timestamp
    valid_until: Timestamp | None
