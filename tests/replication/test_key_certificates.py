"""A site's ledger keys bound to the site by the network's CA (docs/replication.md, "Registering
a site's keys after the fact"; custody/services/keycerts.py).

Two real nodes (test_replication_mqtt.nodes, real SQLite, the platform clock a ManualClock at
2026-01-05 08:00 UTC). The PKI is made here with `cryptography` (EC P-256, as the bridge's
certificates in test_bridge_tls), every validity date explicit. Bundles other than the export's
own are built here from the documented format (the statement's exact JSON text, its ECDSA
P-256/SHA-256 signature in base64, the certificate in PEM), as an attacker or another
implementation would; what the site holds is read from its own tables, and each refusal leaves
the control's keys and audit trail as they were."""

from __future__ import annotations

import base64
import getpass
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select
from tests import flow_helpers as fh
from tests.cli_helpers import run
from tests.replication.test_node_keys import (
    ADMIN,
    CONTROL,
    SITE,
    audit_rows,
    folder,
    raw,
    received_at_control,
    site_keys,
)
from tests.replication.test_replication_mqtt import nodes, nodes_world, repl, some_work

from nearfab.bootstrap import App, build_app
from nearfab.common.errors import Refused, ValidationFailed
from nearfab.config import Settings
from nearfab.custody import (
    SiteKey,
    export_certified_site_keys,
    export_site_keys,
    import_certified_site_keys,
    import_exported_site_keys,
)
from nearfab.demo_nodes import plan, prepare
from nearfab.network.reads import sites

__all__ = ["held_unchecked", "nodes"]

