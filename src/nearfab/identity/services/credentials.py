"""Credentials: the password policy, and TOTP secrets (RFC 6238) kept encrypted at rest."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyotp
from cryptography.fernet import Fernet, InvalidToken

from nearfab.common.canonical import sha256_hex
from nearfab.common.errors import ValidationFailed

# a short list of passwords every guesser tries first (compared case-insensitively, and with
# the digits and punctuation at the end taken off: "Password2024!" is "password")
COMMON_PASSWORDS = frozenset(
    {
        "password",
        "passw0rd",
        "p@ssw0rd",
        "password1",
        "passwordpassword",
        "123456789012",
        "1234567890",
        "qwertyuiop",
        "qwertyuiopas",
        "qwerty",
        "qwerty123456",
        "asdfghjkl",
        "iloveyou",
        "letmein",
        "welcome",
        "welcome123",
        "changeme",
        "administrator",
        "admin",
        "monkey",
        "dragon",
        "football",
        "baseball",
        "sunshine",
        "princess",
        "trustno1",
        "superman",
        "starwars",
        "whatever",
        "abcdefghijkl",
        "abc123",
        "000000000000",
        "111111111111",
        "aaaaaaaaaaaa",
        "nearfab",
        "hospital",
        "pharmacy",
        "correcthorsebatterystaple",
    }
)


@dataclass(frozen=True)
class AccountPolicy:
    """Settings of the account rules (NEARFAB_* in config.Settings)."""

    min_length: int = 12
    history: int = 5
    max_age: timedelta = timedelta(days=90)
    lockout_after: int = 5
    idle_timeout: timedelta = timedelta(minutes=15)
    lifetime: timedelta = timedelta(hours=12)
    totp_issuer: str = "nearfab"
    # a password-then-TOTP login must finish within this
    totp_step_timeout: timedelta = timedelta(minutes=5)


def check_password_rules(policy: AccountPolicy, username: str, password: str) -> None:
    """Length, not the username, not a common password. History is checked by the service."""
    if len(password) < policy.min_length:
        raise ValidationFailed(
            f"password must have at least {policy.min_length} characters",
            field="password",
            code="password_too_short",
        )
    if username and username.strip().lower() in password.lower():
        raise ValidationFailed(
            "password must not contain the username", field="password", code="password_has_username"
        )
    lowered = password.lower()
    core = lowered.rstrip("0123456789!@#$%^&*?.,-_ ")
    if lowered in COMMON_PASSWORDS or core in COMMON_PASSWORDS:
        raise ValidationFailed(
            "password is one of the commonly used passwords; choose another",
            field="password",
            code="password_common",
        )


class SecretBox:
    """Encrypts TOTP secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256)."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        self.fingerprint = sha256_hex(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SecretBox:
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    @classmethod
    def ephemeral(cls) -> SecretBox:
        """For a service built without a key file (secrets do not survive a restart)."""
        return cls(Fernet.generate_key())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("ascii")).decode("ascii")

    def open(self, sealed: str) -> str | None:
        try:
            return self._fernet.decrypt(sealed.encode("ascii")).decode("ascii")
        except InvalidToken:
            return None


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def totp_code(secret: str, at: datetime) -> str:
    """The code a device shows at `at` (tests and the CLI use it)."""
    return pyotp.TOTP(secret).at(at)


def totp_step(secret: str, code: str, at: datetime, last_step: int | None) -> int | None:
    """The time step `code` belongs to (30 s steps, one step of drift either way), or None if
    it matches none, or only a step already used (a code works once)."""
    code = (code or "").strip().replace(" ", "")
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    for drift in (0, -1, 1):
        moment = at + timedelta(seconds=30 * drift)
        step = totp.timecode(moment)
        if last_step is not None and step <= last_step:
            continue
        if pyotp.utils.strings_equal(totp.at(moment), code):
            return step
    return None
