"""Platform keys: every worker on one database must hold the same keys."""

from __future__ import annotations

import json
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
from nearfab.identity.services.auditchain import RetiredSigningKey, audit_key_fingerprint


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
        self.fingerprint = audit_key_fingerprint(key)

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


# --- retired keys (a rekeyed node, identity/services/nodekeys.py) ------------------------------
RETIRED = "retired"  # keys/retired/: earlier keys, kept for verification only


def retired_mac_path(keys_dir: Path, fingerprint: str) -> Path:
    return keys_dir / RETIRED / f"audit_chain-{fingerprint}.key"


def retired_signing_path(keys_dir: Path, key_id: str) -> Path:
    return keys_dir / RETIRED / f"checkpoint_key-{key_id}.json"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600, its folder 0700), replacing it atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_retired_keys(keys_dir: Path) -> tuple[dict[str, bytes], list[RetiredSigningKey]]:
    """The earlier audit keys this node made itself (by fingerprint, computed from the bytes,
    not the file name) and the public halves of the earlier checkpoint keys, with the last
    audit row each may have signed a checkpoint of."""
    folder = keys_dir / RETIRED
    macs: dict[str, bytes] = {}
    signing: list[RetiredSigningKey] = []
    if not folder.is_dir():
        return macs, signing
    for path in sorted(folder.glob("audit_chain-*.key")):
        key = path.read_bytes()
        if len(key) >= 32:
            macs[audit_key_fingerprint(key)] = key
    for path in sorted(folder.glob("checkpoint_key-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        signing.append(
            RetiredSigningKey(
                key_id=str(data["key_id"]),
                public_key_pem=str(data["public_key_pem"]),
                until_seq=int(data["until_seq"]),
            )
        )
    return macs, signing
