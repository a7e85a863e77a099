"""Site certificates revoked by CRL, intermediate CAs followed, and a retired key enforced from
its retirement (docs/deployment.md, "Revocation and intermediate CAs"; custody/services/
keycerts.py, revocation.py; replication/signatures.py).

Two real nodes (test_key_certificates.world: site GSTT-PH and control CTRL, real SQLite, the
clocks ManualClocks from 2026-01-05 08:00 UTC). Every certificate and CRL a check reads is made
here with `cryptography` (X.509 as RFC 5280 defines it: a CRL lists revoked serials and is
signed by the CA that issued them; basic constraints' path length is how many intermediate CAs
may follow); what the CA commands write is read back with `cryptography`, not with the code
under test. The ledger entries signed with a retired key are built as docs/custody.md defines
them (entry_hash = SHA-256(prev_hash + "\\n" + payload), Ed25519 over the hash's bytes)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from tests.cli_helpers import run
from tests.replication.test_key_certificates import (
    CA_FROM,
    CA_UNTIL,
    NOW,
    Issued,
    World,
    bundle,
    cli_pki,
    held_at_control,
    held_unchecked,
    import_at_control,
    issue,
    make_ca,
    world,
)
from tests.replication.test_node_keys import (
    ADMIN,
    CONTROL,
    SITE,
    audit_rows,
    folder,
    site_keys,
)
from tests.replication.test_release_across import decide, dossier_at_control
from tests.replication.test_replication_mqtt import nodes, repl, some_work

from nearfab.bootstrap import App
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.custody import (
    LedgerEntry,
    SiteKey,
    apply_crl,
    export_certified_site_keys,
    export_site_keys,
    import_certified_site_keys,
    refresh_crl,
    revoke_certificate,
)
from nearfab.custody.reads import site_public_keys
from nearfab.identity import system_actor
from nearfab.replication.logic import Record
from nearfab.replication.models import InboxRecord
from nearfab.replication.signatures import KeyBook, verify_signatures

__all__ = ["held_unchecked", "nodes", "world"]

CRL_FROM, CRL_UNTIL = NOW - timedelta(days=1), NOW + timedelta(days=30)


# --- a PKI with intermediates and CRLs, made with `cryptography` ---------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def ca_below(
    issuer: Issued,
    common_name: str,
    *,
    path_length: int | None = 0,
    is_ca: bool = True,
    cert_sign: bool = True,
) -> Issued:
    """A CA certificate `issuer` signs (basic constraints CA:is_ca with `path_length`, key
    usage keyCertSign and cRLSign as `cert_sign` says)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CA_FROM)
        .not_valid_after(CA_UNTIL)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None),
            critical=True,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not cert_sign,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=cert_sign,
                crl_sign=cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(cert, key)


