"""Per-node keys (`nearfab node rekey`, docs/audit-trail.md "Key epochs"): a node's data folder
is made from a copy of the control's, keys/ included, so until it is rekeyed it holds the
control's audit HMAC key and its ticket and checkpoint signing key. A rekey makes the node's own
pair, in one transaction with the audit row that records the change (old and new fingerprints)
and the recorded platform-key fingerprints, so `check_platform_keys` passes with the new keys.

Key epochs: the rekey row is MACed with the new key and names, besides the keys, the head it
seals (`new.sealed_head`: seq and hash of the row before it). Verification (auditverify.py)
checks the rows before it with the old key where this folder holds it (its own earlier keys,
under keys/retired/), and otherwise by the seal only: the chain's hashes up to the rekey row,
whose MAC with the new key pins that head. The control's key is never kept at a site: the first
rekey of a copy drops it (`old_audit_key_kept` false); later rekeys keep the node's own old key
under keys/retired/ for verification only. The old signing key's private half is deleted; its
public half is kept (keys/retired/checkpoint_key-<id>.json) with the seq of the last
checkpoint it had signed here (`until_seq`): a checkpoint it signs later is another chain's.

The new key files are written to keys/pending/ first and moved into place after the commit;
`settle_pending_keys` (bootstrap, before the keys are read) finishes or drops a rekey a crash
interrupted, by comparing them with what the database recorded; a start while a rekey holds
keys/.rekey.lock is refused (KeyMismatch). Rekey a stopped node: a process already running
keeps the keys it was started with."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.identity.enums import AuditAction
from nearfab.identity.logic import Actor
from nearfab.identity.models import AuditEntry, PlatformKey
from nearfab.identity.services.auditchain import (
    MAC_KEY_OVERRIDE,
    REKEY_ENTITY_ID,
    REKEY_ENTITY_TYPE,
    audit_key_fingerprint,
    audit_keys,
    lock_head,
)
from nearfab.identity.services.auditlog import audit
from nearfab.identity.services.auditverify import verify_chain
from nearfab.identity.services.checkpoints import stored_checkpoints
from nearfab.identity.services.keys import (
    KeyMismatch,
    load_retired_keys,
    retired_mac_path,
    retired_signing_path,
    write_private,
)
from nearfab.uow import UnitOfWork

AUDIT_KEY_FILE = "audit_chain.key"
SIGNING_KEY_FILE = "control_site_ed25519.pem"
PENDING = "pending"  # keys/pending/: a rekey's new keys until its transaction commits
LOCK = ".rekey.lock"  # held by a rekey from start to end; a start meanwhile is refused
AUDIT_KEY_NAME = "audit_chain"  # platform_keys names
SIGNING_KEY_NAME = "control_site_ed25519"


@dataclass(frozen=True)
class SigningKey:
    """A ticket and checkpoint signing key as the composition root made or read it (Ed25519,
    production's TicketSigner: identity does not import production)."""

    key_id: str
    public_key_pem: str
    sign: Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class RekeyResult:
    old_audit_key: str
    new_audit_key: str
    old_signing_key: str
    new_signing_key: str
    audit_seq: int  # the rekey row
    sealed_seq: int  # the last row of the old epoch
    old_audit_key_kept: bool  # under keys/retired/ (the node's own earlier key only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _last_rekey(uow: UnitOfWork) -> dict[str, Any] | None:
    found = uow.session.execute(
        select(AuditEntry.new)
        .where(AuditEntry.entity_type == REKEY_ENTITY_TYPE, AuditEntry.entity_id == REKEY_ENTITY_ID)
        .order_by(AuditEntry.seq.desc())
        .limit(1)
    ).first()
    return dict(found[0]) if found is not None and isinstance(found[0], dict) else None


@contextlib.contextmanager
def _rekey_lock(keys_dir: Path, *, wait: bool) -> Iterator[bool]:
    """The data folder's rekey lock (flock on keys/.rekey.lock): yields whether it was taken
    (always, when `wait`)."""
    fd = os.open(keys_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def rekey_node(
    uow: UnitOfWork,
    actor: Actor,
    keys_dir: Path,
    *,
    reason: str,
    make_signing_key: Callable[[Path], SigningKey],
    keep_old_audit_key: bool = False,
) -> RekeyResult:
    """Give this data folder its own audit HMAC key and signing key (see the module). The old
    audit key is kept under keys/retired/ when an earlier rekey here made it, or when
    `keep_old_audit_key` says it is this installation's own (a rotation at the control; never
    at a site node's copy, where it is the control's). Refused: an empty reason (`reason`), a
    folder whose key files are not the ones this database recorded (`keys`), an audit trail
    that does not verify (`audit_trail`: a broken chain is not sealed). Committed."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationFailed("a rekey needs a reason (kept in the audit trail)", field="reason")
    with _rekey_lock(keys_dir, wait=True):
        return _rekey(uow, actor, keys_dir, reason, make_signing_key, keep_old_audit_key)


def _rekey(
    uow: UnitOfWork,
    actor: Actor,
    keys_dir: Path,
    reason: str,
    make_signing_key: Callable[[Path], SigningKey],
    keep_own: bool,
) -> RekeyResult:
    conn = uow.session.connection()
    keys = audit_keys(conn)
    if keys is None or keys.sign is None:
        raise ValidationFailed("no audit and signing keys are installed here", field="keys")
    old_mac, old_fp = keys.mac_key, audit_key_fingerprint(keys.mac_key)
    old_kid, old_pem = keys.key_id, keys.public_key_pem
    on_disk = (keys_dir / AUDIT_KEY_FILE).read_bytes()
    recorded = {
        name: uow.session.get(PlatformKey, name) for name in (AUDIT_KEY_NAME, SIGNING_KEY_NAME)
    }
    if (
        audit_key_fingerprint(on_disk) != old_fp
        or recorded[AUDIT_KEY_NAME] is None
        or recorded[AUDIT_KEY_NAME].fingerprint != old_fp  # type: ignore[union-attr]
        or recorded[SIGNING_KEY_NAME] is None
        or recorded[SIGNING_KEY_NAME].fingerprint != old_kid  # type: ignore[union-attr]
    ):
        raise Refused(
            "the keys in this data folder are not the ones its database recorded",
            field="keys",
            code="keys_mismatch",
        )
    sealed_seq, sealed_hash = lock_head(conn)  # the chain's write lock, to the commit
    report = verify_chain(conn)
    if not report.ok:
        bad = report.first_bad.describe() if report.first_bad else "?"
        raise Refused(
            f"the audit trail does not verify, so it is not sealed under a new key: {bad}",
            field="audit_trail",
            code="chain_broken",
        )
    # the old key vouches here for the checkpoints it had signed here, no later one (at a site,
    # the control's key goes on signing the control's chain, whose seqs go on from the copy's)
    signed_up_to = max(
        (c.seq for c in stored_checkpoints(conn, keys)[0] if c.key_id == old_kid), default=0
    )
    last = _last_rekey(uow)
    # the node's own key (an earlier rekey here made it, or the caller says so): kept
    keep_old = keep_own or (last is not None and last.get("audit_chain") == old_fp)
    pending = keys_dir / PENDING
    shutil.rmtree(pending, ignore_errors=True)
    pending.mkdir(mode=0o700)
    try:
        new_mac = secrets.token_bytes(32)
        new_fp = audit_key_fingerprint(new_mac)
        write_private(pending / AUDIT_KEY_FILE, new_mac)
        signer = make_signing_key(pending / SIGNING_KEY_FILE)
        now = uow.clock.now()
        for name, fingerprint in ((AUDIT_KEY_NAME, new_fp), (SIGNING_KEY_NAME, signer.key_id)):
            row = recorded[name]
            assert row is not None
            row.fingerprint, row.created_at = fingerprint, now
        uow.session.flush()
        entry = audit(
            uow,
            actor,
            AuditAction.UPDATE,
            REKEY_ENTITY_TYPE,
            REKEY_ENTITY_ID,
            old={AUDIT_KEY_NAME: old_fp, SIGNING_KEY_NAME: old_kid},
            new={
                AUDIT_KEY_NAME: new_fp,
                SIGNING_KEY_NAME: signer.key_id,
                "sealed_head": [sealed_seq, sealed_hash],
                "old_audit_key_kept": keep_old,
            },
            reason=reason,
        )
        uow.session.info[MAC_KEY_OVERRIDE] = new_mac  # the rekey row starts the new epoch
        try:
            uow.session.flush()
        finally:
            uow.session.info.pop(MAC_KEY_OVERRIDE, None)
        if keep_old:
            write_private(retired_mac_path(keys_dir, old_fp), old_mac)
        public = {"key_id": old_kid, "public_key_pem": old_pem, "until_seq": signed_up_to}
        write_private(retired_signing_path(keys_dir, old_kid), json.dumps(public).encode())
        uow.commit()
    except BaseException:
        shutil.rmtree(pending, ignore_errors=True)
        raise
    _install_pending(keys_dir)
    # this process's engine writes and verifies with the new keys from here on
    keys.mac_key = new_mac
    keys.key_id, keys.public_key_pem, keys.sign = signer.key_id, signer.public_key_pem, signer.sign
    keys.retired_mac, keys.retired_signing = load_retired_keys(keys_dir)
    return RekeyResult(
        old_audit_key=old_fp,
        new_audit_key=new_fp,
        old_signing_key=old_kid,
        new_signing_key=signer.key_id,
        audit_seq=int(entry.seq or 0),
        sealed_seq=sealed_seq,
        old_audit_key_kept=keep_old,
    )


def _install_pending(keys_dir: Path) -> None:
    """Move a committed rekey's keys into place (the old private halves are overwritten)."""
    pending = keys_dir / PENDING
    for name in (AUDIT_KEY_FILE, SIGNING_KEY_FILE):
        os.replace(pending / name, keys_dir / name)
    pending.rmdir()


def settle_pending_keys(
    keys_dir: Path, session_factory: sessionmaker[Any], signing_key_id: Callable[[Path], str]
) -> str | None:
    """A rekey interrupted between its commit and moving its keys into place: when the
    database recorded the pending keys' fingerprints, move them in ("installed"); otherwise
    the rekey did not commit, drop them ("dropped"). None: nothing pending."""
    pending = keys_dir / PENDING
    if not pending.is_dir():
        return None
    with _rekey_lock(keys_dir, wait=False) as taken:
        if not taken:
            raise KeyMismatch(
                "a rekey is under way in this data folder (nearfab node rekey): start again "
                "when it has finished"
            )
        return _settle(keys_dir, session_factory, signing_key_id)


def _settle(
    keys_dir: Path, session_factory: sessionmaker[Any], signing_key_id: Callable[[Path], str]
) -> str | None:
    pending = keys_dir / PENDING
    if not pending.is_dir():
        return None
    files = [pending / AUDIT_KEY_FILE, pending / SIGNING_KEY_FILE]
    with session_factory() as session:
        recorded = {r.name: r.fingerprint for r in session.scalars(select(PlatformKey))}
    committed = all(f.exists() for f in files) and (
        recorded.get(AUDIT_KEY_NAME) == audit_key_fingerprint(files[0].read_bytes())
        and recorded.get(SIGNING_KEY_NAME) == signing_key_id(files[1])
    )
    if committed:
        _install_pending(keys_dir)
        return "installed"
    shutil.rmtree(pending)
    return "dropped"
