"""`nearfab demo --nodes`: the demo network as four nodes on one machine (docs/replication.md),
the control site and its three point-of-care sites, each a `nearfab demo` process with its own
data folder (its SQLite database and keys) and web server, replicating through one MQTT broker.

The network is seeded once, in the control node's folder, and each site node starts from a copy
of it, as a deployment starts a site from the control's export; from then on each node writes
only its own database. A site node takes its own site's prescriptions, makes and signs its
batches, and sends its records to the control; the control node takes none, receives every
site's records and sends back its decisions. Stopping the broker, or one node, shows a site
working on while cut off."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nearfab.config import Settings

if TYPE_CHECKING:
    from nearfab.bootstrap import App

CONTROL = "CTRL"
SITES = ("GSTT-PH", "MAN-PH", "MOB-1")  # the demo's point-of-care sites (nearfab.demo.SITES)
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True)
class Node:
    site_code: str
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def plan(settings: Settings, port: int) -> list[Node]:
    """The four nodes: the control on `port`, the sites on the next ports, each in a folder of
    its own under `<data dir>/nodes/`."""
    base = Path(settings.data_dir) / "nodes"
    codes = (CONTROL, *SITES)
    return [Node(code, base / code, port + i) for i, code in enumerate(codes)]


def prepare(settings: Settings, nodes: list[Node], say: Callable[[str], None]) -> str | None:
    """Seed the network in the control's folder and copy it to each site node's folder, unless
    that was done before (then each node goes on from its own database). Returns the demo
    users' password when it was generated here (None: NEARFAB_DEMO_PASSWORD, or seeded before)."""
    from nearfab.bootstrap import build_app
    from nearfab.demo import is_seeded, seed

    control = nodes[0]
    if all((n.folder / "nearfab.db").exists() for n in nodes):
        return None
    if any(n.folder.exists() for n in nodes):
        names = ", ".join(str(n.folder) for n in nodes if n.folder.exists())
        raise RuntimeError(f"half-made nodes ({names}): remove {control.folder.parent} first")
    control.folder.mkdir(parents=True)
    node_settings = settings.model_copy(
        update={"data_dir": control.folder, "database_url": None, "node_site": None}
    )
    app = build_app(node_settings)
    try:
        if is_seeded(app):  # pragma: no cover - the folder was new
            return None
        result = seed(app, settings.demo_password)
        provision_keys(app)
    finally:
        app.engine.dispose()
    say(f"demo network seeded in {control.folder}; users: {', '.join(result.usernames)}")
    ca = make_network_ca(control.folder.parent / PKI_FOLDER)
    say(f"network CA in {control.folder.parent / PKI_FOLDER}; each node's certificate in certs/")
    issue_node_certificate(ca, control)
    statements = []
    for node in nodes[1:]:
        node.folder.mkdir(parents=True)
        shutil.copyfile(control.folder / "nearfab.db", node.folder / "nearfab.db")
        shutil.copytree(control.folder / "keys", node.folder / "keys")
        with _node_app(settings, node) as (node_app, own):
            _keep_own_keys(node_app, own, node, rekey=True)
            issue_node_certificate(ca, node)
            statements.append(_site_key_statement(node_app, own, node))
        say(f"site node {node.site_code}: a copy of the seeded network in {node.folder}")
    # the control: its own ledger key, its own platform keys, and the sites' public keys
    # registered from their certified statements (checked against the network CA)
    with _node_app(settings, control) as (control_app, own):
        _keep_own_keys(control_app, own, control, rekey=False)
        _register_site_keys(control_app, own, control, statements)
    return result.password if result.generated else None


@contextmanager
def _node_app(settings: Settings, node: Node) -> Iterator[tuple[App, str]]:
    """The node's folder opened as an app (already migrated: a copy of the seeded control's
    database) and its own site's id; one opening serves every provisioning step there."""
    from nearfab.bootstrap import build_app

    app = build_app(
        settings.model_copy(
            update={"data_dir": node.folder, "database_url": None, "node_site": None}
        ),
        migrate=False,
    )
    try:
        with app.uow() as uow:
            own = app.network.get_site(uow, node.site_code).id
        yield app, own
    finally:
        app.engine.dispose()


