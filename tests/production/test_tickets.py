"""Job tickets: Ed25519 signatures by the control site, and every way a ticket is refused."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from nearfab.common.errors import Refused
from nearfab.production.tickets import (
    SignedTicket,
    TicketRejected,
    TicketSigner,
    verify_ticket,
)

# RFC 8032 section 7.1, TEST 1: a known Ed25519 key pair, so key ids can be checked by hand.
RFC_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
# and its signature of the empty message (Ed25519 is deterministic)
RFC_SIG_EMPTY = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
    "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def rfc_signer() -> TicketSigner:
    return TicketSigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC_SECRET)))


def payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ticket_id": "T-0001",
        "machine_id": "printer-01",
        "expires_at": (NOW + timedelta(hours=4)).isoformat(),
        "design": {"target_mass_mg": 50.0, "units": 10, "dose_mg": 2.5},
    }
    base.update(overrides)
    return base


@pytest.fixture
def signer() -> TicketSigner:
    return rfc_signer()


@pytest.fixture
def ticket(signer: TicketSigner) -> SignedTicket:
    return signer.sign(payload())


def test_rfc8032_key_is_the_one_we_think() -> None:
    # Sanity of the fixture: the secret gives the RFC public key and the RFC signature of b"".
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC_SECRET))
    assert key.sign(b"").hex() == RFC_SIG_EMPTY
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(RFC_PUBLIC)).verify(
        bytes.fromhex(RFC_SIG_EMPTY), b""
    )


def test_key_id_is_first_16_hex_of_sha256_of_raw_public_key(signer: TicketSigner) -> None:
    expected = hashlib.sha256(bytes.fromhex(RFC_PUBLIC)).hexdigest()[:16]
    assert signer.key_id == expected
    assert len(signer.key_id) == 16
    assert signer.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_sign_produces_verifiable_ticket(signer: TicketSigner, ticket: SignedTicket) -> None:
    assert ticket.key_id == signer.key_id
    raw_sig = base64.b64decode(ticket.signature)
    assert len(raw_sig) == 64  # Ed25519 signatures are 64 bytes
    # The signature is over the canonical JSON (sorted keys, no spaces): check independently.
    message = json.dumps(ticket.payload, sort_keys=True, separators=(",", ":")).encode()
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(RFC_PUBLIC)).verify(raw_sig, message)
    assert ticket.ticket_hash == hashlib.sha256(message).hexdigest()
    verify_ticket(ticket, signer.public_key_pem, machine_id="printer-01", now=NOW)


def test_signing_is_deterministic_and_payload_is_json_ready(signer: TicketSigner) -> None:
    p = payload(expires_at=NOW + timedelta(hours=4))  # a datetime, not a string
    t1 = signer.sign(p)
    t2 = signer.sign(payload())  # the same with expires_at already an ISO string
    assert t1.payload["expires_at"] == "2026-01-05T12:00:00+00:00"
    assert t1 == t2
    assert t1.ticket_hash == t2.ticket_hash


def test_round_trip_through_json_still_verifies(signer: TicketSigner, ticket: SignedTicket) -> None:
    wire = json.dumps(ticket.to_dict(), indent=2)  # a different (non-canonical) serialisation
    back = SignedTicket.from_dict(json.loads(wire))
    assert back == ticket
    assert back.ticket_hash == ticket.ticket_hash
    verify_ticket(back, signer.public_key_pem, machine_id="printer-01", now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["design"].__setitem__("units", 11),
        lambda p: p["design"].__setitem__("target_mass_mg", 50.000001),
        lambda p: p.__setitem__("ticket_id", "T-0002"),
        lambda p: p.__setitem__("note", "extra field"),
        lambda p: p.pop("ticket_id"),
    ],
    ids=["units", "mass", "ticket_id", "added_field", "removed_field"],
)
def test_any_change_to_the_payload_is_rejected(
    signer: TicketSigner, ticket: SignedTicket, change: Any
) -> None:
    altered_payload = json.loads(json.dumps(ticket.payload))
    change(altered_payload)
    altered = dataclasses.replace(ticket, payload=altered_payload)
    with pytest.raises(TicketRejected, match="altered or not signed by the control site") as exc:
        verify_ticket(altered, signer.public_key_pem, machine_id="printer-01", now=NOW)
    assert exc.value.code == "ticket_rejected"
    assert exc.value.field == "signature"
    assert isinstance(exc.value, Refused)


def test_original_is_untouched_by_tamper_test(signer: TicketSigner, ticket: SignedTicket) -> None:
    """The tamper test above edits a deep copy: the signed ticket keeps the payload it was
    signed with (checked against a literal, not against the code's own output)."""
    snapshot = json.dumps(ticket.payload, sort_keys=True)
    for change in ("units", "ticket_id"):
        altered_payload = json.loads(json.dumps(ticket.payload))
        if change == "units":
            altered_payload["design"]["units"] = 11
        else:
            altered_payload["ticket_id"] = "T-0002"
        altered = dataclasses.replace(ticket, payload=altered_payload)
        with pytest.raises(TicketRejected):
            verify_ticket(altered, signer.public_key_pem, machine_id="printer-01", now=NOW)
    assert json.dumps(ticket.payload, sort_keys=True) == snapshot
    assert ticket.payload == {
        "ticket_id": "T-0001",
        "machine_id": "printer-01",
        "expires_at": "2026-01-05T12:00:00+00:00",
        "design": {"target_mass_mg": 50.0, "units": 10, "dose_mg": 2.5},
    }
    # the signature still covers exactly that payload: checked with the RFC 8032 public key
    message = json.dumps(ticket.payload, sort_keys=True, separators=(",", ":")).encode()
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(RFC_PUBLIC)).verify(
        base64.b64decode(ticket.signature), message
    )
    # and the product accepts it: verify_ticket returns normally (it raises on any refusal)
    assert verify_ticket(ticket, signer.public_key_pem, machine_id="printer-01", now=NOW) is None