NOW = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)  # the ManualClock's start (common/clock.py)
CA_FROM, CA_UNTIL = datetime(2025, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
CERT_FROM, CERT_UNTIL = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
REASON = "GSTT-PH's node keys, certified by the network CA"


# --- a private PKI, made with `cryptography` ----------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str, valid_from: datetime = CA_FROM, until: datetime = CA_UNTIL) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued, common_name: str, valid_from: datetime = CERT_FROM, until: datetime = CERT_UNTIL
) -> Issued:
    """A node's certificate signed by `ca` (a TLS client certificate, as the bridge's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def bundle(statement: str, signer: Issued, cert: Issued | None = None) -> dict[str, Any]:
    """The documented bundle: `statement` (the exact text signed), signed by `signer`'s key
    (ECDSA P-256, SHA-256), carrying `cert` (default: the signer's)."""
    signature = signer.key.sign(statement.encode("utf-8"), ec.ECDSA(hashes.SHA256()))
    return {
        "format": "nearfab-certified-site-keys/1",
        "statement": statement,
        "signature": base64.b64encode(signature).decode("ascii"),
        "certificate": (cert or signer).cert_pem().decode("ascii"),
    }


@dataclass
class World:
    site: App
    control: App
    origin: str  # the site's id
    network: Issued  # the network's CA
    site_cert: Issued  # GSTT-PH's certificate from it
    statement: dict[str, Any]  # the site's keys as exported, with signed_at

    def text(self, **changes: Any) -> str:
        return json.dumps({**self.statement, **changes})


def _held_unchecked(site: App, control: App) -> str:
    """The site signs entries with a key made after its copy (`some_work`), one the control
    never saw; its records are applied at the control. The site's id."""
    some_work(site, 2)
    return received_at_control(site, control)


#: (site, control, the site's id) after `_held_unchecked`: built once per worker, each test its
#: own copy of both nodes (`nodes_world`)
held_unchecked = nodes_world(_held_unchecked)


@pytest.fixture
def world(held_unchecked: tuple[App, App, str]) -> World:
    """The site signed entries with a key made after its copy, one the control never saw; its
    records are held at the control, its signatures there unchecked until the key is held."""
    site, control, origin = held_unchecked
    assert unverified(control) == [k for k, _, _ in site_keys(site)] != []
    network = make_ca("nearfab network CA")
    with site.uow() as uow:
        statement = export_site_keys(uow.session, origin)
    statement["signed_at"] = site.clock.now().isoformat()
    return World(site, control, origin, network, issue(network, "GSTT-PH"), statement)


def unverified(control: App) -> list[str]:
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    return list(status.unverified_keys)


def held_at_control(control: App) -> tuple[int, int]:
    """(site key rows, ledger_key audit rows) at the control."""
    with control.uow() as uow:
        keys = uow.session.scalar(select(func.count()).select_from(SiteKey)) or 0
    return int(keys), len(audit_rows(control, "ledger_key"))


def import_at_control(w: World, document: dict[str, Any], ca: Issued | None = None) -> list[str]:
    with w.control.uow() as uow:
        done = import_certified_site_keys(
            uow,
            ADMIN,
            json.loads(json.dumps(document)),  # what travels is JSON
            network_ca_pem=(ca or w.network).cert_pem(),
            own_site_id=repl(w.control).site_id,
            reason=REASON,
        )
    return done.registered


def test_a_certified_export_registers_the_sites_keys_at_the_control(world: World) -> None:
    w = world
    mine = site_keys(w.site)
    at = w.site.clock.now()  # some_work moved the manual clock on from its start
    assert NOW < at < CERT_UNTIL
    with w.site.uow() as uow:
        exported = export_certified_site_keys(
            uow.session,
            w.origin,
            w.site_cert.cert_pem(),
            w.site_cert.key_pem(),
            signed_at=at,
        )
    # what the export carries, checked here with `cryptography`: the statement's exact text,
    # signed with the certificate's key; the site's keys as its own table holds them
    assert exported["format"] == "nearfab-certified-site-keys/1"
    carried = x509.load_pem_x509_certificate(exported["certificate"].encode())
    assert carried == w.site_cert.cert
    w.site_cert.key.public_key().verify(
        base64.b64decode(exported["signature"]),
        exported["statement"].encode("utf-8"),
        ec.ECDSA(hashes.SHA256()),
    )  # raises InvalidSignature if not
    statement = json.loads(exported["statement"])
    assert statement["site_id"] == w.origin and statement["signed_at"] == at.isoformat()
    assert [
        (k["key_id"], k["site_id"], bytes.fromhex(k["public_key"])) for k in statement["keys"]
    ] == mine

    assert import_at_control(w, exported) == [k for k, _, _ in mine]
    with w.control.uow() as uow:
        held = {
            k.key_id: (k.site_id, bytes(k.public_key), bytes(k.private_key_encrypted))
            for k in uow.session.scalars(select(SiteKey).where(SiteKey.site_id == w.origin))
        }
    assert held == {k: (s, p, b"") for k, s, p in mine}
    (row,) = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id in held]
    assert (row.action, row.actor_id, row.reason) == ("create", "system:provisioning", REASON)
    assert row.new is not None
    trust = row.new["trust"]
    assert trust["basis"] == "certificate" and trust["signed_at"] == at.isoformat()
    assert trust["certificate"]["sha256"] == w.site_cert.cert.fingerprint(hashes.SHA256()).hex()
    assert int(trust["certificate"]["serial"], 16) == w.site_cert.cert.serial_number
    assert trust["certificate"]["subject"] == "CN=GSTT-PH"
    assert trust["certificate"]["issuer"] == "CN=nearfab network CA"
    assert trust["certificate"]["not_valid_after"] == CERT_UNTIL.isoformat()
    assert unverified(w.control) == []  # the site's signatures are checked at the control now

    # a statement built here from the documented format, the certificate naming the site by
    # its id rather than its code, is taken too (nothing new: already held)
    by_id = issue(w.network, w.origin)
    with w.control.uow() as uow:
        again = import_certified_site_keys(
            uow,
            ADMIN,
            bundle(w.text(), by_id),
            network_ca_pem=w.network.cert_pem(),
            own_site_id=repl(w.control).site_id,
            reason=REASON,
        )
    assert again.registered == [] and again.already_held == [k for k, _, _ in mine]


