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

The certificate may be issued by intermediate CAs below the network CA: the bundle then carries
them (`intermediates`, the leaf's issuer first), and each link is checked by hand (its
signature, the issuer a CA allowed to sign certificates, its path length, its validity), each
refusal named. Revocation is read from X.509 CRLs (`verify_statement(crls=...)`): one per CA of
the path (the network CA's for the certificate it issued, each intermediate's for the one
below it), signed by that CA and not past its next update; a certificate any of them lists is
refused (`certificate_revoked`). OCSP is not read (nodes work offline). Without CRLs the
revocation is not checked, and the certified statement says so (`revocation.checked`).
What is not bound: the keys' own dates (the statement says when they were made; the
certificate vouches for the site that said it)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

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
CHAIN_BROKEN = "certificate_chain_broken"
INTERMEDIATE_NOT_CA = "intermediate_not_ca"
PATH_TOO_LONG = "path_length_exceeded"
REVOKED = "certificate_revoked"
CRL_NOT_TRUSTED = "crl_not_trusted"
CRL_EXPIRED = "crl_expired"
CRL_MISSING = "crl_missing"
MAX_INTERMEDIATES = 4  # a chain longer than this is malformed, not followed


@dataclass(frozen=True)
class CertificateFiles:
    """Where a node keeps its certificate files in its data folder, `certs/`: its certificate
    and key from the network CA (`node.crt`, `node.key`: what `keys export` signs with) and the
    CA's certificate (`network-ca.crt`: what `keys import` checks against). The CLI's defaults
    when no option or environment variable names them; `nearfab demo --nodes` writes them.
    `network-ca.crl`: the network's certificate revocation lists (PEM, one or more), read by
    `keys import` and `keys revoke-check` when there."""

    certificate: Path
    key: Path
    network_ca: Path
    crl: Path

    @classmethod
    def in_folder(cls, data_dir: Path) -> CertificateFiles:
        folder = Path(data_dir) / "certs"
        return cls(
            folder / "node.crt",
            folder / "node.key",
            folder / "network-ca.crt",
            folder / "network-ca.crl",
        )


@dataclass(frozen=True)
class CertifiedStatement:
    """A statement whose certificate and signature were checked against the network CA: its
    document (the `nearfab-site-keys/1` fields) and what the audit trail keeps of the proof.
    The site binding (common name against the site) is checked where the network is read."""

    document: dict[str, Any]
    common_name: str
    signed_at: datetime
    certificate: dict[str, Any]
    revocation: dict[str, Any]


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