def root_ca(common_name: str, path_length: int | None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CA_FROM)
        .not_valid_after(CA_UNTIL)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def crl(
    ca: Issued,
    revoked: list[tuple[x509.Certificate, datetime]] | None = None,
    *,
    this_update: datetime = CRL_FROM,
    next_update: datetime = CRL_UNTIL,
    name: x509.Name | None = None,
) -> bytes:
    """The CA's CRL (PEM): each certificate revoked at its time, signed with the CA's key."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name or ca.cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for cert, when in revoked or []:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(when)
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def chained(w: World, leaf: Issued, *intermediates: Issued) -> dict[str, Any]:
    """The site's statement signed by `leaf`, carrying `intermediates` (the leaf's issuer first)."""
    document = bundle(w.text(), leaf)
    document["intermediates"] = [i.cert_pem().decode("ascii") for i in intermediates]
    return document


def import_with(w: World, document: dict[str, Any], ca: Issued, crls: bytes | None) -> list[str]:
    with w.control.uow() as uow:
        done = import_certified_site_keys(
            uow,
            ADMIN,
            json.loads(json.dumps(document)),
            network_ca_pem=ca.cert_pem(),
            own_site_id=repl(w.control).site_id,
            reason="GSTT-PH's keys",
            crl_pem=crls,
        )
    return done.registered


# --- refusals, each named, nothing written --------------------------------------------------------

Attempt = tuple[dict[str, Any], Issued, bytes | None, str, str]


def attempts(w: World) -> dict[str, Attempt]:
    """Each attempt: (bundle, the CA the control trusts, its CRLs or None, code, field). The
    root of the chains allows one intermediate CA below it (path length 1); the world's network
    CA none (path length 0)."""
    root = root_ca("nearfab network root", path_length=1)
    sub = ca_below(root, "nearfab sites CA")
    under_sub = issue(sub, "GSTT-PH")
    both = crl(root) + crl(sub)
    other = make_ca("someone else's CA")
    rogue = ca_below(other, "rogue sub")
    not_ca = ca_below(root, "a node, not a CA", is_ca=False, cert_sign=False)
    no_cert_sign = ca_below(root, "CA without certificate signing", cert_sign=False)
    below_path0 = ca_below(w.network, "sub of a path-0 CA")
    deep = root_ca("nearfab deep root", path_length=2)
    level1 = ca_below(deep, "level 1", path_length=0)  # no intermediate may follow it
    level2 = ca_below(level1, "level 2", path_length=0)
    good = bundle(w.text(), w.site_cert)
    return {
        "certificate revoked": (
            good,
            w.network,
            crl(w.network, [(w.site_cert.cert, NOW - timedelta(hours=1))]),
            "certificate_revoked",
            "certificate",
        ),
        "CRL signed by another key under the network CA's name": (
            good,
            w.network,
            crl(make_ca("nearfab network CA")),
            "crl_not_trusted",
            "crl",
        ),
        "CRL of another CA only": (good, w.network, crl(other), "crl_not_trusted", "crl"),
        "CRL past its next update": (
            good,
            w.network,
            crl(
                w.network,
                this_update=NOW - timedelta(days=40),
                next_update=NOW - timedelta(days=10),
            ),
            "crl_expired",
            "crl",
        ),
        "CRL issued after the node's clock": (
            good,
            w.network,
            crl(
                w.network,
                this_update=NOW + timedelta(days=2),
                next_update=NOW + timedelta(days=9),
            ),
            "crl_not_trusted",
            "crl",
        ),
        "intermediate's CRL missing": (
            chained(w, under_sub, sub),
            root,
            crl(root),
            "crl_missing",
            "crl",
        ),
        "intermediate revoked by the root": (
            chained(w, under_sub, sub),
            root,
            crl(root, [(sub.cert, NOW - timedelta(days=1))]) + crl(sub),
            "certificate_revoked",
            "intermediates",
        ),
        "certificate revoked by its intermediate": (
            chained(w, under_sub, sub),
            root,
            crl(root) + crl(sub, [(under_sub.cert, NOW - timedelta(days=1))]),
            "certificate_revoked",
            "certificate",
        ),
        "intermediate not carried": (
            bundle(w.text(), under_sub),
            root,
            both,
            "certificate_not_trusted",
            "certificate",
        ),
        "wrong issuer: another CA under the intermediate's name carried": (
            chained(w, under_sub, ca_below(root, "nearfab sites CA")),
            root,
            both,
            "certificate_chain_broken",
            "intermediates[0]",
        ),
        "a chain to another CA": (
            chained(w, issue(rogue, "GSTT-PH"), rogue),
            root,
            None,
            "certificate_not_trusted",
            "certificate",
        ),
        "intermediate not a CA": (
            chained(w, issue(not_ca, "GSTT-PH"), not_ca),
            root,
            None,
            "intermediate_not_ca",
            "intermediates[0]",
        ),
        "intermediate without certificate signing": (
            chained(w, issue(no_cert_sign, "GSTT-PH"), no_cert_sign),
            root,
            None,
            "intermediate_not_ca",
            "intermediates[0]",
        ),
        "path length of the network CA exceeded": (
            chained(w, issue(below_path0, "GSTT-PH"), below_path0),
            w.network,
            None,
            "path_length_exceeded",
            "network_ca",
        ),
        "path length of an intermediate exceeded": (
            chained(w, issue(level2, "GSTT-PH"), level2, level1),
            deep,
            None,
            "path_length_exceeded",
            "intermediates[1]",
        ),
    }


CASES = [
    "certificate revoked",
    "CRL signed by another key under the network CA's name",
    "CRL of another CA only",
    "CRL past its next update",
    "CRL issued after the node's clock",
    "intermediate's CRL missing",
    "intermediate revoked by the root",
    "certificate revoked by its intermediate",
    "intermediate not carried",
    "wrong issuer: another CA under the intermediate's name carried",
    "a chain to another CA",
    "intermediate not a CA",
    "intermediate without certificate signing",
    "path length of the network CA exceeded",
    "path length of an intermediate exceeded",
]


@pytest.mark.parametrize("case", CASES)
def test_a_revoked_or_badly_chained_certificate_is_refused_naming_why(
    world: World, case: str
) -> None:
    w = world
    tries = attempts(w)
    assert sorted(tries) == sorted(CASES)
    document, ca, crls, code, field = tries[case]
    before = held_at_control(w.control)
    with pytest.raises(Refused) as refused:
        import_with(w, document, ca, crls)
    assert (refused.value.code, refused.value.field) == (code, field), refused.value.message
    assert held_at_control(w.control) == before
    # the site's certificate, straight from the network CA, with the CA's current CRL: taken
    assert import_with(w, bundle(w.text(), w.site_cert), w.network, crl(w.network)) != []


def test_a_chain_through_intermediate_cas_is_followed_and_recorded(world: World) -> None:
    """Root (path length 2) -> regional CA (path length 1) -> sites CA (0) -> GSTT-PH: the
    site's export carries the chain from its certificate file (the leaf first, as a TLS chain
    file), each CA's CRL checked; the audit row names the intermediates and the CRLs read."""
    w = world
    root = root_ca("nearfab network root", path_length=2)
    regional = ca_below(root, "nearfab regional CA", path_length=1)
    sites_ca = ca_below(regional, "nearfab sites CA", path_length=0)
    leaf = issue(sites_ca, "GSTT-PH")
    chain_file = leaf.cert_pem() + sites_ca.cert_pem() + regional.cert_pem()
    with w.site.uow() as uow:
        exported = export_certified_site_keys(
            uow.session, w.origin, chain_file, leaf.key_pem(), signed_at=w.site.clock.now()
        )
    carried = [x509.load_pem_x509_certificate(p.encode()) for p in exported["intermediates"]]
    assert carried == [sites_ca.cert, regional.cert]
    crls = crl(root) + crl(regional) + crl(sites_ca)
    mine = [k for k, _, _ in site_keys(w.site)]
    assert import_with(w, exported, root, crls) == mine
    (row,) = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id in mine]
    assert row.new is not None
    trust = row.new["trust"]
    assert [i["subject"] for i in trust["certificate"]["intermediates"]] == [
        "CN=nearfab sites CA",
        "CN=nearfab regional CA",
    ]
    assert (
        trust["certificate"]["intermediates"][0]["sha256"]
        == sites_ca.cert.fingerprint(hashes.SHA256()).hex()
    )
    assert trust["revocation"]["checked"] is True
    assert [c["issuer"] for c in trust["revocation"]["crls"]] == [
        "CN=nearfab sites CA",
        "CN=nearfab regional CA",
        "CN=nearfab network root",
    ]
    # the same chain, the intermediates given out of order, is a broken chain
    swapped = {**exported, "intermediates": list(reversed(exported["intermediates"]))}
    with pytest.raises(Refused) as broken:
        import_with(w, swapped, root, crls)
    assert (broken.value.code, broken.value.field) == (
        "certificate_chain_broken",
        "intermediates[0]",
    )


