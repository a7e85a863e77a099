"""The audit trail: one row per change, written in the changing transaction, append-only and
hash-chained (docs/audit-trail.md). This module is its one import path; the parts:

- auditlog.py: writing (`audit`, `audited_transition`, `refuse`, the GMP reason rule);
- auditchain.py: numbering and hashing at flush, `append_audit_rows`, the keys, the head;
- checkpoints.py: signed checkpoints of the audit and ledger heads, and their export file;
- auditverify.py: `verify_chain` names the first bad row; checkpoints checked against rows;
- auditsearch.py: searching rows, the signatures on a record;
- auditddl.py: the triggers that keep the tables append-only (registered on import).
"""

from __future__ import annotations

from nearfab.identity.services.auditchain import (
    GENESIS,
    MAC_CONTEXT,
    AuditKeys,
    BadRow,
    _move_head_after_flush,
    _number_new_entries,
    append_audit_rows,
    audit_keys,
    entry_content,
    entry_hash,
    entry_mac,
    install_audit_keys,
)
from nearfab.identity.services.auditddl import (
    APPEND_ONLY_TABLES,
    PG_FUNCTIONS,
    append_only_ddl,
    drop_append_only_ddl,
    drop_head_ddl,
    head_ddl,
)
from nearfab.identity.services.auditlog import (
    GMP_ENTITY_TYPES,
    REASON_ACTIONS,
    audit,
    audit_trail,
    audited_transition,
    refuse,
    require_audit_reason,
)
from nearfab.identity.services.auditsearch import MAX_PAGE, search_audit, signatures_on
from nearfab.identity.services.auditverify import ChainReport, verify_audit_chain, verify_chain
from nearfab.identity.services.checkpoints import (
    CHECKPOINT_EVERY,
    CHECKPOINT_EVERY_ROWS,
    CHECKPOINT_TYPE,
    FILE_TYPE,
    Checkpoint,
    CheckpointFile,
    checkpoint_body,
    checkpoint_if_due,
    create_checkpoint,
    export_checkpoint,
    json_loads,
    read_checkpoint_file,
    signature_ok,
    stored_checkpoints,
    take_checkpoint,
)

__all__ = [
    "APPEND_ONLY_TABLES",
    "CHECKPOINT_EVERY",
    "CHECKPOINT_EVERY_ROWS",
    "CHECKPOINT_TYPE",
    "FILE_TYPE",
    "GENESIS",
    "GMP_ENTITY_TYPES",
    "MAC_CONTEXT",
    "MAX_PAGE",
    "PG_FUNCTIONS",
    "REASON_ACTIONS",
    "AuditKeys",
    "BadRow",
    "ChainReport",
    "Checkpoint",
    "CheckpointFile",
    # the flush hooks (benchmarks/audit_chain.py detaches them to measure their cost)
    "_move_head_after_flush",
    "_number_new_entries",
    "append_audit_rows",
    "append_only_ddl",
    "audit",
    "audit_keys",
    "audit_trail",
    "audited_transition",
    "checkpoint_body",
    "checkpoint_if_due",
    "create_checkpoint",
    "drop_append_only_ddl",
    "drop_head_ddl",
    "entry_content",
    "entry_hash",
    "entry_mac",
    "export_checkpoint",
    "head_ddl",
    "install_audit_keys",
    "json_loads",
    "read_checkpoint_file",
    "refuse",
    "require_audit_reason",
    "search_audit",
    "signature_ok",
    "signatures_on",
    "stored_checkpoints",
    "take_checkpoint",
    "verify_audit_chain",
    "verify_chain",
]