def _keep_own_keys(app: App, own: str, node: Node, *, rekey: bool) -> None:
    """A node's copy keeps the private half of its own site's ledger keys only: no node can
    sign another site's chain (the control checks what each site signs). A site node's copy
    is then rekeyed (`rekey`): its own audit HMAC key and ticket/checkpoint signing key, so no
    site holds the control's (identity/services/nodekeys.py); its machines get the new public
    key when the node starts."""
    from nearfab.bootstrap import rekey as rekey_node
    from nearfab.identity import system_actor

    with app.uow() as uow:
        app.custody_chain.ledger.keep_private_keys_of(uow, system_actor("node-provisioning"), own)
    if rekey:
        rekey_node(
            app,
            system_actor("node-provisioning"),
            f"site node {node.site_code} provisioned: its own audit and signing keys, "
            "not the control's",
        )


def provision(nodes: list[Node], broker: str) -> None:
    """Each node's inbox session at the broker before any node runs (replication.link), so the
    first records a node sends reach the others whichever starts first."""
    from sqlalchemy import create_engine, select

    from nearfab.network import Site
    from nearfab.replication.link import provision_inbox
    from nearfab.telemetry import BrokerAddress

    engine = create_engine(f"sqlite:///{nodes[0].folder / 'nearfab.db'}")
    try:
        with engine.connect() as c:
            ids = {code: sid for sid, code in c.execute(select(Site.id, Site.code))}
    finally:
        engine.dispose()
    address = BrokerAddress.parse(broker)
    for node in nodes:
        provision_inbox(address, ids[node.site_code], ids[CONTROL])


def provision_keys(app: App) -> None:
    """The control site's ledger key, made at the control before the copies: every site node
    then holds its public key and checks the decisions it signs (a QP's release of a site's
    batch is acted on only with the control's signed entry naming it). Each site node makes
    its own key after its copy (`_site_key_statement`): its private half never leaves the
    node, and the control registers the public half from the statement the site's certificate
    signs (custody/services/keycerts.py)."""
    from nearfab.identity import system_actor
    from nearfab.network import SiteKind

    actor = system_actor("node-provisioning")
    with app.uow() as uow:
        sites = [s.id for s in app.network.list_sites(uow) if s.kind == SiteKind.CONTROL.value]
    for site_id in sites:
        with app.uow() as uow:
            app.custody_chain.ledger.rotate(
                uow, actor, site_id, reason="the site node's ledger key, made when provisioned"
            )


# --- the demo network's certificate authority ---------------------------------------------------

PKI_FOLDER = "pki"  # under <data dir>/nodes/: the CA's key, outside every node's folder
CERT_DAYS = 365


@dataclass(frozen=True)
class NetworkCa:
    certificate: Any  # cryptography.x509.Certificate
    key: Any  # its EC private key