def refusals(w: World) -> dict[str, tuple[dict[str, Any], str, str]]:
    """Each attempt: (bundle, refusal code, field). Every bundle but the named fault is good."""
    other_ca = make_ca("someone else's CA")
    another_key = ec.generate_private_key(ec.SECP256R1())
    good = bundle(w.text(), w.site_cert)
    edited = dict(good)
    edited["statement"] = good["statement"].replace(
        w.statement["keys"][0]["created_at"], "2025-12-31T00:00:00+00:00"
    )
    assert edited["statement"] != good["statement"]
    swapped = dict(good)  # the attacker's own Ed25519 public key in place of the site's
    attackers = raw(Ed25519PrivateKey.generate()).hex()
    swapped["statement"] = good["statement"].replace(
        w.statement["keys"][0]["public_key"], attackers
    )
    assert swapped["statement"] != good["statement"]
    with w.control.uow() as uow:
        man = {s.code: s.id for s in sites(uow.session)}["MAN-PH"]
    other_sites_key = {**w.statement["keys"][0], "site_id": man, "key_id": "lk_smuggled"}
    return {
        "another CA": (
            bundle(w.text(), issue(other_ca, "GSTT-PH")),
            "certificate_not_trusted",
            "certificate",
        ),
        "the network CA's name, another CA's key": (
            bundle(w.text(), issue(make_ca("nearfab network CA"), "GSTT-PH")),
            "certificate_not_trusted",
            "certificate",
        ),
        "expired": (
            bundle(
                w.text(),
                issue(
                    w.network,
                    "GSTT-PH",
                    datetime(2025, 1, 1, tzinfo=UTC),
                    datetime(2026, 1, 1, tzinfo=UTC),
                ),
            ),
            "certificate_expired",
            "certificate",
        ),
        "not yet valid": (
            bundle(
                w.text(),
                issue(w.network, "GSTT-PH", datetime(2026, 2, 1, tzinfo=UTC), CERT_UNTIL),
            ),
            "certificate_not_yet_valid",
            "certificate",
        ),
        "the network CA expired": (
            bundle(w.text(), w.site_cert),
            "certificate_expired",
            "certificate",
        ),
        "another site's certificate": (
            bundle(w.text(), issue(w.network, "MAN-PH")),
            "certificate_for_other_site",
            "certificate",
        ),
        "another site's key in the site's statement": (
            bundle(w.text(keys=[*w.statement["keys"], other_sites_key]), w.site_cert),
            "certificate_for_other_site",
            "site_id",
        ),
        "statement edited after signing": (edited, "statement_signature_invalid", "signature"),
        "key swapped in the statement": (swapped, "statement_signature_invalid", "signature"),
        "signed with another key than the certificate's": (
            bundle(w.text(), Issued(w.site_cert.cert, another_key)),
            "statement_signature_invalid",
            "signature",
        ),
        "signed outside the certificate's validity": (
            bundle(w.text(signed_at="2025-06-01T00:00:00+00:00"), w.site_cert),
            "statement_signed_outside_validity",
            "statement.signed_at",
        ),
    }


CASES = [
    "another CA",
    "the network CA's name, another CA's key",
    "expired",
    "not yet valid",
    "the network CA expired",
    "another site's certificate",
    "another site's key in the site's statement",
    "statement edited after signing",
    "key swapped in the statement",
    "signed with another key than the certificate's",
    "signed outside the certificate's validity",
]


@pytest.mark.parametrize("case", CASES)
def test_an_import_is_refused_naming_the_reason_and_writes_nothing(world: World, case: str) -> None:
    w = world
    attempts = refusals(w)
    assert sorted(attempts) == sorted(CASES)
    document, code, field = attempts[case]
    ca = w.network
    if case == "the network CA expired":  # the same key and name, its validity over
        ca = Issued(
            issue_ca_again(w.network, until=datetime(2026, 1, 1, tzinfo=UTC)), w.network.key
        )
    before = held_at_control(w.control)
    with pytest.raises(Refused) as refused:
        import_at_control(w, document, ca)
    assert (refused.value.code, refused.value.field) == (code, field), refused.value.message
    assert held_at_control(w.control) == before
    assert unverified(w.control) == [k for k, _, _ in site_keys(w.site)]
    # the same bundle with its fault mended is taken: the refusal was for that fault alone
    assert import_at_control(w, bundle(w.text(), w.site_cert)) != []