def load_crls(pem: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL of a PEM file (one or more `X509 CRL` blocks, as `ca crl` writes them);
    ValidationFailed (field `crl`) when there is none or one does not parse."""
    marker = b"-----BEGIN X509 CRL-----"
    blocks = [marker + part for part in pem.split(marker)[1:]]
    if not blocks:
        raise ValidationFailed("no PEM certificate revocation list in it", field="crl")
    crls = []
    for block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block)
            _ = crl.issuer, crl.extensions, list(crl)
        except ValueError:
            raise ValidationFailed(
                "not a valid PEM certificate revocation list", field="crl"
            ) from None
        crls.append(crl)
    return crls


def crl_summary(crl: x509.CertificateRevocationList) -> dict[str, Any]:
    """What the audit trail keeps of a CRL: its issuer, number, this and next update."""
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    return {
        "issuer": crl.issuer.rfc4514_string(),
        "number": number,
        "this_update": crl.last_update_utc.isoformat(),
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
    }


def issuer_crl(
    crls: Sequence[x509.CertificateRevocationList],
    issuer: x509.Certificate,
    *,
    now: datetime | None,
    missing: str = CRL_MISSING,
) -> x509.CertificateRevocationList:
    """The newest of `crls` that `issuer` signed (its name as the CRL's issuer, its key's
    signature). Refused: none names it (`missing`: `crl_missing`, or `crl_not_trusted` for
    the network CA's, whose CRL file then holds another CA's), none of those naming it verifies with
    its key (`crl_not_trusted`), or, when `now` is given, the newest is past its next update
    (`crl_expired`) or issued after `now` (`crl_not_trusted`)."""
    named = [c for c in crls if c.issuer == issuer.subject]
    who = issuer.subject.rfc4514_string()
    if not named:
        others = sorted({c.issuer.rfc4514_string() for c in crls})
        raise Refused(
            f"no CRL of {who} is given (the CRLs given are issued by {', '.join(others)}): "
            "whether its certificates are revoked is not known",
            field="crl",
            code=missing,
        )
    signed = [c for c in named if crl_signed_by(c, issuer)]
    if not signed:
        raise Refused(
            f"the CRL naming {who} as its issuer is not signed by that CA's key",
            field="crl",
            code=CRL_NOT_TRUSTED,
        )
    newest = max(signed, key=lambda c: c.last_update_utc)
    if now is not None:
        if newest.next_update_utc is None:
            raise ValidationFailed(f"the CRL of {who} has no next update", field="crl")
        if now > newest.next_update_utc:
            raise Refused(
                f"the CRL of {who} was due to be replaced on "
                f"{newest.next_update_utc.isoformat()} (its next update): fetch the newest "
                "from the network CA's holder",
                field="crl",
                code=CRL_EXPIRED,
            )
        if newest.last_update_utc > now:
            raise Refused(
                f"the CRL of {who} says it was issued on {newest.last_update_utc.isoformat()}, "
                "after this node's clock",
                field="crl",
                code=CRL_NOT_TRUSTED,
            )
    return newest


def crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s key made the CRL's signature."""
    try:
        return crl.is_signature_valid(cast(Any, issuer.public_key()))
    except (TypeError, ValueError):  # a key type that signs no CRL
        return False


def revocation_of(crl: x509.CertificateRevocationList, serial: int) -> dict[str, Any] | None:
    """The CRL's entry for `serial` (None: not listed): when revoked, from when the key is
    not trusted (the invalidity date when the CA gave one, else the revocation date) and the
    reason."""
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    if entry is None:
        return None
    revoked_at = entry.revocation_date_utc
    from_ = revoked_at
    reason = "unspecified"
    for extension in entry.extensions:
        value = extension.value
        if isinstance(value, x509.InvalidityDate):
            from_ = min(revoked_at, value.invalidity_date_utc)
        elif isinstance(value, x509.CRLReason):
            reason = value.reason.name
    return {
        "serial": format(serial, "x"),
        "issuer": crl.issuer.rfc4514_string(),
        "revoked_at": revoked_at.isoformat(),
        "untrusted_from": from_.isoformat(),
        "reason": reason,
        "crl_number": crl_summary(crl)["number"],
    }


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
    site's id or code. `certificate_pem` may hold the intermediate CAs' certificates after the
    node's (a chain file, the leaf first): the bundle carries them as `intermediates`."""
    certificate, *intermediates = _load_certificates(
        certificate_pem.decode("ascii", "replace"), "certificate"
    )
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
    bundle: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "statement": statement,
        "signature": base64.b64encode(signature).decode("ascii"),
        "certificate": _pem(certificate),
    }
    if intermediates:
        bundle["intermediates"] = [_pem(c) for c in intermediates]
    return bundle


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def verify_statement(
    bundle: Mapping[str, Any],
    network_ca: x509.Certificate,
    *,
    now: datetime,
    crls: Sequence[x509.CertificateRevocationList] | None = None,
) -> CertifiedStatement:
    """The bundle's statement, once its certificate chains to the network CA (directly, or
    through the bundle's `intermediates`), every certificate of the path is valid at `now`
    and listed in no CRL of `crls` (when given), and its signature verifies. ValidationFailed
    naming the field for a malformed bundle; Refused with the reason's code otherwise (in this
    order: `certificate_not_trusted` / `certificate_chain_broken` / `intermediate_not_ca` /
    `path_length_exceeded`, `certificate_not_yet_valid` / `certificate_expired`,
    `crl_not_trusted` / `crl_missing` / `crl_expired` / `certificate_revoked`,
    `statement_signature_invalid`, `statement_signed_outside_validity`)."""
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
    given = bundle.get("intermediates") or []
    if not isinstance(given, list) or not all(isinstance(p, str) for p in given):
        raise ValidationFailed("a list of PEM certificates is expected", field="intermediates")
    if len(given) > MAX_INTERMEDIATES:
        raise ValidationFailed(
            f"more than {MAX_INTERMEDIATES} intermediate CAs", field="intermediates"
        )
    intermediates = [_load_certificate(pem, f"intermediates[{i}]") for i, pem in enumerate(given)]
    try:
        signature = base64.b64decode(texts["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("not base64", field="signature") from None

    # 1. a path to the network's CA (each certificate signed by the next, the last by the
    # network CA), the intermediates CAs within their path lengths; the leaf not a CA itself
    path = _path(certificate, intermediates, network_ca)
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
    # 2. every certificate of the path within its validity now (this node's clock)
    named = [
        ("the certificate", certificate),
        *((f"the intermediate CA {c.subject.rfc4514_string()}", c) for c in path[1:]),
        ("the network CA", network_ca),
    ]
    for which, cert in named:
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
    # 3. revocation: each certificate of the path in no CRL of the CA that issued it
    revocation = _check_revocation(path, network_ca, crls, now=now)
    # 4. the statement's exact text, signed with the certificate's key
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
            **(
                {"intermediates": [_summary(c) | {"pem": _pem(c)} for c in path[1:]]}
                if len(path) > 1
                else {}
            ),
        },
        revocation=revocation,
    )


