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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
    for node in nodes[1:]:
        node.folder.mkdir(parents=True)
        shutil.copyfile(control.folder / "nearfab.db", node.folder / "nearfab.db")
        shutil.copytree(control.folder / "keys", node.folder / "keys")
        _keep_own_keys(settings, node, rekey=True)
        say(f"site node {node.site_code}: a copy of the seeded network in {node.folder}")
    # the control: its own ledger key, the sites' public halves, and its own platform keys
    _keep_own_keys(settings, control, rekey=False)
    return result.password if result.generated else None


def _keep_own_keys(settings: Settings, node: Node, *, rekey: bool) -> None:
    """A node's copy keeps the private half of its own site's ledger keys only: no node can
    sign another site's chain (the control checks what each site signs). A site node's copy
    is then rekeyed (`rekey`): its own audit HMAC key and ticket/checkpoint signing key, so no
    site holds the control's (identity/services/nodekeys.py); its machines get the new public
    key when the node starts."""
    from nearfab.bootstrap import build_app
    from nearfab.bootstrap import rekey as rekey_node
    from nearfab.identity import system_actor

    app = build_app(
        settings.model_copy(
            update={"data_dir": node.folder, "database_url": None, "node_site": None}
        ),
        migrate=False,
    )
    try:
        with app.uow() as uow:
            own = app.network.get_site(uow, node.site_code).id
        with app.uow() as uow:
            app.custody_chain.ledger.keep_private_keys_of(
                uow, system_actor("node-provisioning"), own
            )
        if rekey:
            rekey_node(
                app,
                system_actor("node-provisioning"),
                f"site node {node.site_code} provisioned: its own audit and signing keys, "
                "not the control's",
            )
    finally:
        app.engine.dispose()


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
    """Each site's ledger key, and the control site's, made at the control before the copies,
    as provisioning a node does: the control then holds every site's public key and checks
    what the sites sign, and every site the control's (replication/signatures.py); each node
    opens the private half of its own with the keys folder it was given."""
    from nearfab.identity import system_actor
    from nearfab.network import SiteKind

    actor = system_actor("node-provisioning")
    with app.uow() as uow:
        sites = [s.id for s in app.network.list_sites(uow) if s.kind != SiteKind.CONTROL.value]
        # and the control's own: the sites check the decisions it signs (a QP's release of a
        # site's batch is acted on only with the control's signed entry naming it)
        sites += [s.id for s in app.network.list_sites(uow) if s.kind == SiteKind.CONTROL.value]
    for site_id in sites:
        with app.uow() as uow:
            app.custody_chain.ledger.rotate(
                uow, actor, site_id, reason="the site node's ledger key, made when provisioned"
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
