"""Form pieces several web pages share."""

from __future__ import annotations

from typing import TypedDict

from fastapi import Request


class Signature(TypedDict):
    """The e-signature fields of a signed form, as the services take them: the password as
    typed; an empty username (the signer is the logged-in person) or code (no second
    factor) as None."""

    password: str
    username: str | None
    totp: str | None


def signature(password: str, username: str, totp: str) -> Signature:
    return {"password": password, "username": username or None, "totp": totp or None}


async def form_text(request: Request) -> dict[str, str]:
    """The posted form's text fields (an uploaded file, never expected here, is left out)."""
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
