"""A site's ledger public keys carried from its node to another (docs/replication.md,
"Signatures"): exported where the site signs, registered where its entries are checked.

A node checks the signatures of the ledger entries it receives with the site keys its own
database holds (custody's read view `site_public_keys`), and a rotation signed by a key it
holds introduces the next one. A key made at a site node after its copy was taken, and not
introduced by such a rotation (the site's first key), is one the control never saw: its
signatures are unchecked (`unverified_keys`) until the key is registered here. Registering a
key is a statement of trust (this public key is that site's), on record: one audit row per
key registered, in the transaction that adds it. The private half is never carried.

Two ways in: `import_certified_site_keys` takes a statement signed by the site's certificate
and checks it against the network's CA (custody/services/keycerts.py: the certificate binds the
keys to the site); `import_site_keys` takes the keys on the word of whoever runs it (the CLI's
`--trust-on-word`). The audit row of each key says which (`trust`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from nearfab.common.errors import Refused, ValidationFailed
from nearfab.custody.models import SiteKey
from nearfab.custody.services import keycerts
from nearfab.identity import Actor, AuditAction, audit
from nearfab.network.reads import site as network_site
from nearfab.network.reads import sites_by_code, sites_by_id
from nearfab.uow import UnitOfWork

FORMAT = "nearfab-site-keys/1"
KEY_ENTITY = "ledger_key"  # the audit trail's entity of a site's ledger key (as `rotate`)
_KEY_ID_MAX = 32  # custody_site_keys.key_id


@dataclass(frozen=True)
class PublicSiteKey:
    """One ledger key of a site, without its private half: its id, its site, the raw Ed25519
    public key (hex), when it was made and when a rotation replaced it (None: it signs now)."""

    key_id: str
    site_id: str
    public_key: str
    created_at: datetime
    retired_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "site_id": self.site_id,
            "public_key": self.public_key,
            "created_at": self.created_at.isoformat(),
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
        }


def export_site_keys(session: Session, site_id: str) -> dict[str, Any]:
    """Every ledger key of `site_id` this database holds (retired ones too, oldest first), as
    the JSON document `import_site_keys` reads: {"format", "site_id", "site_code", "keys"}."""
    found = network_site(session, site_id)  # NotFound naming site_id
    keys = session.scalars(
        select(SiteKey).where(SiteKey.site_id == found.id).order_by(SiteKey.created_at)
    )
    return {
        "format": FORMAT,
        "site_id": found.id,
        "site_code": found.code,
        "keys": [
            PublicSiteKey(
                k.key_id, k.site_id, bytes(k.public_key).hex(), k.created_at, k.retired_at
            ).to_dict()
            for k in keys
        ],
    }


def parse_site_keys(document: Mapping[str, Any]) -> list[PublicSiteKey]:
    """The keys of an exported document, each field checked (the field is named)."""
    if not isinstance(document, Mapping) or document.get("format") != FORMAT:
        raise ValidationFailed(f"not an export of site keys (format {FORMAT!r})", field="format")
    rows = document.get("keys")
    if not isinstance(rows, list):
        raise ValidationFailed("a list of keys is expected", field="keys")
    return [_parse_key(row, f"keys[{i}]") for i, row in enumerate(rows)]


def _parse_key(row: Any, where: str) -> PublicSiteKey:
    if not isinstance(row, Mapping):
        raise ValidationFailed("a key is an object", field=where)
    texts = {}
    for name in ("key_id", "site_id", "public_key", "created_at"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValidationFailed("missing", field=f"{where}.{name}")
        texts[name] = value.strip()
    if len(texts["key_id"]) > _KEY_ID_MAX:
        raise ValidationFailed(f"longer than {_KEY_ID_MAX} characters", field=f"{where}.key_id")
    try:
        raw = bytes.fromhex(texts["public_key"])
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ValidationFailed(
            "not a raw Ed25519 public key in hex (64 characters)", field=f"{where}.public_key"
        ) from None
    retired = row.get("retired_at")
    if retired is not None and not isinstance(retired, str):
        raise ValidationFailed("a time or null", field=f"{where}.retired_at")
    return PublicSiteKey(
        key_id=texts["key_id"],
        site_id=texts["site_id"],
        public_key=raw.hex(),
        created_at=_time(texts["created_at"], f"{where}.created_at"),
        retired_at=_time(retired, f"{where}.retired_at") if retired else None,
    )


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _time(text: str, where: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed("not an ISO 8601 time", field=where) from None
    if parsed.tzinfo is None:
        raise ValidationFailed("a time with its offset (UTC) is expected", field=where)
    return parsed


@dataclass
class KeyImport:
    """What an import did: the key ids registered now, and those already held as the same key
    of the same site (nothing changed for them)."""

    registered: list[str] = field(default_factory=list)
    already_held: list[str] = field(default_factory=list)
    # keys held here that a certified statement says were retired earlier than this node knew
    # (their `retired_at` brought forward, audited)
    retired: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"registered": self.registered, "already_held": self.already_held}
        if self.retired:
            out["retired"] = self.retired
        return out


def export_certified_site_keys(
    session: Session,
    site_id: str,
    certificate_pem: bytes,
    private_key_pem: bytes,
    *,
    signed_at: datetime,
) -> dict[str, Any]:
    """`export_site_keys`'s document as a statement signed with the site node's certificate
    key (the bundle `import_certified_site_keys` reads; keycerts.sign_statement)."""
    return keycerts.sign_statement(
        export_site_keys(session, site_id), certificate_pem, private_key_pem, signed_at=signed_at
    )


def import_exported_site_keys(
    uow: UnitOfWork,
    actor: Actor,
    document: Any,
    *,
    network_ca_pem: bytes | None,
    trust_on_word: bool,
    own_site_id: str | None,
    reason: str,
    crl_pem: bytes | None = None,
) -> KeyImport:
    """What `nearfab node keys import` does with an exported file: a certified bundle is
    checked against the network CA (`import_certified_site_keys`; without the CA:
    ValidationFailed naming `network_ca`), a plain key list is registered only on the word of
    `actor` when `trust_on_word` (`import_site_keys`), else Refused (`certificate_missing`)."""
    if keycerts.is_certified(document):
        if network_ca_pem is None:
            raise ValidationFailed(
                "a certified export is checked against the network CA this node was given: "
                "none given",
                field="network_ca",
            )
        return import_certified_site_keys(
            uow,
            actor,
            document,
            network_ca_pem=network_ca_pem,
            own_site_id=own_site_id,
            reason=reason,
            crl_pem=crl_pem,
        )
    keys = parse_site_keys(document)  # a malformed file is named as such first
    if not trust_on_word:
        raise Refused(
            "not certified: no certificate binds these keys to their site (export them with "
            "the site node's certificate, or take them on your word: --trust-on-word, recorded "
            "in the audit trail)",
            field="certificate",
            code="certificate_missing",
        )
    return import_site_keys(uow, actor, keys, own_site_id=own_site_id, reason=reason)


def import_certified_site_keys(
    uow: UnitOfWork,
    actor: Actor,
    bundle: Mapping[str, Any],
    *,
    network_ca_pem: bytes,
    own_site_id: str | None,
    reason: str,
    crl_pem: bytes | None = None,
) -> KeyImport:
    """Register the keys of a certified statement (`export_certified_site_keys` at the site),
    once its certificate chains to `network_ca_pem` (the network CA this node was given), is
    within its validity at this node's clock, names the keys' site (common name: the site's id
    or code), and its signature over the statement verifies (keycerts.verify_statement; each
    refusal a `Refused` naming the reason: `certificate_not_trusted`, `certificate_expired`,
    `certificate_not_yet_valid`, `certificate_for_other_site`, `statement_signature_invalid`,
    `statement_signed_outside_validity`; through intermediate CAs: `certificate_chain_broken`,
    `intermediate_not_ca`, `path_length_exceeded`; with `crl_pem`, the network's CRLs:
    `crl_not_trusted`, `crl_missing`, `crl_expired`, `certificate_revoked`). Then as
    `import_site_keys`, each audit row naming the certificate (subject, issuer, serial, SHA-256
    fingerprint, validity, the intermediates), `signed_at` and the CRLs read (`revocation`). A
    key already held whose retirement the statement dates earlier than this node knew (or
    that this node held as not retired) has its `retired_at` brought forward to the
    statement's, audited (`retired`): its signatures after that time are refused here."""
    if not reason.strip():
        raise ValidationFailed("give the reason for registering these keys", field="reason")
    network_ca = keycerts.load_network_ca(network_ca_pem)
    crls = keycerts.load_crls(crl_pem) if crl_pem is not None else None
    certified = keycerts.verify_statement(bundle, network_ca, now=uow.clock.now(), crls=crls)
    keys = parse_site_keys(certified.document)
    site_id = certified.document.get("site_id")
    if not isinstance(site_id, str) or not site_id:
        raise ValidationFailed("missing", field="statement.site_id")
    site = network_site(uow.session, site_id)  # NotFound naming site_id
    if certified.common_name not in (site.id, site.code):
        raise Refused(
            f"the certificate names {certified.common_name!r}, not site {site.code} "
            f"({site.id}) whose keys the statement carries",
            field="certificate",
            code=keycerts.OTHER_SITE,
        )
    # the common name must name this site alone: a site whose code is this site's id (codes
    # are free text) would otherwise certify this site's keys with its own certificate
    cn = certified.common_name
    named = {
        *sites_by_id(uow.session, [cn]),
        *(s.id for s in sites_by_code(uow.session, [cn]).values()),
    }
    if named != {site.id}:
        raise Refused(
            f"the certificate's common name {cn!r} names more than one "
            f"site ({', '.join(sorted(named))}): it certifies none of them",
            field="certificate",
            code=keycerts.OTHER_SITE,
        )
    for key in keys:
        if key.site_id != site.id:
            raise Refused(
                f"key {key.key_id} is given as site {key.site_id}'s, in a statement certified "
                f"for {site.code} ({site.id})",
                field="site_id",
                code=keycerts.OTHER_SITE,
            )
    trust = {
        "basis": "certificate",
        "certificate": certified.certificate,
        "signed_at": certified.signed_at.isoformat(),
        "revocation": certified.revocation,
    }
    return _register(uow, actor, keys, own_site_id=own_site_id, reason=reason, trust=trust)


