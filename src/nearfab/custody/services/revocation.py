"""Revoking site certificates (docs/deployment.md, "Revocation"): the network CA's holder lists a
site certificate in a signed X.509 CRL (`revoke_certificate`, `refresh_crl`: files, no
database, run where the CA's key is kept), and a node that receives the CRL stops trusting the
ledger keys it registered under that certificate (`apply_crl`).

A node's keys registered from a certified statement carry, in their audit row (`trust`), the
certificate's issuer and serial and the intermediates' certificates: `apply_crl` reads them, and
every key whose certificate (or an intermediate of its path) a CRL lists is retired here from
the time the CA gives (the CRL entry's invalidity date when there, else its revocation date):
its `retired_at` brought forward to that time, one audit row per key in the same transaction,
so the signature checks (replication's `KeyBook`, fed by custody's `site_public_keys`) refuse
its signatures on entries dated after it. A CRL not signed by the network CA or by an
intermediate CA a registration here names is refused (`crl_not_trusted`) and nothing changes.
X.509 and signatures are the `cryptography` library's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from sqlalchemy import select

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.custody.models import SiteKey
from nearfab.custody.services import keycerts
from nearfab.custody.services.sitekeys import KEY_ENTITY
from nearfab.identity import Actor, AuditAction, audit
from nearfab.identity.reads import audit_entries_on
from nearfab.uow import UnitOfWork

# the CRL entry reasons `ca revoke` takes (RFC 5280 5.3.1; remove_from_crl is not a revocation)
REASONS = tuple(r.name for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl)
DEFAULT_DAYS = 30  # a CRL's next update, from its issue


def revoke_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    certificate_pem: bytes,
    *,
    reason: str,
    now: datetime,
    crl_pem: bytes | None = None,
    days: int = DEFAULT_DAYS,
    invalid_since: datetime | None = None,
) -> bytes:
    """The CA's CRL (PEM) with `certificate_pem`'s serial added (revoked at `now`, the RFC 5280
    `reason`, and `invalid_since`, when the key is known or suspected compromised since, as
    its invalidity date), the entries of `crl_pem` (the CA's current CRL) kept, its number one
    more, next update `days` on. ValidationFailed naming `certificate` (not issued by this CA),
    `reason`, `invalid_since` (after `now`); Refused `crl_not_trusted` for a current CRL
    this CA did not sign."""
    ca, key = _load_ca(ca_cert_pem, ca_key_pem)
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        raise ValidationFailed("not a PEM certificate", field="certificate") from None
    try:
        certificate.verify_directly_issued_by(ca)
    except Exception:  # ValueError, TypeError, InvalidSignature: not this CA's
        raise ValidationFailed(
            f"not issued by {ca.subject.rfc4514_string()} (issued by "
            f"{certificate.issuer.rfc4514_string()}): revoke it with the CA that issued it",
            field="certificate",
        ) from None
    if reason not in REASONS:
        raise ValidationFailed(f"one of {', '.join(REASONS)}", field="reason")
    if invalid_since is not None and invalid_since > now:
        raise ValidationFailed("after the revocation (now)", field="invalid_since")
    entries, number = _current(ca, crl_pem)
    if certificate.serial_number not in {e.serial_number for e in entries}:
        builder = (
            x509.RevokedCertificateBuilder()
            .serial_number(certificate.serial_number)
            .revocation_date(now)
        )
        if reason != x509.ReasonFlags.unspecified.name:
            builder = builder.add_extension(x509.CRLReason(x509.ReasonFlags[reason]), False)
        if invalid_since is not None:
            builder = builder.add_extension(x509.InvalidityDate(invalid_since), False)
        entries.append(builder.build())
    return _issue(ca, key, entries, number + 1, now=now, days=days)


def refresh_crl(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    now: datetime,
    crl_pem: bytes | None = None,
    days: int = DEFAULT_DAYS,
) -> bytes:
    """The CA's CRL issued again at `now` with the same entries (none without `crl_pem`: the
    CA's first, empty CRL), its number one more, next update `days` on: what the CA's holder
    sends round before the current one's next update passes."""
    ca, key = _load_ca(ca_cert_pem, ca_key_pem)
    entries, number = _current(ca, crl_pem)
    return _issue(ca, key, entries, number + 1, now=now, days=days)


def _load_ca(ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[x509.Certificate, Any]:
    try:
        ca = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        raise ValidationFailed("not a PEM certificate", field="ca_cert") from None
    constraints = _basic_constraints(ca)
    if constraints is None or not constraints.ca:
        raise ValidationFailed("not a CA's certificate", field="ca_cert")
    try:
        key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError):
        raise ValidationFailed("not an unencrypted PEM private key", field="ca_key") from None
    if not isinstance(
        key,
        ec.EllipticCurvePrivateKey
        | rsa.RSAPrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise ValidationFailed("not a signing key", field="ca_key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != ca.public_key().public_bytes(der, spki):
        raise ValidationFailed("this private key is not the CA certificate's", field="ca_key")
    return ca, key


def _basic_constraints(certificate: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _current(
    ca: x509.Certificate, crl_pem: bytes | None
) -> tuple[list[x509.RevokedCertificate], int]:
    """The entries and number of the CA's newest CRL in `crl_pem` (none: no entries, 0)."""
    if crl_pem is None:
        return [], 0
    crl = keycerts.issuer_crl(keycerts.load_crls(crl_pem), ca, now=None, missing="crl_not_trusted")
    number = keycerts.crl_summary(crl)["number"] or 0
    return list(crl), int(number)


def _issue(
    ca: x509.Certificate,
    key: Any,
    entries: Sequence[x509.RevokedCertificate],
    number: int,
    *,
    now: datetime,
    days: int,
) -> bytes:
    if days < 1:
        raise ValidationFailed("at least 1 day", field="days")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(now + timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    algorithm = (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


@dataclass
class RevocationCheck:
    """What `apply_crl` did: the keys retired now (with the CRL entry that retired them), the
    keys already retired at or before that time, and the CRLs read."""

    retired: list[dict[str, Any]] = field(default_factory=list)
    already_retired: list[str] = field(default_factory=list)
    crls: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "retired": self.retired,
            "already_retired": self.already_retired,
            "crls": self.crls,
        }


def apply_crl(
    uow: UnitOfWork,
    actor: Actor,
    crl_pem: bytes,
    *,
    network_ca_pem: bytes,
    reason: str,
) -> RevocationCheck:
    """Retire here every site key registered from a statement certified by a certificate the
    CRLs list (the key's own, or an intermediate CA of its path): its `retired_at` brought
    forward to the CA's time (invalidity date, else revocation date), one audit row per key
    (entity `ledger_key`, action `update`, the old and new `retired_at` and the CRL entry), in
    this transaction. Every CRL must be signed by the network CA or by an intermediate CA a
    registration here recorded, else Refused `crl_not_trusted` and nothing changes. A CRL past
    its next update is still read (a revocation never lapses; `keys import` refuses it for a
    new statement, `crl_expired`). Repeating it changes nothing."""
    if not reason.strip():
        raise ValidationFailed("give the reason for checking the keys", field="reason")
    root = keycerts.load_network_ca(network_ca_pem)
    crls = keycerts.load_crls(crl_pem)
    keys = {k.key_id: k for k in uow.session.scalars(select(SiteKey))}
    registrations: dict[str, list[dict[str, Any]]] = {}
    for row in audit_entries_on(uow.session, {KEY_ENTITY: list(keys)}):
        trust = (row.new or {}).get("trust") if row.action == AuditAction.CREATE.value else None
        if isinstance(trust, dict) and trust.get("basis") == "certificate":
            registrations.setdefault(row.entity_id, []).append(trust["certificate"])
    cas = {root.subject: root}
    for certificates in registrations.values():
        for certificate in certificates:
            for held in certificate.get("intermediates") or []:
                ca = x509.load_pem_x509_certificate(str(held["pem"]).encode("ascii"))
                cas.setdefault(ca.subject, ca)
    trusted: list[x509.CertificateRevocationList] = []
    for crl in crls:
        issuer = cas.get(crl.issuer)
        if issuer is None or not keycerts.crl_signed_by(crl, issuer):
            raise Refused(
                f"a CRL issued by {crl.issuer.rfc4514_string()} is signed neither by the "
                f"network CA ({root.subject.rfc4514_string()}) nor by an intermediate CA of a "
                "certificate registered here: not read, nothing changed",
                field="crl",
                code=keycerts.CRL_NOT_TRUSTED,
            )
        trusted.append(crl)
    result = RevocationCheck(crls=[keycerts.crl_summary(c) for c in trusted])
    for key_id, certificates in sorted(registrations.items()):
        found = _earliest(trusted, certificates)
        if found is None:
            continue
        key = keys[key_id]
        since = datetime.fromisoformat(found["untrusted_from"])
        if key.retired_at is not None and key.retired_at <= since:
            result.already_retired.append(key_id)
            continue
        audit(
            uow,
            actor,
            AuditAction.UPDATE,
            KEY_ENTITY,
            key_id,
            old={"retired_at": key.retired_at.isoformat() if key.retired_at else None},
            new={"retired_at": since.isoformat(), "revoked": found},
            reason=reason,
            site_id=key.site_id,
        )
        key.retired_at = since
        result.retired.append({"key_id": key_id, **found})
    uow.commit()
    return result


def _earliest(
    crls: Sequence[x509.CertificateRevocationList], certificates: Sequence[dict[str, Any]]
) -> dict[str, Any] | None:
    """The earliest CRL entry listing a certificate of these registrations' paths (the node's
    certificate, or an intermediate CA's), by the time from which it is not trusted."""
    hits = []
    for certificate in certificates:
        path = [certificate, *(certificate.get("intermediates") or [])]
        for link in path:
            serial = int(str(link["serial"]), 16)
            for crl in crls:
                if crl.issuer.rfc4514_string() != link["issuer"]:
                    continue
                entry = keycerts.revocation_of(crl, serial)
                if entry is not None:
                    hits.append({**entry, "certificate": link["subject"]})
    return min(hits, key=lambda h: datetime.fromisoformat(h["untrusted_from"]), default=None)
