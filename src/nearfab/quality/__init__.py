"""Quality: real-time release testing, deviations and QP release decisions."""

from nearfab.quality.enums import Decision, DeviationStatus, ReviewStatus
from nearfab.quality.events import BatchDispositioned
from nearfab.quality.kit import (
    Check,
    FamilyLotRules,
    ReleaseEvidence,
    ReleaseKit,
    ReleaseResults,
    signatory_title,
)
from nearfab.quality.logic import validate_release_rule
from nearfab.quality.models import Deviation, ReleaseReview
from nearfab.quality.qms import QmsService, work_in_progress
from nearfab.quality.qms_models import Capa, Complaint, QaAssignment
from nearfab.quality.records import refused_on_batch
from nearfab.quality.remote import RemoteRelease
from nearfab.quality.services import QualityService

__all__ = [
    "BatchDispositioned",
    "Capa",
    "Check",
    "Complaint",
    "Decision",
    "Deviation",
    "DeviationStatus",
    "FamilyLotRules",
    "QaAssignment",
    "QmsService",
    "QualityService",
    "ReleaseEvidence",
    "ReleaseKit",
    "ReleaseResults",
    "ReleaseReview",
    "RemoteRelease",
    "ReviewStatus",
    "refused_on_batch",
    "signatory_title",
    "validate_release_rule",
    "work_in_progress",
]
