"""Platform keys: every worker on one database must hold the same keys."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from nearfab.common.clock import Clock
from nearfab.identity.enums import AuditAction
from nearfab.identity.models import AuditEntry, PlatformKey


class KeyMismatch(RuntimeError):
    """This worker's keys are not the ones the database was started with."""


def check_platform_keys(
    session_factory: sessionmaker[Any], clock: Clock, fingerprints: Mapping[str, str]
) -> None:
    """Every worker on one database must hold the same keys: the first start records their
    fingerprints (audited); a later start with other keys is refused before it signs or
    encrypts anything."""
    for _attempt in range(2):  # two first starts at once: the loser re-reads and compares
        with session_factory() as session:
            for name, fingerprint in fingerprints.items():
                row = session.get(PlatformKey, name)
                if row is None:
                    now = clock.now()
                    session.add(PlatformKey(name=name, fingerprint=fingerprint, created_at=now))
                    session.add(
                        AuditEntry(
                            at=now,
                            actor_id="system:bootstrap",
                            actor_name="nearfab bootstrap",
                            action=AuditAction.CREATE.value,
                            entity_type="platform_key",
                            entity_id=name,
                            old=None,
                            new={"fingerprint": fingerprint},
                            reason="first start on this database",
                            site_id=None,
                        )
                    )
                elif row.fingerprint != fingerprint:
                    raise KeyMismatch(
                        f"key {name!r} in this data folder ({fingerprint}) is not the one this "
                        f"database was started with ({row.fingerprint}); copy the keys/ folder "
                        "from the first installation"
                    )
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise KeyMismatch("the platform keys could not be registered; try again")


class AuditChainKey:
    """The audit trail's HMAC key (keys/audit_chain.key, 32 random bytes, mode 0600): kept in
    the data folder's key store, never in the database, so plain SQL access cannot compute a
    row's MAC (docs/audit-trail.md)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the audit chain key must be at least 32 bytes")
        self.key = key
        self.fingerprint = hashlib.sha256(b"nearfab-audit-chain" + key).hexdigest()[:16]

    @classmethod
    def load_or_create(cls, path: Path) -> AuditChainKey:
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another worker made it first
                return cls(path.read_bytes())
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        return cls(path.read_bytes())
