"""A site's ledger public keys bound to the site by the network's certificate authority
(docs/replication.md, "Registering a site's keys after the fact"; docs/deployment.md,
"Certificates between nodes").

The site node signs a **statement** (the `nearfab-site-keys/1` document of its keys, the site's
id and code, and `signed_at`) with the private key of its certificate, issued by the network's
CA (the one that issues the bridge's TLS certificates). The bundle carries the statement's exact
text, the signature (base64) and the certificate (PEM). The importing node checks, with the
network CA it was given and its own clock: the certificate was issued by that CA and is not a
CA itself, both are within their validity now, the statement's signature verifies with the
certificate's public key and was made within the certificate's validity, and the certificate's
common name is the site's id or code, every key in the statement being that site's. Each
refusal is a `Refused` naming its reason (`code`). X.509 and signatures are the `cryptography`
library's; nothing here is hand-written cryptography.

What is not bound: revocation (no CRL or OCSP: a certificate stays good until its end date),
intermediate CAs (the node certificate must be issued by the network CA directly), and the
keys' own dates (the statement says when they were made; the certificate vouches for the site
that said it)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nearfab.common.errors import Refused, ValidationFailed

BUNDLE_FORMAT = "nearfab-certified-site-keys/1"

# the refusals' codes (stable; docs/replication.md lists them)
NOT_TRUSTED = "certificate_not_trusted"
EXPIRED = "certificate_expired"
NOT_YET_VALID = "certificate_not_yet_valid"
OTHER_SITE = "certificate_for_other_site"
SIGNATURE_INVALID = "statement_signature_invalid"
SIGNED_OUTSIDE_VALIDITY = "statement_signed_outside_validity"


@dataclass(frozen=True)
class CertificateFiles:
    """Where a node keeps its certificate files in its data folder, `certs/`: its certificate
    and key from the network CA (`node.crt`, `node.key`: what `keys export` signs with) and the
    CA's certificate (`network-ca.crt`: what `keys import` checks against). The CLI's defaults
    when no option or environment variable names them; `nearfab demo --nodes` writes them."""

    certificate: Path
    key: Path
    network_ca: Path

    @classmethod
    def in_folder(cls, data_dir: Path) -> CertificateFiles:
        folder = Path(data_dir) / "certs"
        return cls(folder / "node.crt", folder / "node.key", folder / "network-ca.crt")


@dataclass(frozen=True)
class CertifiedStatement:
    """A statement whose certificate and signature were checked against the network CA: its
    document (the `nearfab-site-keys/1` fields) and what the audit trail keeps of the proof.
    The site binding (common name against the site) is checked where the network is read."""

    document: dict[str, Any]
    common_name: str
    signed_at: datetime
    certificate: dict[str, str]


def is_certified(document: Any) -> bool:
    """Whether an exported document is a certified bundle (else a plain key list)."""
    return isinstance(document, Mapping) and document.get("format") == BUNDLE_FORMAT


def load_network_ca(pem: bytes) -> x509.Certificate:
    """The network CA's certificate from PEM; ValidationFailed (field `network_ca`) if it is
    not one, or not a CA."""
    try:
        ca = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ValidationFailed(
            "not a PEM certificate of the network CA", field="network_ca"
        ) from None
    if not _is_ca(ca):
        raise ValidationFailed(
            "the network CA's certificate has no basic constraints saying it is a CA",
            field="network_ca",
        )
    return ca


def sign_statement(
    document: Mapping[str, Any],
    certificate_pem: bytes,
    private_key_pem: bytes,
    *,
    signed_at: datetime,
) -> dict[str, Any]:
    """The bundle `verify_statement` reads: the exported key document with `signed_at`, signed
    with the private key of the node's certificate. ValidationFailed naming `certificate` or
    `certificate_key` when they do not load or do not belong together, and Refused
    (`certificate_for_other_site`) when the certificate's common name is not the document's
    site's id or code."""
    certificate = _load_certificate(certificate_pem.decode("ascii", "replace"), "certificate")
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError):
        raise ValidationFailed(
            "not an unencrypted PEM private key", field="certificate_key"
        ) from None
    public = certificate.public_key()
    if not isinstance(key, _SIGNING_KEYS) or _spki(key.public_key()) != _spki(public):
        raise ValidationFailed("this private key is not the certificate's", field="certificate_key")
    common_name = _common_name(certificate)
    names = {str(document.get("site_id")), str(document.get("site_code"))}
    if common_name not in names:
        raise Refused(
            f"the certificate names {common_name!r}, not this site ({' / '.join(sorted(names))})",
            field="certificate",
            code=OTHER_SITE,
        )
    statement = json.dumps(
        {**document, "signed_at": signed_at.isoformat()}, ensure_ascii=False, sort_keys=True
    )
    data = statement.encode("utf-8")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(data)
    return {
        "format": BUNDLE_FORMAT,
        "statement": statement,
        "signature": base64.b64encode(signature).decode("ascii"),
        "certificate": certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
    }


