"""Mutual TLS between the site's broker and the control site's (docs/deployment.md,
"Certificates between nodes"): a private CA, a server certificate for the control broker, a
client certificate for the site's bridge, all made here with `cryptography`. The control
broker's bridge listener requires a client certificate signed by that CA and takes the
certificate's common name as the MQTT identity; the site's bridge checks the control broker's
certificate and its host name (`bridge_insecure false`).

Shown with two real Mosquitto brokers and the real replicator and inbox: the site's records
cross the TLS bridge exactly once; a bridge with a certificate from another CA, or with none,
is refused by the control broker and nothing crosses; a control broker whose certificate names
another host is refused by the bridge and nothing crosses; the control broker's ACL keeps the
site's identity to its own site's topics. What crosses is read from the control node's inbox,
what the site owns from its own tables (test_replication_mqtt)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion
from tests.replication.test_replication_mqtt import inbox_refs, nodes, owned_rows, repl, wait_for
from tests.telemetry.test_mqtt import Broker, free_port

from nearfab.bootstrap import App
from nearfab.network.reads import sites
from nearfab.replication import replicate_once, start_inbox
from nearfab.replication.logic import TOPIC_ROOT
from nearfab.telemetry import BrokerAddress

__all__ = ["nodes"]

SITE_IDENTITY = "bridge-GSTT-PH"  # the common name of the site's client certificate

# --- a private PKI, made with `cryptography` ----------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nearfab test network"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued,
    common_name: str,
    *,
    server: bool,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> Issued:
    """A leaf certificate signed by `ca`: a server's (serverAuth, its host names as subject
    alternative names) or a client's (clientAuth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_pem(issued: Issued, folder: Path, stem: str) -> tuple[Path, Path]:
    """(certificate, key) as PEM files in `folder`."""
    cert = folder / f"{stem}.crt"
    key = folder / f"{stem}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@dataclass(frozen=True)
class Pki:
    """Everything a test's brokers may be given, as files in the test's tmp_path."""

    ca: Path  # the network's CA certificate
    server: tuple[Path, Path]  # the control broker's certificate, for 127.0.0.1
    wrong_host: tuple[Path, Path]  # signed by the CA, but for control.example only
    client: tuple[Path, Path]  # the site's bridge, signed by the CA
    stranger: tuple[Path, Path]  # a client certificate from another CA


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    folder = tmp_path / "pki"
    folder.mkdir()
    network = make_ca("nearfab network CA")
    other = make_ca("someone else's CA")
    ca = folder / "ca.crt"
    ca.write_bytes(network.cert.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=ca,
        server=write_pem(
            issue(network, "control broker", server=True, dns=("localhost",), ips=("127.0.0.1",)),
            folder,
            "server",
        ),
        wrong_host=write_pem(
            issue(network, "control broker", server=True, dns=("control.example",)),
            folder,
            "wrong-host",
        ),
        client=write_pem(issue(network, SITE_IDENTITY, server=False), folder, "client"),
        stranger=write_pem(issue(other, SITE_IDENTITY, server=False), folder, "stranger"),
    )


def install(path: Path, broker_folder: Path) -> Path:
    """A copy of a certificate or key in the broker's own folder: mosquitto started as root
    drops to its own user before the bridge loads its files, and tmp_path is root's only."""
    target = broker_folder / path.name
    shutil.copyfile(path, target)
    target.chmod(0o644)
    return target


# --- the control broker with a TLS listener, the site broker bridged to it -----------------------


@dataclass
class Link:
    hub: Broker  # the control broker: a plain listener for the control node on 127.0.0.1 ...
    tls_port: int  # ... and the TLS listener the sites' bridges reach
    local: Broker  # the site's broker, its bridge on TLS
    hub_log: Path
    local_log: Path