def issue_ca_again(ca: Issued, *, until: datetime) -> x509.Certificate:
    """The CA's certificate re-issued with the same name and key, ending at `until`."""
    return (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CA_FROM)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca.key, hashes.SHA256())
    )


def test_a_plain_export_is_taken_only_on_the_word_of_who_runs_the_import(world: World) -> None:
    w = world
    mine = [k for k, _, _ in site_keys(w.site)]
    with w.site.uow() as uow:
        plain = export_site_keys(uow.session, w.origin)
    before = held_at_control(w.control)

    def attempt(trust_on_word: bool) -> list[str]:
        with w.control.uow() as uow:
            done = import_exported_site_keys(
                uow,
                ADMIN,
                plain,
                network_ca_pem=w.network.cert_pem(),
                trust_on_word=trust_on_word,
                own_site_id=repl(w.control).site_id,
                reason="checked by phone with the site",
            )
        return done.registered

    with pytest.raises(Refused) as missing:
        attempt(False)
    assert (missing.value.code, missing.value.field) == ("certificate_missing", "certificate")
    assert held_at_control(w.control) == before

    assert attempt(True) == mine
    (row,) = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id in mine]
    assert row.new is not None and row.actor_id == "system:provisioning"
    assert row.new["trust"] == {"basis": "on_word", "by": "system:provisioning"}
    assert row.reason == "checked by phone with the site"

    # a certified bundle without the CA to check it against: named, nothing taken on trust
    with pytest.raises(ValidationFailed) as no_ca, w.control.uow() as uow:
        import_exported_site_keys(
            uow,
            ADMIN,
            bundle(w.text(), w.site_cert),
            network_ca_pem=None,
            trust_on_word=True,
            own_site_id=repl(w.control).site_id,
            reason="r",
        )
    assert no_ca.value.field == "network_ca"


def cli_pki(w: World, tmp_path: Path) -> Path:
    """A folder for the CLI tests: the network CA (ca.crt, ca.key) and St Thomas' node
    certificate and key (site.crt, site.key), valid 2025 to 2030 (the CLI runs on the system
    clock, not the test's)."""
    pki = tmp_path / "pki"
    pki.mkdir()
    site_cert = issue(w.network, "GSTT-PH", CA_FROM, CA_UNTIL)
    for name, data in {
        "ca.crt": w.network.cert_pem(),
        "ca.key": w.network.key_pem(),
        "site.crt": site_cert.cert_pem(),
        "site.key": site_cert.key_pem(),
    }.items():
        (pki / name).write_bytes(data)
    return pki


def test_the_cli_exports_certified_and_imports_against_the_network_ca(
    world: World, tmp_path: Path
) -> None:
    w = world
    mine = [k for k, _, _ in site_keys(w.site)]
    pki = cli_pki(w, tmp_path)
    (pki / "other.crt").write_bytes(make_ca("someone else's CA").cert_pem())

    plain = run(["node", "keys", "export", "--out", str(tmp_path / "plain.json")], env=SITE,
                data_dir=folder(w.site))  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert "not certified" in plain.stderr
    certified = run(
        ["node", "keys", "export", "--out", str(tmp_path / "signed.json")],
        env={**SITE, "NEARFAB_NODE_CERTIFICATE": str(pki / "site.crt"),
             "NEARFAB_NODE_CERTIFICATE_KEY": str(pki / "site.key")},
        data_dir=folder(w.site),
    )  # fmt: skip
    assert certified.returncode == 0, certified.stderr
    assert json.loads((tmp_path / "signed.json").read_text())["certificate"].startswith(
        "-----BEGIN CERTIFICATE-----"
    )

    def import_(path: str, *extra: str, env: dict[str, str] = CONTROL) -> Any:
        return run(
            ["node", "keys", "import", path, "--reason", "site keys", "--json", *extra],
            env=env,
            data_dir=folder(w.control),
        )

    before = held_at_control(w.control)
    refused = import_(str(tmp_path / "plain.json"))
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["code"] == "certificate_missing"
    no_ca = import_(str(tmp_path / "signed.json"))
    assert no_ca.returncode == 2 and json.loads(no_ca.stdout)["error"]["field"] == "network_ca"
    other = import_(str(tmp_path / "signed.json"), "--network-ca", str(pki / "other.crt"))
    assert other.returncode == 2
    assert json.loads(other.stdout)["error"]["code"] == "certificate_not_trusted"
    assert held_at_control(w.control) == before

    # the CA this node was configured with (NEARFAB_NETWORK_CA) checks the site's certificate
    good = import_(
        str(tmp_path / "signed.json"), env={**CONTROL, "NEARFAB_NETWORK_CA": str(pki / "ca.crt")}
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout) == {"registered": mine, "already_held": []}
    (row,) = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id in mine]
    assert row.new is not None and row.new["trust"]["basis"] == "certificate"
    assert row.actor_id == f"system:cli:{getpass.getuser()}"