def _summary(certificate: x509.Certificate) -> dict[str, str]:
    return {
        "subject": certificate.subject.rfc4514_string(),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial": format(certificate.serial_number, "x"),
        "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
    }


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _path(
    leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], root: x509.Certificate
) -> list[x509.Certificate]:
    """[leaf, *the intermediates used], each issued by the next and the last by `root`, the
    intermediates CAs that may sign certificates, no CA's path length exceeded (RFC 5280
    4.2.1.9: how many intermediate CAs may follow it). Refused naming the broken link."""
    path = [leaf]
    rest = list(intermediates)
    while not _issued_by(path[-1], root):
        current = path[-1]
        if not rest:
            whose = (
                "" if current is leaf else f"the chain ends at {current.subject.rfc4514_string()}: "
            )
            raise Refused(
                f"{whose}the certificate of {_common_name(current)!r} was not issued by this "
                f"node's network CA ({root.subject.rfc4514_string()}); issued by "
                f"{current.issuer.rfc4514_string()}",
                field="certificate",
                code=NOT_TRUSTED,
            )
        nxt = rest.pop(0)
        where = f"intermediates[{len(path) - 1}]"
        if not _issued_by(current, nxt):
            raise Refused(
                f"{current.subject.rfc4514_string()} was not issued by the next certificate of "
                f"the chain ({nxt.subject.rfc4514_string()}, {where}): its issuer is "
                f"{current.issuer.rfc4514_string()}",
                field=where,
                code=CHAIN_BROKEN,
            )
        usage = _extension(nxt, x509.KeyUsage)
        if not _is_ca(nxt) or (usage is not None and not usage.key_cert_sign):
            raise Refused(
                f"{nxt.subject.rfc4514_string()} ({where}) signed a certificate but is not a CA "
                "(no basic constraints saying so, or a key usage without certificate signing)",
                field=where,
                code=INTERMEDIATE_NOT_CA,
            )
        path.append(nxt)
    if rest:
        raise Refused(
            f"{len(rest)} certificate(s) after the one the network CA issued are not part of "
            "the path",
            field="intermediates",
            code=CHAIN_BROKEN,
        )
    # below the CA at path[i] (i >= 1) come i - 1 intermediates; below the root, all of them
    cas = [
        *((c, i - 1, f"intermediates[{i - 1}]") for i, c in enumerate(path) if i),
        (
            root,
            len(path) - 1,
            "network_ca",
        ),
    ]
    for ca, below, where in cas:
        constraints = _extension(ca, x509.BasicConstraints)
        limit = constraints.path_length if constraints is not None else None
        if limit is not None and below > limit:
            raise Refused(
                f"{ca.subject.rfc4514_string()} allows {limit} intermediate CA(s) below it "
                f"(its path length), the chain has {below}",
                field=where,
                code=PATH_TOO_LONG,
            )
    return path


def _check_revocation(
    path: Sequence[x509.Certificate],
    root: x509.Certificate,
    crls: Sequence[x509.CertificateRevocationList] | None,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Each certificate of `path` against the CRL of the CA that issued it (the next in the
    path, the last's the network CA's); what was checked, for the audit trail."""
    if crls is None:
        return {"checked": False}
    used = []
    issuers = [*path[1:], root]
    for certificate, issuer in zip(path, issuers, strict=True):
        crl = issuer_crl(
            crls,
            issuer,
            now=now,
            missing=CRL_NOT_TRUSTED if issuer is root else CRL_MISSING,
        )
        used.append(crl_summary(crl))
        revoked = revocation_of(crl, certificate.serial_number)
        if revoked is not None:
            raise Refused(
                f"the certificate {certificate.subject.rfc4514_string()} (serial "
                f"{revoked['serial']}) was revoked by {revoked['issuer']} on "
                f"{revoked['revoked_at']} ({revoked['reason']}): it certifies nothing",
                field="certificate" if certificate is path[0] else "intermediates",
                code=REVOKED,
            )
    return {"checked": True, "crls": used}


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


def _load_certificates(pem: str, field: str) -> list[x509.Certificate]:
    marker = "-----BEGIN CERTIFICATE-----"
    blocks = [marker + part for part in pem.split(marker)[1:]]
    if not blocks:
        raise ValidationFailed("not a PEM certificate", field=field)
    return [_load_certificate(block, field) for block in blocks]


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