def make_network_ca(folder: Path) -> NetworkCa:
    """The demo network's CA (EC P-256, a year), as a deployment's: it would also issue the
    bridges' TLS certificates (docs/deployment.md, "Certificates between nodes")."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nearfab demo network CA")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    _write_pem(folder / "network-ca.crt", certificate, folder / "network-ca.key", key)
    # its first CRL, empty (`nearfab node ca crl`), good as long as the certificates
    from nearfab.custody import refresh_crl

    (folder / "network-ca.crl").write_bytes(
        refresh_crl(
            (folder / "network-ca.crt").read_bytes(),
            (folder / "network-ca.key").read_bytes(),
            now=now,
            days=CERT_DAYS,
        )
    )
    return NetworkCa(certificate, key)


def issue_node_certificate(ca: NetworkCa, node: Node) -> None:
    """A node's certificate from the network CA, its common name the node's site code, in
    `<node folder>/certs/` (node.crt, node.key) with the CA's certificate (network-ca.crt) and
    its CRL (network-ca.crl, copied from the CA's folder)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.site_code)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    from nearfab.custody import CertificateFiles

    files = CertificateFiles.in_folder(node.folder)  # where `nearfab node keys` looks
    files.certificate.parent.mkdir(parents=True, exist_ok=True)
    _write_pem(files.certificate, certificate, files.key, key)
    _write_pem(files.network_ca, ca.certificate, None, None)
    crl = node.folder.parent / PKI_FOLDER / "network-ca.crl"
    if crl.is_file():
        files.crl.write_bytes(crl.read_bytes())


def _write_pem(cert_path: Path, certificate: Any, path: Path | None, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    if path is not None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)


def _site_key_statement(app: App, own: str, node: Node) -> dict[str, Any]:
    """The site node's own ledger key, made in its folder, and its keys exported as a
    statement signed with its certificate key (`nearfab node keys export --certificate`)."""
    from nearfab.custody import CertificateFiles, export_certified_site_keys
    from nearfab.identity import system_actor

    with app.uow() as uow:
        app.custody_chain.ledger.rotate(
            uow,
            system_actor("node-provisioning"),
            own,
            reason="the site node's ledger key, made at the node when provisioned",
        )
    files = CertificateFiles.in_folder(node.folder)
    with app.uow() as uow:
        return export_certified_site_keys(
            uow.session,
            own,
            files.certificate.read_bytes(),
            files.key.read_bytes(),
            signed_at=app.clock.now(),
        )


def _register_site_keys(
    app: App, own: str, control: Node, statements: list[dict[str, Any]]
) -> None:
    """The sites' public keys registered at the control from their certified statements,
    checked against the network CA and its CRL (`nearfab node keys import --network-ca
    --crl`)."""
    from nearfab.custody import CertificateFiles, import_certified_site_keys
    from nearfab.identity import system_actor

    files = CertificateFiles.in_folder(control.folder)
    ca_pem = files.network_ca.read_bytes()
    crl_pem = files.crl.read_bytes() if files.crl.is_file() else None
    for statement in statements:
        with app.uow() as uow:
            import_certified_site_keys(
                uow,
                system_actor("node-provisioning"),
                statement,
                network_ca_pem=ca_pem,
                own_site_id=own,
                reason="a site node's ledger key, certified by the demo network's CA",
                crl_pem=crl_pem,
            )


def node_command(node: Node, *, host: str, speed: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nearfab",
        "demo",
        "--no-cell-story",
        "--host",
        host,
        "--port",
        str(node.port),
        "--speed",
        str(speed),
        "--data-dir",
        str(node.folder),
    ]


def node_env(node: Node, *, broker: str, password: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["NEARFAB_NODE_SITE"] = node.site_code
    env["NEARFAB_REPLICATION_URL"] = broker
    env.pop("NEARFAB_DATABASE_URL", None)  # each node its own embedded database
    env.pop("NEARFAB_DATA_DIR", None)
    if password:
        env["NEARFAB_DEMO_PASSWORD"] = password
    return env


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "login", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class NodeProcesses:
    """The running nodes: started, waited for, stopped together (SIGTERM, then SIGKILL)."""

    def __init__(self, nodes: list[Node], *, host: str, speed: float, broker: str) -> None:
        self.nodes = nodes
        self._host, self._speed, self._broker = host, speed, broker
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, password: str | None) -> None:
        for node in self.nodes:
            log = (node.folder / "node.log").open("ab")
            self.processes[node.site_code] = subprocess.Popen(
                node_command(node, host=self._host, speed=self._speed),
                env=node_env(node, broker=self._broker, password=password),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()

    def wait_ready(self, timeout_s: float = 120.0) -> list[str]:
        """The nodes that answered within `timeout_s`; a node that exited is not waited for."""
        deadline = time.monotonic() + timeout_s
        ready: set[str] = set()
        while time.monotonic() < deadline and len(ready) < len(self.nodes):
            for node in self.nodes:
                if node.site_code not in ready and answers(node.url):
                    ready.add(node.site_code)
            if any(p.poll() is not None for p in self.processes.values()):
                break
            time.sleep(0.5)
        return [n.site_code for n in self.nodes if n.site_code in ready]

    def exited(self) -> dict[str, int]:
        return {code: rc for code, p in self.processes.items() if (rc := p.poll()) is not None}

    def stop(self) -> None:
        for p in self.processes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.processes.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
