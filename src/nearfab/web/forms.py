"""Form pieces several web pages share."""

from __future__ import annotations

from typing import TypedDict


class Signature(TypedDict):
    """The e-signature fields of a signed form, as the services take them: the password as
    typed; an empty username (the signer is the logged-in person) or code (no second
    factor) as None."""

    password: str
    username: str | None
    totp: str | None


def signature(password: str, username: str, totp: str) -> Signature:
    return {"password": password, "username": username or None, "totp": totp or None}