def test_the_cli_takes_a_plain_export_on_word_and_records_who_ran_it(
    world: World, tmp_path: Path
) -> None:
    w = world
    mine = [k for k, _, _ in site_keys(w.site)]
    path = tmp_path / "plain.json"
    with w.site.uow() as uow:
        path.write_text(json.dumps(export_site_keys(uow.session, w.origin)))
    done = run(
        ["node", "keys", "import", str(path), "--reason", "read out by phone", "--trust-on-word",
         "--json"],
        env=CONTROL,
        data_dir=folder(w.control),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["registered"] == mine
    (row,) = [r for r in audit_rows(w.control, "ledger_key") if r.entity_id in mine]
    who = f"system:cli:{getpass.getuser()}"
    assert row.actor_id == who and row.reason == "read out by phone"
    assert row.new is not None and row.new["trust"] == {"basis": "on_word", "by": who}


def test_the_demo_nodes_register_each_sites_key_from_its_certified_statement(
    tmp_path: Path,
) -> None:
    """`nearfab demo --nodes`'s provisioning (demo_nodes.prepare), real SQLite: each site node
    makes its own key; the control holds its public half only, registered from a statement the
    site's certificate (issued by the demo network's CA, its common name the site's code)
    signed; the CA's private key is in no node's folder."""
    settings = Settings(data_dir=tmp_path, demo_password=fh.TEST_PASSWORD)
    nodes_ = plan(settings, 18180)
    prepare(settings, nodes_, lambda _line: None)
    ca = x509.load_pem_x509_certificate(
        (tmp_path / "nodes" / "pki" / "network-ca.crt").read_bytes()
    )
    ca_key = (tmp_path / "nodes" / "pki" / "network-ca.key").read_bytes()

    def open_node(i: int) -> App:
        node = nodes_[i]
        return build_app(Settings(data_dir=node.folder, node_site=node.site_code), migrate=False)

    control = open_node(0)
    try:
        rows = audit_rows(control, "ledger_key")
        with control.uow() as uow:
            held = {
                k.key_id: (k.site_id, bytes(k.public_key), bytes(k.private_key_encrypted))
                for k in uow.session.scalars(select(SiteKey))
            }
            codes = {s.id: s.code for s in sites(uow.session)}
    finally:
        control.engine.dispose()
    for i, node in enumerate(nodes_[1:], start=1):
        certificate = x509.load_pem_x509_certificate(
            (node.folder / "certs" / "node.crt").read_bytes()
        )
        certificate.verify_directly_issued_by(ca)  # raises if the CA did not issue it
        assert certificate.subject.rfc4514_string() == f"CN={node.site_code}"
        assert all(ca_key not in p.read_bytes() for p in node.folder.rglob("*") if p.is_file())
        app = open_node(i)
        try:
            own = site_keys(app)  # made at the node: its private half there
        finally:
            app.engine.dispose()
        assert len(own) == 1
        ((key_id, site_id, public),) = own
        assert codes[site_id] == node.site_code
        assert held[key_id] == (site_id, public, b"")  # the public half only, at the control
        (row,) = [r for r in rows if r.entity_id == key_id]
        assert row.new is not None and row.new["trust"]["basis"] == "certificate"
        fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
        assert row.new["trust"]["certificate"]["sha256"] == fingerprint
        # the demo CA's first CRL (empty), signed with its key, beside each node's certificate,
        # read at the registration (deployment.md, "Revocation and intermediate CAs")
        crl = x509.load_pem_x509_crl((node.folder / "certs" / "network-ca.crl").read_bytes())
        assert crl.is_signature_valid(ca.public_key()) and list(crl) == []
        assert row.new["trust"]["revocation"]["checked"] is True

    # the CLI finds each node's files in its certs/ folder: a site's export is certified, the
    # control's import checks it against the CA there (already held: nothing new)
    site = nodes_[1]
    exported = run(["node", "keys", "export"], env={"NEARFAB_NODE_SITE": site.site_code},
                   data_dir=site.folder)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    shown = json.loads(exported.stdout)
    carried = x509.load_pem_x509_certificate(shown["certificate"].encode())
    assert carried.subject.rfc4514_string() == f"CN={site.site_code}"
    path = tmp_path / "site.json"
    path.write_text(exported.stdout)
    imported = run(["node", "keys", "import", str(path), "--reason", "again", "--json"],
                   env={"NEARFAB_NODE_SITE": "CTRL"}, data_dir=nodes_[0].folder)  # fmt: skip
    assert imported.returncode == 0, imported.stdout + imported.stderr
    stated = [k["key_id"] for k in json.loads(shown["statement"])["keys"]]
    assert json.loads(imported.stdout) == {"registered": [], "already_held": stated}


def test_the_export_is_signed_only_with_the_sites_own_certificate_and_its_key(
    world: World,
) -> None:
    """At the site: a certificate naming another site, or a key that is not the certificate's,
    signs nothing; at the control, a CA file that is not a CA's certificate is named."""
    w = world

    def export(cert: Issued, key_pem: bytes) -> dict[str, Any]:
        with w.site.uow() as uow:
            return export_certified_site_keys(
                uow.session, w.origin, cert.cert_pem(), key_pem, signed_at=w.site.clock.now()
            )

    man = issue(w.network, "MAN-PH")
    with pytest.raises(Refused) as other:
        export(man, man.key_pem())
    assert (other.value.code, other.value.field) == ("certificate_for_other_site", "certificate")
    stranger = issue(w.network, "GSTT-PH")
    with pytest.raises(ValidationFailed) as mismatched:
        export(w.site_cert, stranger.key_pem())
    assert mismatched.value.field == "certificate_key"
    with pytest.raises(ValidationFailed) as not_a_key:
        export(w.site_cert, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert not_a_key.value.field == "certificate_key"

    good = export(w.site_cert, w.site_cert.key_pem())
    before = held_at_control(w.control)
    for ca_pem in (w.site_cert.cert_pem(), b"not a certificate"):  # a node's, not a CA's
        with pytest.raises(ValidationFailed) as bad_ca, w.control.uow() as uow:
            import_certified_site_keys(
                uow,
                ADMIN,
                good,
                network_ca_pem=ca_pem,
                own_site_id=repl(w.control).site_id,
                reason=REASON,
            )
        assert bad_ca.value.field == "network_ca"
    assert held_at_control(w.control) == before


def test_ed25519_and_rsa_node_certificates_sign_too(world: World) -> None:
    """The documented signatures for the other key types: Ed25519 (the signature over the
    statement's text), RSA (PKCS #1 v1.5 with SHA-256), each checked here with `cryptography`."""
    w = world
    mine = [k for k, _, _ in site_keys(w.site)]
    registered: list[list[str]] = []
    for private in (Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)):
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("GSTT-PH"))
            .issuer_name(w.network.cert.subject)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(CERT_FROM)
            .not_valid_after(CERT_UNTIL)
            .sign(w.network.key, hashes.SHA256())
        )
        key_pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with w.site.uow() as uow:
            exported = export_certified_site_keys(
                uow.session,
                w.origin,
                cert.public_bytes(serialization.Encoding.PEM),
                key_pem,
                signed_at=w.site.clock.now(),
            )
        signature = base64.b64decode(exported["signature"])
        data = exported["statement"].encode("utf-8")
        if isinstance(private, rsa.RSAPrivateKey):
            private.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            private.public_key().verify(signature, data)
        registered.append(import_at_control(w, exported))
    assert registered == [mine, []]  # the second finds them held