def test_dropped_signature_is_unsigned(signer: TicketSigner, ticket: SignedTicket) -> None:
    with pytest.raises(TicketRejected, match="unsigned ticket"):
        verify_ticket(dataclasses.replace(ticket, signature=""), signer.public_key_pem)
    wire = ticket.to_dict()
    del wire["signature"]
    with pytest.raises(TicketRejected, match="unsigned ticket"):
        verify_ticket(SignedTicket.from_dict(wire), signer.public_key_pem)


def test_bad_base64_is_rejected(signer: TicketSigner, ticket: SignedTicket) -> None:
    with pytest.raises(TicketRejected, match="not valid base64"):
        verify_ticket(dataclasses.replace(ticket, signature="not*base64!"), signer.public_key_pem)


def test_flipped_signature_bit_is_rejected(signer: TicketSigner, ticket: SignedTicket) -> None:
    raw = bytearray(base64.b64decode(ticket.signature))
    raw[0] ^= 0x01
    forged = dataclasses.replace(ticket, signature=base64.b64encode(bytes(raw)).decode())
    with pytest.raises(TicketRejected, match="altered or not signed"):
        verify_ticket(forged, signer.public_key_pem)


def test_ticket_signed_by_another_key_is_rejected(signer: TicketSigner) -> None:
    other = TicketSigner(Ed25519PrivateKey.generate())
    foreign = other.sign(payload())
    with pytest.raises(TicketRejected, match="not the control site's key") as exc:
        verify_ticket(foreign, signer.public_key_pem, machine_id="printer-01", now=NOW)
    assert exc.value.field == "key_id"
    # Claiming the control site's key id does not help: the signature does not verify.
    disguised = dataclasses.replace(foreign, key_id=signer.key_id)
    with pytest.raises(TicketRejected, match="altered or not signed by the control site"):
        verify_ticket(disguised, signer.public_key_pem, machine_id="printer-01", now=NOW)


def test_ticket_for_another_machine_is_rejected(signer: TicketSigner, ticket: SignedTicket) -> None:
    with pytest.raises(TicketRejected, match="ticket is for machine printer-01") as exc:
        verify_ticket(ticket, signer.public_key_pem, machine_id="printer-02", now=NOW)
    assert exc.value.field == "machine_id"
    no_machine = signer.sign({k: v for k, v in payload().items() if k != "machine_id"})
    with pytest.raises(TicketRejected, match="ticket is for machine"):
        verify_ticket(no_machine, signer.public_key_pem, machine_id="printer-01", now=NOW)
    # Without a machine to check against, the machine id is not checked.
    verify_ticket(ticket, signer.public_key_pem, now=NOW)


def test_expired_ticket_is_rejected(signer: TicketSigner, ticket: SignedTicket) -> None:
    expires = NOW + timedelta(hours=4)
    verify_ticket(ticket, signer.public_key_pem, now=expires - timedelta(seconds=1))
    with pytest.raises(TicketRejected, match="expired") as exc:
        verify_ticket(ticket, signer.public_key_pem, now=expires)
    assert exc.value.field == "expires_at"
    with pytest.raises(TicketRejected, match="expired"):
        verify_ticket(ticket, signer.public_key_pem, now=expires + timedelta(days=1))
    # An expiry in another time zone is compared as an instant: 13:00+01:00 == 12:00Z.
    cet = signer.sign(payload(expires_at="2026-01-05T13:00:00+01:00"))
    verify_ticket(cet, signer.public_key_pem, now=datetime(2026, 1, 5, 11, 59, tzinfo=UTC))
    with pytest.raises(TicketRejected, match="expired"):
        verify_ticket(cet, signer.public_key_pem, now=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))


def test_unparseable_expiry_is_rejected(signer: TicketSigner) -> None:
    bad = signer.sign(payload(expires_at="next tuesday"))
    with pytest.raises(TicketRejected, match="not an ISO datetime"):
        verify_ticket(bad, signer.public_key_pem, now=NOW)


def test_load_or_create_makes_a_private_0600_key_and_reloads_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "control" / "ticket_signing.pem"
    created = TicketSigner.load_or_create(path)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS8
    reloaded = TicketSigner.load_or_create(path)
    assert reloaded.key_id == created.key_id
    assert reloaded.public_key_pem == created.public_key_pem
    # A ticket signed before the restart verifies with the reloaded public key.
    verify_ticket(created.sign(payload()), reloaded.public_key_pem, now=NOW)


def test_from_dict_rejects_a_malformed_ticket() -> None:
    with pytest.raises(TicketRejected, match="payload"):
        SignedTicket.from_dict({"signature": "abc", "key_id": "x"})