def test_an_import_without_a_crl_says_revocation_was_not_checked(world: World) -> None:
    w = world
    mine = [k for k, _, _ in site_keys(w.site)]
    assert import_at_control(w, bundle(w.text(), w.site_cert)) == mine
    (row,) = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id in mine]
    assert row.new is not None and row.new["trust"]["revocation"] == {"checked": False}


# --- keys registered before the revocation ------------------------------------------------------


def problems_at_control(w: World) -> list[str]:
    with w.control.uow() as uow:
        (status,) = repl(w.control).inbox_status(uow)
    return list(status.chain_problems)


def deliver_new(w: World) -> None:
    """The site's records the control does not hold yet, applied there as the inbox would."""
    with w.site.uow() as uow:
        repl(w.site).capture_now(uow)
    with w.site.uow() as uow:
        records = repl(w.site).pending(uow, 100_000)
    with w.control.uow() as uow:
        held = set(uow.session.scalars(select(InboxRecord.id)))
        new = [r.to_message() for r in records if r.id not in held]
        assert new != [] and repl(w.control).apply(uow, new).problems == []


def signed_after(w: World, when: datetime) -> list[int]:
    """The site's own signed ledger entries recorded after `when` (from its own table)."""
    with w.site.uow() as uow:
        rows = uow.session.execute(
            select(LedgerEntry.seq, LedgerEntry.recorded_at, LedgerEntry.signature).where(
                LedgerEntry.site_id == w.origin
            )
        ).all()
    return sorted(seq for seq, at, signature in rows if signature and at > when)


