"""A master-file version published to the site nodes, and installed there (issue 17,
docs/replication.md, "Master files across the network").

When a version becomes effective at the control site, `make_effective` writes, in its
transaction, an audit row `master_file_published` carrying the whole version (every column
but the row version) and the QP's approval signature row (`SignatureService.carried`), and
which versions it supersedes. That row travels to the site nodes; a site node installs it
(`MasterFileService.install_published`): the version stored as it was approved, its approval
signature row stored as it was made (the same id and hashes), checked against the version's
content, and the versions it supersedes superseded, each with its audit row, in one
transaction. A control-site withdrawal reaches the sites the same way (`withdraw_published`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nearfab.masterfiles.models import MasterFile

PUBLISHED_ENTITY = "master_file_published"  # audit rows: a version the sites install

# the columns a published version carries (all but the optimistic-locking row version)
COLUMNS = tuple(c.name for c in MasterFile.__table__.columns if c.name != "row_version")
TIMES = ("created_at", "approved_at", "effective_from")


def published_fields(mf: MasterFile) -> dict[str, Any]:
    """The version as a site node installs it; times as ISO text."""
    out = {name: getattr(mf, name) for name in COLUMNS}
    for name in TIMES:
        moment = out[name]
        out[name] = moment.isoformat() if isinstance(moment, datetime) else moment
    return out


def from_published(fields: dict[str, Any]) -> MasterFile:
    """The version rebuilt from a published row (KeyError names a missing column)."""
    values = {name: fields[name] for name in COLUMNS}
    for name in TIMES:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(str(values[name]))
    return MasterFile(**values)
