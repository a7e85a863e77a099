"""Identifiers: opaque, random, prefixed by kind so a log line says what it points at."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def new_id(prefix: str, length: int = 12) -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(length))
    return f"{prefix}_{body}"


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