def test_keys_registered_before_a_revocation_are_not_trusted_after_it_once_the_crl_arrives(
    world: World,
) -> None:
    """The site's keys are registered from its certificate; the certificate is revoked (its
    key stolen) at T; the site's entries after T keep arriving. Until the CRL is read, every
    signature verifies (silently trusted); once it is (`apply_crl`), the keys are retired
    from T, audited, and every signed entry dated after T is named; those before stay good."""
    w = world
    mine = [k for k, _, _ in site_keys(w.site)]
    assert import_at_control(w, bundle(w.text(), w.site_cert)) == mine
    revoked_at = w.site.clock.now() + timedelta(seconds=30)
    some_work(w.site, 3)  # entries at T - 30 s, T + 30 s, T + 90 s
    deliver_new(w)
    later = signed_after(w, revoked_at)
    assert later != [] and problems_at_control(w) == []  # trusted: the CRL is not here yet

    with w.control.uow() as uow:
        keys_before = {k.key_id: k.retired_at for k in uow.session.scalars(select(SiteKey))}
    rows_before = len(audit_rows(w.control, "ledger_key"))
    # a CRL another CA signed retires nothing
    with pytest.raises(Refused) as untrusted, w.control.uow() as uow:
        apply_crl(
            uow,
            ADMIN,
            crl(make_ca("nearfab network CA"), [(w.site_cert.cert, revoked_at)]),
            network_ca_pem=w.network.cert_pem(),
            reason="CRL from the CA",
        )
    assert untrusted.value.code == "crl_not_trusted"
    with w.control.uow() as uow:
        assert {k.key_id: k.retired_at for k in uow.session.scalars(select(SiteKey))} == (
            keys_before
        )
    assert len(audit_rows(w.control, "ledger_key")) == rows_before

    the_crl = crl(w.network, [(w.site_cert.cert, revoked_at)])
    with w.control.uow() as uow:
        done = apply_crl(
            uow, ADMIN, the_crl, network_ca_pem=w.network.cert_pem(), reason="CRL 1 arrived"
        )
    assert [r["key_id"] for r in done.retired] == mine
    assert done.retired[0]["serial"] == format(w.site_cert.cert.serial_number, "x")
    with w.control.uow() as uow:
        held = {k.key_id: k.retired_at for k in uow.session.scalars(select(SiteKey))}
    assert all(held[k] == revoked_at for k in mine)
    rows = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id in mine]
    update = rows[-1]
    assert (update.action, update.reason) == ("update", "CRL 1 arrived")
    assert update.old == {"retired_at": None}
    assert update.new is not None and update.new["retired_at"] == revoked_at.isoformat()

    problems = problems_at_control(w)
    named = sorted(int(p.split(" seq ")[2].split(")")[0]) for p in problems)
    assert named == later, problems
    assert all("signed after the key's retirement" in p for p in problems)

    # read again: nothing more changes
    with w.control.uow() as uow:
        again = apply_crl(
            uow, ADMIN, the_crl, network_ca_pem=w.network.cert_pem(), reason="CRL 1 again"
        )
    assert again.retired == [] and again.already_retired == mine
    assert len(audit_rows(w.control, "ledger_key")) == rows_before + len(mine)


# --- a retired key, before its rotation arrives ---------------------------------------------------


def signed_entry(
    site_id: str, seq: int, key_id: str, key: Ed25519PrivateKey, recorded_at: datetime
) -> Record:
    """One ledger entry as docs/custody.md defines it, signed with `key`."""
    stamp = recorded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    payload = json.dumps(
        {
            "body": {"n": seq},
            "kind": "epcis",
            "recorded_at": stamp,
            "ref": f"r{seq}",
            "seq": seq,
            "site_id": site_id,
        }
    )
    prev = "0" * 64
    digest = hashlib.sha256(f"{prev}\n{payload}".encode()).hexdigest()
    row = {
        "site_id": site_id,
        "seq": seq,
        "kind": "epcis",
        "ref": f"r{seq}",
        "payload": payload,
        "prev_hash": prev,
        "entry_hash": digest,
        "key_id": key_id,
        "signature": key.sign(bytes.fromhex(digest)).hex(),
    }
    return Record(
        id=f"{site_id}/ledger:{site_id}:{seq}",
        origin_site=site_id,
        seq=seq,
        kind="ledger",
        source_ref=f"ledger:{site_id}:{seq}",
        chain_hash=digest,
        prev_hash="",
        record_hash="",
        payload=json.dumps(row),
        created_at=recorded_at.isoformat(),
    )


