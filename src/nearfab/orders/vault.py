"""Encryption of patient-identifying data, and keyed look-up hashes, with one local key."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet


class IdentityVault:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        # names the key without revealing it (checked against the database at start)
        self.fingerprint = hashlib.sha256(b"nearfab-fingerprint" + key).hexdigest()[:16]
        self._mac_key = hashlib.sha256(b"nearfab-lookup" + key).digest()

    @classmethod
    def generate(cls) -> IdentityVault:
        return cls(Fernet.generate_key())

    @classmethod
    def load_or_create(cls, path: Path) -> IdentityVault:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    def encrypt(self, value: Any) -> bytes:
        return self._fernet.encrypt(json.dumps(value, default=str, sort_keys=True).encode())

    def decrypt(self, token: bytes) -> Any:
        return json.loads(self._fernet.decrypt(token))

    def lookup_hash(self, text: str) -> str:
        return hmac.new(self._mac_key, text.encode(), hashlib.sha256).hexdigest()
