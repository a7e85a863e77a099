"""Master-file lifecycle."""

from enum import StrEnum


class MasterFileStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    EFFECTIVE = "effective"
    SUPERSEDED = "superseded"
    WITHDRAWN = "withdrawn"


MASTER_FILE_TRANSITIONS: dict[MasterFileStatus, frozenset[MasterFileStatus]] = {
    MasterFileStatus.DRAFT: frozenset({MasterFileStatus.APPROVED, MasterFileStatus.WITHDRAWN}),
    MasterFileStatus.APPROVED: frozenset({MasterFileStatus.EFFECTIVE, MasterFileStatus.WITHDRAWN}),
    MasterFileStatus.EFFECTIVE: frozenset(
        {MasterFileStatus.SUPERSEDED, MasterFileStatus.WITHDRAWN}
    ),
    MasterFileStatus.SUPERSEDED: frozenset(),
    MasterFileStatus.WITHDRAWN: frozenset(),
}