def test_a_retired_key_validates_nothing_signed_after_its_retirement() -> None:
    """KeyBook with a key retired at T: an entry it signed dated T or before verifies, one
    dated after T is named, though no rotation entry is among the records."""
    k1 = Ed25519PrivateKey.generate()
    public = k1.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    retired = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    book = {"k1": ("site_A", public, retired)}
    at_t = verify_signatures([signed_entry("site_A", 1, "k1", k1, retired)], KeyBook(book))
    assert (at_t.verified, at_t.problems) == (1, [])
    after = verify_signatures(
        [signed_entry("site_A", 1, "k1", k1, retired + timedelta(seconds=1))], KeyBook(book)
    )
    assert after.verified == 0 and len(after.problems) == 1
    assert "signed after the key's retirement" in after.problems[0]
    not_retired = {"k1": ("site_A", public, None)}
    late = [signed_entry("site_A", 1, "k1", k1, retired + timedelta(days=1))]
    assert verify_signatures(late, KeyBook(not_retired)).problems == []


def test_a_certified_statement_retires_a_held_key_before_its_rotation_arrives(
    world: World,
) -> None:
    """The control holds the site's key k1. The site rotates it (k1 retired at R, the rotation
    entry not sent yet) and sends a certified statement saying so: the control brings k1's
    `retired_at` forward to R (audited) and registers k2. An entry signed with k1 (its private
    half stolen from the site) dated after R is then refused by the control's KeyBook, with no
    rotation entry held; one dated before R still verifies."""
    w = world
    (k1,) = [k for k, _, _ in site_keys(w.site)]
    assert import_at_control(w, bundle(w.text(), w.site_cert)) == [k1]
    with w.site.uow() as uow:
        w.site.custody_chain.ledger.rotate(
            uow, system_actor("operator"), w.origin, reason="yearly rotation"
        )
    with w.site.uow() as uow:
        old = uow.session.get(SiteKey, k1)
        assert old is not None and old.retired_at is not None
        retired_at, sealed = old.retired_at, bytes(old.private_key_encrypted)
        stolen = w.site.custody_chain.keyring.open(sealed)
        exported = export_certified_site_keys(
            uow.session,
            w.origin,
            w.site_cert.cert_pem(),
            w.site_cert.key_pem(),
            signed_at=w.site.clock.now(),
        )
    (k2,) = [k for k, _, _ in site_keys(w.site) if k != k1]
    with w.control.uow() as uow:
        done = import_certified_site_keys(
            uow,
            ADMIN,
            exported,
            network_ca_pem=w.network.cert_pem(),
            own_site_id=repl(w.control).site_id,
            reason="GSTT-PH rotated its key",
        )
    assert (done.registered, done.already_held, done.retired) == ([k2], [k1], [k1])
    update = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id == k1][-1]
    assert update.action == "update" and update.old == {"retired_at": None}
    assert update.new is not None and update.new["retired_at"] == retired_at.isoformat()

    with w.control.uow() as uow:
        book = site_public_keys(uow.session)
    before = signed_entry(w.origin, 1, k1, stolen, retired_at - timedelta(minutes=5))
    after = signed_entry(w.origin, 1, k1, stolen, retired_at + timedelta(hours=1))
    assert verify_signatures([before], KeyBook(book)).problems == []
    report = verify_signatures([after], KeyBook(book))
    assert report.verified == 0
    assert len(report.problems) == 1 and f"key {k1} is retired here" in report.problems[0]


# --- the CA's commands and the node's -------------------------------------------------------------