@pytest.fixture
def link_factory(nodes: tuple[App, App]) -> Iterator[Callable[..., Link]]:
    made: list[Link] = []
    folders: list[Path] = []

    def make(*, server: tuple[Path, Path], client: tuple[Path, Path] | None, ca: Path) -> Link:
        site, control = nodes
        hub_folder, local_folder = (
            Path(tempfile.mkdtemp(prefix=f"nearfab-tls-{n}-")) for n in ("ctrl", "site")
        )
        folders.extend((hub_folder, local_folder))
        hub, local = Broker(hub_folder), Broker(local_folder)
        tls_port = free_port()
        # the control broker: the bridge listener requires a client certificate of the CA; the
        # ACL lets the site's identity write its own site's topics and read the control's
        # (before any `user` line: the anonymous clients, the control node on 127.0.0.1), and
        # write its bridge's state notification: a bridge whose notification is denied loses
        # its connection at once and carries nothing (found here, mosquitto 2.0.11)
        acl = hub_folder / "acl"
        bridge_id = f"nearfab-bridge-{repl(site).site_id}"
        acl.write_text(
            f"topic readwrite {TOPIC_ROOT}/#\n"
            f"user {SITE_IDENTITY}\n"
            f"topic write {TOPIC_ROOT}/{repl(site).site_id}/#\n"
            f"topic read {TOPIC_ROOT}/{repl(control).site_id}/#\n"
            f"topic write $SYS/broker/connection/{bridge_id}/state\n"
        )
        acl.chmod(0o644)
        with hub.conf.open("a") as conf:
            conf.write(
                f"acl_file {acl}\n"
                f"listener {tls_port} 127.0.0.1\n"
                f"cafile {install(ca, hub_folder)}\n"
                f"certfile {install(server[0], hub_folder)}\n"
                f"keyfile {install(server[1], hub_folder)}\n"
                "require_certificate true\n"
                "use_identity_as_username true\n"
            )
        # the site's bridge: the control broker's certificate checked, its own presented
        lines = [
            "connection to-control",
            f"address 127.0.0.1:{tls_port}",
            f"topic {TOPIC_ROOT}/{repl(site).site_id}/# out 1",
            f"topic {TOPIC_ROOT}/{repl(control).site_id}/# in 1",
            f"remote_clientid {bridge_id}",
            "cleansession false",
            "restart_timeout 1 1",
            "keepalive_interval 5",
            "try_private true",
            f"bridge_cafile {install(ca, local_folder)}",
            "bridge_insecure false",
        ]
        if client is not None:
            lines += [
                f"bridge_certfile {install(client[0], local_folder)}",
                f"bridge_keyfile {install(client[1], local_folder)}",
            ]
        with local.conf.open("a") as conf:
            conf.write("\n".join(lines) + "\n")
        hub.start()
        local.start()
        link = Link(hub, tls_port, local, hub_folder / "broker.log", local_folder / "broker.log")
        made.append(link)
        return link

    yield make
    for link in made:
        for b in (link.local, link.hub):
            if b.proc is not None and b.proc.poll() is None:
                b.stop()
    for f in folders:
        shutil.rmtree(f, ignore_errors=True)