def verify_statement(
    bundle: Mapping[str, Any], network_ca: x509.Certificate, *, now: datetime
) -> CertifiedStatement:
    """The bundle's statement, once its certificate is the network CA's and valid at `now`,
    and its signature verifies. ValidationFailed naming the field for a malformed bundle;
    Refused with the reason's code otherwise (in this order: `certificate_not_trusted`,
    `certificate_not_yet_valid` / `certificate_expired`, `statement_signature_invalid`,
    `statement_signed_outside_validity`)."""
    if not is_certified(bundle):
        raise ValidationFailed(
            f"not a certified export of site keys (format {BUNDLE_FORMAT!r})", field="format"
        )
    texts = {}
    for name in ("statement", "signature", "certificate"):
        value = bundle.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValidationFailed("missing", field=name)
        texts[name] = value
    certificate = _load_certificate(texts["certificate"], "certificate")
    try:
        signature = base64.b64decode(texts["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("not base64", field="signature") from None

    # 1. issued by the network's CA (its signature on the certificate), and not a CA itself
    try:
        certificate.verify_directly_issued_by(network_ca)
    except (ValueError, TypeError, InvalidSignature):
        raise Refused(
            f"the certificate of {_common_name(certificate)!r} was not issued by this node's "
            f"network CA ({network_ca.subject.rfc4514_string()}); issued by "
            f"{certificate.issuer.rfc4514_string()}",
            field="certificate",
            code=NOT_TRUSTED,
        ) from None
    if _is_ca(certificate):
        raise Refused(
            "a CA's certificate, not a node's, signed the statement",
            field="certificate",
            code=NOT_TRUSTED,
        )
    usage = _extension(certificate, x509.KeyUsage)
    if usage is not None and not usage.digital_signature:
        raise Refused(
            "the certificate's key usage does not allow signatures",
            field="certificate",
            code=NOT_TRUSTED,
        )
    # a node's certificate is its bridge's TLS client certificate (deployment.md); with an
    # extended key usage the key serves those purposes only (RFC 5280 4.2.1.12), so a server
    # certificate (the control broker's, say, whatever its common name) certifies no keys
    purposes = _extension(certificate, x509.ExtendedKeyUsage)
    if purposes is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in purposes:
        raise Refused(
            "the certificate is not a node's TLS client certificate (its extended key usage "
            "does not include client authentication)",
            field="certificate",
            code=NOT_TRUSTED,
        )
    # 2. both within their validity now (this node's clock)
    for which, cert in (("the certificate", certificate), ("the network CA", network_ca)):
        if now < cert.not_valid_before_utc:
            raise Refused(
                f"{which} is valid from {cert.not_valid_before_utc.isoformat()} only",
                field="certificate",
                code=NOT_YET_VALID,
            )
        if now > cert.not_valid_after_utc:
            raise Refused(
                f"{which} expired on {cert.not_valid_after_utc.isoformat()}",
                field="certificate",
                code=EXPIRED,
            )
    # 3. the statement's exact text, signed with the certificate's key
    data = texts["statement"].encode("utf-8")
    if not _verifies(certificate.public_key(), signature, data):
        raise Refused(
            "the statement's signature does not verify with the certificate's key "
            "(the statement was changed after signing, or signed with another key)",
            field="signature",
            code=SIGNATURE_INVALID,
        )
    try:
        document = json.loads(texts["statement"])
    except ValueError:
        raise ValidationFailed("not JSON", field="statement") from None
    if not isinstance(document, dict):
        raise ValidationFailed("a JSON object is expected", field="statement")
    signed_at = _time(document.get("signed_at"))
    if not certificate.not_valid_before_utc <= signed_at <= certificate.not_valid_after_utc:
        raise Refused(
            f"the statement says it was signed at {signed_at.isoformat()}, outside the "
            "certificate's validity",
            field="statement.signed_at",
            code=SIGNED_OUTSIDE_VALIDITY,
        )
    return CertifiedStatement(
        document=document,
        common_name=_common_name(certificate),
        signed_at=signed_at,
        certificate={
            "subject": certificate.subject.rfc4514_string(),
            "issuer": certificate.issuer.rfc4514_string(),
            "serial": format(certificate.serial_number, "x"),
            "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
            "not_valid_before": certificate.not_valid_before_utc.isoformat(),
            "not_valid_after": certificate.not_valid_after_utc.isoformat(),
        },
    )


_SIGNING_KEYS = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _verifies(public: Any, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _spki(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _load_certificate(pem: str, field: str) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode("ascii", "replace"))
    except ValueError:
        raise ValidationFailed("not a PEM certificate", field=field) from None
    try:  # parsed lazily by `cryptography`: a malformed one is named here, not a crash later
        _ = certificate.extensions, certificate.subject, certificate.issuer
    except ValueError:
        raise ValidationFailed(
            "the certificate's name or extensions are not valid DER", field=field
        ) from None
    return certificate


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else ""


def _is_ca(certificate: x509.Certificate) -> bool:
    constraints = _extension(certificate, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def _extension(certificate: x509.Certificate, kind: Any) -> Any:
    try:
        return certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValidationFailed("missing", field="statement.signed_at")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed("not an ISO 8601 time", field="statement.signed_at") from None
    if parsed.tzinfo is None:
        raise ValidationFailed(
            "a time with its offset (UTC) is expected", field="statement.signed_at"
        )
    return parsed