def test_the_ca_revokes_and_refreshes_its_crl(world: World) -> None:
    """`revoke_certificate` / `refresh_crl`, read back with `cryptography`: signed by the CA,
    the serial listed with its reason and invalidity date, the number one more each time, the
    entries kept, next update `days` on; a certificate of another CA or a CRL not the CA's is
    refused."""
    w = world
    at = datetime(2026, 2, 1, 9, 0, tzinfo=UTC)
    first = refresh_crl(w.network.cert_pem(), w.network.key_pem(), now=at, days=7)
    crl1 = x509.load_pem_x509_crl(first)
    assert crl1.is_signature_valid(w.network.key.public_key())
    assert list(crl1) == [] and crl1.next_update_utc == at + timedelta(days=7)
    assert crl1.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    since = at - timedelta(days=2)
    second = revoke_certificate(
        w.network.cert_pem(),
        w.network.key_pem(),
        w.site_cert.cert_pem(),
        reason="key_compromise",
        now=at + timedelta(hours=1),
        crl_pem=first,
        invalid_since=since,
    )
    crl2 = x509.load_pem_x509_crl(second)
    assert crl2.is_signature_valid(w.network.key.public_key())
    assert crl2.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    entry = crl2.get_revoked_certificate_by_serial_number(w.site_cert.cert.serial_number)
    assert entry is not None and entry.revocation_date_utc == at + timedelta(hours=1)
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.key_compromise
    invalid = entry.extensions.get_extension_for_class(x509.InvalidityDate).value
    assert invalid.invalidity_date_utc == since
    third = x509.load_pem_x509_crl(
        refresh_crl(
            w.network.cert_pem(), w.network.key_pem(), now=at + timedelta(days=6), crl_pem=second
        )
    )
    assert [r.serial_number for r in third] == [w.site_cert.cert.serial_number]
    assert third.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3

    with pytest.raises(ValidationFailed) as foreign:
        revoke_certificate(
            w.network.cert_pem(),
            w.network.key_pem(),
            issue(make_ca("someone else's CA"), "GSTT-PH").cert_pem(),
            reason="key_compromise",
            now=at,
        )
    assert foreign.value.field == "certificate"
    with pytest.raises(ValidationFailed) as bad_reason:
        revoke_certificate(
            w.network.cert_pem(),
            w.network.key_pem(),
            w.site_cert.cert_pem(),
            reason="stolen",
            now=at,
        )
    assert bad_reason.value.field == "reason"
    with pytest.raises(ValidationFailed) as not_its_key:
        refresh_crl(w.network.cert_pem(), w.site_cert.key_pem(), now=at)
    assert not_its_key.value.field == "ca_key"
    with pytest.raises(Refused) as not_its_crl:
        refresh_crl(
            w.network.cert_pem(),
            w.network.key_pem(),
            now=at,
            crl_pem=crl(make_ca("nearfab network CA")),
        )
    assert not_its_crl.value.code == "crl_not_trusted"