def log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def client_refused(port: int, ca: Path, cert: tuple[Path, Path] | None) -> bool:
    """Whether an MQTT client reaching the TLS listener is refused (paho over TLS, checking
    the broker's certificate; `cert`: the client certificate it presents, if any)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{os.getpid()}")
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    client.tls_set_context(context)
    try:
        client.connect("127.0.0.1", port, keepalive=5)
        client.loop_start()
        connected = wait_for(client.is_connected, 3)
        client.loop_stop()
        client.disconnect()
    except (OSError, ssl.SSLError):
        return True
    return not connected


def send_from_site(site: App, link: Link) -> None:
    """The site replicates to its own broker, which takes everything (the bridge queues)."""
    sent = replicate_once(repl(site), site.uow, BrokerAddress("127.0.0.1", link.local.port))
    assert sent.error is None and sent.pending == 0 and sent.acknowledged > 0, sent


# --- the tests ----------------------------------------------------------------------------------


def test_records_cross_the_mutual_tls_bridge_exactly_once(
    nodes: tuple[App, App], pki: Pki, link_factory: Callable[..., Link]
) -> None:
    site, control = nodes
    link = link_factory(server=pki.server, client=pki.client, ca=pki.ca)
    origin = repl(site).site_id
    inbox = start_inbox(
        repl(control),
        control.uow,
        BrokerAddress("127.0.0.1", link.hub.port),
        control_site_id=repl(control).site_id,
    )
    try:
        send_from_site(site, link)
        expected = owned_rows(site)
        assert wait_for(lambda: len(inbox_refs(control, origin)) >= len(expected), 30), (
            f"{len(inbox_refs(control, origin))} of {len(expected)} arrived\n{log(link.hub_log)}"
        )
        assert wait_for(lambda: inbox.idle_for(0.5), 10)  # any late copy arrives and is judged
    finally:
        inbox.stop()
    refs = inbox_refs(control, origin)
    assert sorted(refs) == sorted(expected) and len(refs) == len(set(refs))
    with control.uow() as uow:
        (status,) = repl(control).inbox_status(uow)
    assert status.ok and status.head_seq == len(expected) and status.duplicates == 0, (
        status.to_dict()
    )
    # the bridge came in on the TLS listener, its certificate's name as its MQTT identity
    bridge_id = f"nearfab-bridge-{origin}"
    assert f"as {bridge_id} " in log(link.hub_log) and f"u'{SITE_IDENTITY}'" in log(link.hub_log)
    # the listener takes nobody without a certificate of the network's CA
    assert client_refused(link.tls_port, pki.ca, None)
    assert client_refused(link.tls_port, pki.ca, pki.stranger)
    assert not client_refused(link.tls_port, pki.ca, pki.client)


@pytest.mark.parametrize(
    ("presented", "refusal"),
    [
        ("another CA's certificate", "certificate verify failed"),
        ("no certificate", "peer did not return a certificate"),
    ],
)
def test_a_bridge_without_a_certificate_of_the_network_ca_is_refused(
    nodes: tuple[App, App],
    pki: Pki,
    link_factory: Callable[..., Link],
    presented: str,
    refusal: str,
) -> None:
    """The control broker's OpenSSL names why (its log): another CA's certificate does not
    verify against the network's CA; without one, the listener that requires one ends the
    handshake."""
    site, control = nodes
    client = pki.stranger if presented == "another CA's certificate" else None
    link = link_factory(server=pki.server, client=client, ca=pki.ca)
    origin = repl(site).site_id
    inbox = start_inbox(
        repl(control),
        control.uow,
        BrokerAddress("127.0.0.1", link.hub.port),
        control_site_id=repl(control).site_id,
    )
    try:
        send_from_site(site, link)
        # the bridge tries again every second; the control broker refuses the handshake each
        # time: wait for two refusals after the site's records were queued
        start = len(log(link.hub_log))

        def refusals() -> int:
            return log(link.hub_log)[start:].count(refusal)

        assert wait_for(lambda: refusals() >= 2, 30), log(link.hub_log)[-3000:]
    finally:
        inbox.stop()
    assert inbox_refs(control, origin) == []  # nothing crossed
    hub_log = log(link.hub_log)
    assert f"nearfab-bridge-{origin}" not in hub_log  # no MQTT session was ever opened


def test_a_control_broker_certificate_for_another_host_is_refused_by_the_bridge(
    nodes: tuple[App, App], pki: Pki, link_factory: Callable[..., Link]
) -> None:
    """The control broker's certificate is signed by the network's CA but names
    control.example, not the address the bridge reaches (127.0.0.1): with
    `bridge_insecure false` the bridge refuses it, and nothing crosses."""
    site, control = nodes
    link = link_factory(server=pki.wrong_host, client=pki.client, ca=pki.ca)
    origin = repl(site).site_id
    inbox = start_inbox(
        repl(control),
        control.uow,
        BrokerAddress("127.0.0.1", link.hub.port),
        control_site_id=repl(control).site_id,
    )
    try:
        send_from_site(site, link)
        start = len(log(link.local_log))

        def refusals() -> int:
            return log(link.local_log)[start:].count("host name verification failed")

        assert wait_for(lambda: refusals() >= 2, 30), log(link.local_log)[-3000:]
    finally:
        inbox.stop()
    assert inbox_refs(control, origin) == []
    assert f"nearfab-bridge-{origin}" not in log(link.hub_log)


def test_a_site_identity_publishes_under_its_own_site_only(
    nodes: tuple[App, App], pki: Pki, link_factory: Callable[..., Link]
) -> None:
    """The control broker's ACL: a client holding the site's certificate (its identity
    `bridge-GSTT-PH`) publishes under another site's topic: the broker denies it (and, Mosquitto
    2.0.11, ends that connection); then, on a new connection, under its own site's topic: it
    is delivered. A subscriber on the control broker's local listener, subscribed before
    either, receives only the second: the first was judged before the second was sent."""
    site, control = nodes
    link = link_factory(server=pki.server, client=pki.client, ca=pki.ca)
    with control.uow() as uow:
        other = next(s.id for s in sites(uow.session) if s.code == "MAN-PH")
    forbidden = f"{TOPIC_ROOT}/{other}/audit"
    allowed = f"{TOPIC_ROOT}/{repl(site).site_id}/audit"
    seen: list[str] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acl-watcher")
    watcher.on_message = lambda _c, _u, message: seen.append(message.topic)
    watcher.on_subscribe = lambda _c, _u, _m, _r, _p: seen.append("subscribed")
    watcher.connect("127.0.0.1", link.hub.port)
    watcher.subscribe(f"{TOPIC_ROOT}/#", qos=1)
    watcher.loop_start()
    try:
        assert wait_for(lambda: "subscribed" in seen, 10)
        with as_the_site(pki, link.tls_port, "acl-probe-1") as sender:
            sender.publish(forbidden, b"as another site", qos=1)

            def denied() -> bool:
                return any(
                    line.split(": ", 1)[-1].startswith("Denied PUBLISH from acl-probe-1 ")
                    and f"'{forbidden}'" in line
                    for line in log(link.hub_log).splitlines()
                )

            assert wait_for(denied, 10), log(link.hub_log)[-2000:]
        with as_the_site(pki, link.tls_port, "acl-probe-2") as sender:
            sender.publish(allowed, b"as itself", qos=1).wait_for_publish(10)
        assert wait_for(lambda: allowed in seen, 10), seen
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert seen == ["subscribed", allowed]


@contextmanager
def as_the_site(pki: Pki, port: int, client_id: str) -> Iterator[mqtt.Client]:
    """An MQTT client on the TLS listener presenting the site's certificate, connected."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client[0]), str(pki.client[1]))
    client.tls_set_context(context)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert wait_for(client.is_connected, 10)
        yield client
    finally:
        client.loop_stop()
        client.disconnect()
