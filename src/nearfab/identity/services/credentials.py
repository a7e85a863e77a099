"""Credentials: the password policy, and TOTP secrets (RFC 6238) kept encrypted at rest."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyotp
from cryptography.fernet import Fernet, InvalidToken

from nearfab.common.canonical import sha256_hex
from nearfab.common.errors import ValidationFailed

# The most common passwords found in breaches: the 30,000 of the "passwords" frequency list
# that zxcvbn (MIT licence, PyPI "zxcvbn") ships, built from leaked password corpora. Loaded
# once, on first use; compared case-insensitively, and also with the digits and punctuation at
# the end taken off ("Password2024!" is "password").
_BREACHED: frozenset[str] | None = None
# words of this product that every guesser of a nearfab site tries (beside the username)
CONTEXT_WORDS = ("nearfab",)
PASSWORD_MAX_LENGTH = 256


def breached_passwords() -> frozenset[str]:
    global _BREACHED
    if _BREACHED is None:
        from zxcvbn.frequency_lists import FREQUENCY_LISTS

        raw = FREQUENCY_LISTS["passwords"]
        words = raw.split(",") if isinstance(raw, str) else list(raw)
        _BREACHED = frozenset(w.strip().lower() for w in words if w.strip())
    return _BREACHED


def normalise_password(password: str) -> str:
    """The form a password is hashed and compared in: Unicode NFKC, so that the same
    characters typed on two keyboards (composed or not, full-width or not) are one password."""
    return unicodedata.normalize("NFKC", password)


@dataclass(frozen=True)
class AccountPolicy:
    """Settings of the account rules (NEARFAB_* in config.Settings)."""

    min_length: int = 12
    max_length: int = PASSWORD_MAX_LENGTH
    history: int = 5
    max_age: timedelta = timedelta(days=90)
    lockout_after: int = 5
    idle_timeout: timedelta = timedelta(minutes=15)
    lifetime: timedelta = timedelta(hours=12)
    totp_issuer: str = "nearfab"
    # a password-then-TOTP login must finish within this
    totp_step_timeout: timedelta = timedelta(minutes=5)


def check_password_rules(policy: AccountPolicy, username: str, password: str) -> str:
    """Normalise (NFKC) and check a new password; returns the normalised form (the one to
    hash). Refused, naming the field and the reason: longer than `max_length` characters,
    control or invisible (format) characters, only whitespace, shorter than `min_length`,
    containing the username or the product's name, or one of the breached passwords.
    History is checked by the service."""
    if len(password) > policy.max_length:  # before any work on a huge input
        raise ValidationFailed(
            f"password must have at most {policy.max_length} characters",
            field="password",
            code="password_too_long",
        )
    pw = normalise_password(password)
    if len(pw) > policy.max_length:
        raise ValidationFailed(
            f"password must have at most {policy.max_length} characters",
            field="password",
            code="password_too_long",
        )
    for char in pw:
        category = unicodedata.category(char)
        if category.startswith("C") or category in ("Zl", "Zp"):
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            raise ValidationFailed(
                f"password must not contain control or invisible characters (found {name})",
                field="password",
                code="password_bad_character",
            )
    if not pw.strip():
        raise ValidationFailed(
            "password must not be only spaces", field="password", code="password_blank"
        )
    if len(pw) < policy.min_length:
        raise ValidationFailed(
            f"password must have at least {policy.min_length} characters",
            field="password",
            code="password_too_short",
        )
    lowered = pw.casefold()
    if username and username.strip().casefold() in lowered:
        raise ValidationFailed(
            "password must not contain the username", field="password", code="password_has_username"
        )
    for word in CONTEXT_WORDS:
        if word in lowered:
            raise ValidationFailed(
                f"password must not contain {word!r}", field="password", code="password_common"
            )
    core = lowered.rstrip("0123456789!@#$%^&*?.,-_ ")
    breached = breached_passwords()
    if lowered in breached or core in breached or lowered.replace(" ", "") in breached:
        raise ValidationFailed(
            "password is one of the most common passwords found in breaches; choose another",
            field="password",
            code="password_common",
        )
    return pw


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