def import_site_keys(
    uow: UnitOfWork,
    actor: Actor,
    keys: Sequence[PublicSiteKey],
    *,
    own_site_id: str | None,
    reason: str,
) -> KeyImport:
    """Register other sites' ledger public keys in this database on the word of `actor` (no
    certificate checked: each audit row says `trust: {"basis": "on_word"}`, the actor who ran
    it in its actor column), so the signatures they made are checked here. All or nothing:
    every key is checked before any is written. Refused: a
    key of this node's own site (`own_site_id`: its keys are made here, never taken from
    outside), a key id already held as another key or another site's (it would take that key
    over; also two different keys under one id in the import), a site this network does not
    have. A key already held as the same key of the same site is left as it is (an import can
    be repeated). Each key registered has its audit row (entity `ledger_key`), in this
    transaction; the private half is empty (this node cannot sign with it)."""
    if not reason.strip():
        raise ValidationFailed("give the reason for registering these keys", field="reason")
    return _register(
        uow,
        actor,
        keys,
        own_site_id=own_site_id,
        reason=reason,
        trust={"basis": "on_word", "by": actor.user_id},
    )


def _register(
    uow: UnitOfWork,
    actor: Actor,
    keys: Sequence[PublicSiteKey],
    *,
    own_site_id: str | None,
    reason: str,
    trust: dict[str, Any],
) -> KeyImport:
    result = KeyImport()
    wanted: dict[str, PublicSiteKey] = {}
    for key in keys:
        if own_site_id is not None and key.site_id == own_site_id:
            raise Refused(
                f"key {key.key_id} is this node's own site's: its keys are made here, not imported",
                field="site_id",
                code="own_site_key",
            )
        network_site(uow.session, key.site_id)  # NotFound naming site_id
        earlier = wanted.get(key.key_id)
        if earlier is not None and (earlier.site_id, earlier.public_key) != (
            key.site_id,
            key.public_key,
        ):
            raise Refused(
                f"key id {key.key_id} is given twice with different keys",
                field="key_id",
                code="key_id_taken",
            )
        wanted[key.key_id] = key
    held = {
        k.key_id: k
        for k in uow.session.scalars(select(SiteKey).where(SiteKey.key_id.in_(list(wanted))))
    }
    for key in wanted.values():
        known = held.get(key.key_id)
        if known is None:
            continue
        if known.site_id != key.site_id or bytes(known.public_key).hex() != key.public_key:
            raise Refused(
                f"key id {key.key_id} is already held here as another key"
                f"{' of another site' if known.site_id != key.site_id else ''}: not replaced",
                field="key_id",
                code="key_id_taken",
            )
    for key in wanted.values():
        if key.key_id in held:
            result.already_held.append(key.key_id)
            known = held[key.key_id]
            if (
                trust["basis"] == "certificate"
                and key.retired_at is not None
                and (known.retired_at is None or key.retired_at < known.retired_at)
            ):
                audit(
                    uow,
                    actor,
                    AuditAction.UPDATE,
                    KEY_ENTITY,
                    key.key_id,
                    old={"retired_at": _iso(known.retired_at)},
                    new={"retired_at": key.retired_at.isoformat(), "trust": trust},
                    reason=reason,
                    site_id=key.site_id,
                )
                known.retired_at = key.retired_at
                result.retired.append(key.key_id)
            continue
        uow.session.add(
            SiteKey(
                key_id=key.key_id,
                site_id=key.site_id,
                public_key=bytes.fromhex(key.public_key),
                private_key_encrypted=b"",  # the public half only: never signs here
                created_at=key.created_at,
                retired_at=key.retired_at,
            )
        )
        audit(
            uow,
            actor,
            AuditAction.CREATE,
            KEY_ENTITY,
            key.key_id,
            new={**key.to_dict(), "imported": True, "trust": trust},
            reason=reason,
            site_id=key.site_id,
        )
        result.registered.append(key.key_id)
    uow.commit()
    return result
