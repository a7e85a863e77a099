"""Master files: versioned, QP-approved product definitions; nothing is made without one."""

from nearfab.masterfiles.changecontrol import (
    ChangeControl,
    ChangeControlService,
    ChangeControlStatus,
)
from nearfab.masterfiles.enums import MasterFileStatus
from nearfab.masterfiles.models import MasterFile
from nearfab.masterfiles.schemas import MasterFileIn
from nearfab.masterfiles.services import MasterFileService, pydantic_to_domain

__all__ = [
    "ChangeControl",
    "ChangeControlService",
    "ChangeControlStatus",
    "MasterFile",
    "MasterFileIn",
    "MasterFileService",
    "MasterFileStatus",
    "pydantic_to_domain",
]