def test_the_cli_revokes_a_site_certificate_and_the_control_stops_trusting_its_keys(
    world: World, tmp_path: Path
) -> None:
    w = world
    mine = [k for k, _, _ in site_keys(w.site)]
    pki = cli_pki(w, tmp_path)
    exported = run(
        ["node", "keys", "export", "--out", str(tmp_path / "signed.json"),
         "--certificate", str(pki / "site.crt"), "--certificate-key", str(pki / "site.key")],
        env=SITE,
        data_dir=folder(w.site),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    the_crl = pki / "network.crl"
    ca = ["--ca-cert", str(pki / "ca.crt"), "--ca-key", str(pki / "ca.key"), "--crl", str(the_crl)]
    first = run(["node", "ca", "crl", *ca, "--json"])
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["revoked"] == []

    def import_(*extra: str) -> Any:
        return run(
            ["node", "keys", "import", str(tmp_path / "signed.json"), "--reason", "site keys",
             "--network-ca", str(pki / "ca.crt"), "--json", *extra],
            env=CONTROL,
            data_dir=folder(w.control),
        )  # fmt: skip

    good = import_("--crl", str(the_crl))
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["registered"] == mine

    revoked = run(
        ["node", "ca", "revoke", *ca, "--certificate", str(pki / "site.crt"),
         "--reason", "key_compromise", "--json"]
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    listed = x509.load_pem_x509_crl(the_crl.read_bytes())
    assert listed.is_signature_valid(w.network.key.public_key())
    site_cert = x509.load_pem_x509_certificate((pki / "site.crt").read_bytes())
    assert listed.get_revoked_certificate_by_serial_number(site_cert.serial_number)

    refused = import_("--crl", str(the_crl))
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["code"] == "certificate_revoked"

    checked = run(
        ["node", "keys", "revoke-check", "--crl", str(the_crl), "--network-ca",
         str(pki / "ca.crt"), "--reason", "CRL 2 from the CA", "--json"],
        env=CONTROL,
        data_dir=folder(w.control),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [r["key_id"] for r in json.loads(checked.stdout)["retired"]] == mine
    with w.control.uow() as uow:
        held = {k.key_id: k.retired_at for k in uow.session.scalars(select(SiteKey))}
    assert all(held[k] is not None for k in mine)


def test_a_dossier_signed_after_its_key_was_retired_here_is_not_signed_by_the_site(
    nodes: tuple[App, App],
) -> None:
    """The control's check of a dossier's signed entry (`ControlReleases._site_signed`) with a
    key retired here before the entry's time: the site's certified statement dates the key's
    retirement a minute before it signed the dossier, no rotation in its chain. The QP's
    decision is refused (`dossier_not_verified`), naming the retirement; nothing signed."""
    site, control = nodes
    batch_id = dossier_at_control(site, control)  # the site's keys held at the control
    origin = repl(site).site_id
    with site.uow() as uow:
        (key_id, signed_at) = uow.session.execute(
            select(LedgerEntry.key_id, LedgerEntry.recorded_at).where(
                LedgerEntry.site_id == origin,
                LedgerEntry.kind == "dossier",
                LedgerEntry.signature != "",
            )
        ).one()
        document = export_site_keys(uow.session, origin)
    retired = signed_at - timedelta(minutes=1)
    for key in document["keys"]:
        if key["key_id"] == key_id:
            key["retired_at"] = retired.isoformat()
    network = make_ca("nearfab network CA")
    statement = json.dumps({**document, "signed_at": site.clock.now().isoformat()})
    with control.uow() as uow:
        done = import_certified_site_keys(
            uow,
            ADMIN,
            bundle(statement, issue(network, "GSTT-PH")),
            network_ca_pem=network.cert_pem(),
            own_site_id=repl(control).site_id,
            reason="GSTT-PH says its key was retired",
        )
    assert done.retired == [key_id]
    with pytest.raises(Refused) as refused:
        decide(control, batch_id)
    assert refused.value.code == "dossier_not_verified"
    assert "signed after the key's retirement" in refused.value.message


def test_a_crl_of_an_intermediate_ca_or_revoking_it_retires_the_keys_below_it(
    world: World,
) -> None:
    """Keys registered through root -> sites CA -> GSTT-PH. The sites CA's own CRL (verified
    with the intermediate's certificate the registration recorded) listing the site's
    certificate retires them; so does the root's CRL listing the intermediate, from its
    earlier time; a CRL of a CA no registration names is refused."""
    w = world
    root = root_ca("nearfab network root", path_length=1)
    sub = ca_below(root, "nearfab sites CA")
    leaf = issue(sub, "GSTT-PH")
    mine = [k for k, _, _ in site_keys(w.site)]
    assert import_with(w, chained(w, leaf, sub), root, crl(root) + crl(sub)) == mine

    def check(crls: bytes) -> Any:
        with w.control.uow() as uow:
            return apply_crl(uow, ADMIN, crls, network_ca_pem=root.cert_pem(), reason="CRLs")

    with pytest.raises(Refused) as stranger:
        check(crl(ca_below(root, "another sites CA")))
    assert stranger.value.code == "crl_not_trusted"
    leaf_revoked = NOW - timedelta(hours=2)
    done = check(crl(root) + crl(sub, [(leaf.cert, leaf_revoked)]))
    assert [(r["key_id"], r["issuer"]) for r in done.retired] == [
        (k, "CN=nearfab sites CA") for k in mine
    ]
    sub_revoked = NOW - timedelta(days=3)  # earlier: the keys are retired from then
    done = check(crl(root, [(sub.cert, sub_revoked)]) + crl(sub, [(leaf.cert, leaf_revoked)]))
    assert [r["untrusted_from"] for r in done.retired] == [sub_revoked.isoformat()] * len(mine)
    with w.control.uow() as uow:
        held = {k.key_id: k.retired_at for k in uow.session.scalars(select(SiteKey))}
    assert all(held[k] == sub_revoked for k in mine)
