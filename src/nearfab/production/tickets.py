"""Job tickets: what a machine is told to make, signed by the control site with Ed25519.

A machine executes a ticket only when the signature verifies against the control site's
public key, the ticket names that machine, and it has not expired. Any change to the payload
after signing (dose, units, process parameters...) breaks the signature.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from nearfab.common.canonical import canonical_json, sha256_hex, to_jsonable
from nearfab.common.clock import utcnow
from nearfab.common.errors import Refused


class TicketRejected(Refused):
    """A machine (or the platform) refuses a job ticket."""

    code = "ticket_rejected"


def _raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    return sha256_hex(_raw_public_bytes(public_key))[:16]


@dataclass(frozen=True)
class SignedTicket:
    payload: dict[str, Any]  # JSON-ready
    signature: str  # base64 of the Ed25519 signature over canonical_json(payload)
    key_id: str  # first 16 hex of sha256 of the raw public key

    @property
    def ticket_hash(self) -> str:
        return sha256_hex(canonical_json(self.payload))

    def to_dict(self) -> dict[str, Any]:
        return {"payload": self.payload, "signature": self.signature, "key_id": self.key_id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignedTicket:
        payload = d.get("payload")
        if not isinstance(payload, Mapping):
            raise TicketRejected("malformed ticket: payload must be an object", field="payload")
        signature = d.get("signature") or ""
        key_id = d.get("key_id") or ""
        if not isinstance(signature, str):
            raise TicketRejected("malformed ticket: signature must be a string", field="signature")
        if not isinstance(key_id, str):
            raise TicketRejected("malformed ticket: key_id must be a string", field="key_id")
        return cls(payload=dict(payload), signature=signature, key_id=key_id)


class TicketSigner:
    """The control site's signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._public_key = private_key.public_key()
        self.key_id: str = key_id_of(self._public_key)

    @classmethod
    def load_or_create(cls, path: Path) -> TicketSigner:
        """Load the PEM (PKCS8, unencrypted) key at `path`, or create it (mode 0600)."""
        path = Path(path)
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return cls(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
        os.chmod(path, 0o600)  # in case the umask was stricter than needed or odd
        return cls(key)

    @property
    def public_key_pem(self) -> str:
        return self._public_key.public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        ).decode("ascii")

    def sign(self, payload: Mapping[str, Any]) -> SignedTicket:
        plain: dict[str, Any] = to_jsonable(dict(payload))
        signature = self._private_key.sign(canonical_json(plain))
        return SignedTicket(
            payload=plain,
            signature=base64.b64encode(signature).decode("ascii"),
            key_id=self.key_id,
        )


def _load_public_key(public_key_pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("the control site's public key is not a valid PEM key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the control site's public key is not an Ed25519 key")
    return key


def _parse_expiry(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TicketRejected("ticket expires_at is not an ISO datetime", field="expires_at")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise TicketRejected(
            f"ticket expires_at {value!r} is not an ISO datetime", field="expires_at"
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def verify_ticket(
    ticket: SignedTicket,
    public_key_pem: str,
    *,
    machine_id: str | None = None,
    now: datetime | None = None,
) -> None:
    """Raise TicketRejected unless `ticket` is the control site's, for this machine, unexpired."""
    if not ticket.signature:
        raise TicketRejected("unsigned ticket: it carries no signature", field="signature")
    try:
        signature = base64.b64decode(ticket.signature.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise TicketRejected("ticket signature is not valid base64", field="signature") from exc

    public_key = _load_public_key(public_key_pem)
    expected_key_id = key_id_of(public_key)
    if ticket.key_id != expected_key_id:
        raise TicketRejected(
            f"ticket was signed with key {ticket.key_id or '(none)'}, "
            f"not the control site's key {expected_key_id}",
            field="key_id",
        )
    try:
        public_key.verify(signature, canonical_json(ticket.payload))
    except InvalidSignature as exc:
        raise TicketRejected(
            "ticket signature does not match: altered or not signed by the control site",
            field="signature",
        ) from exc

    if machine_id is not None:
        ticket_machine = ticket.payload.get("machine_id")
        if ticket_machine != machine_id:
            raise TicketRejected(
                f"ticket is for machine {ticket_machine or '(none)'}, not {machine_id}",
                field="machine_id",
            )

    if "expires_at" in ticket.payload:
        expires_at = _parse_expiry(ticket.payload["expires_at"])
        current = now or utcnow()
        if current.tzinfo is None:
            current = current.replace(tzinfo=UTC)
        if expires_at <= current:
            raise TicketRejected(
                f"ticket expired at {expires_at.isoformat()} (now {current.isoformat()})",
                field="expires_at",
            )
