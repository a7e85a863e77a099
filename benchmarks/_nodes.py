"""A site node and the control node for the replication benchmarks: one seeded demo network
copied into two SQLite folders (in /dev/shm where there is one), removed at exit, both on one
ManualClock with the test suite's settings for nodes whose clocks jump (nothing expires)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nearfab.bootstrap import App
    from nearfab.common.clock import ManualClock


@dataclass(frozen=True)
class Nodes:
    site: App  # GSTT-PH's node
    control: App  # CTRL's node
    clock: ManualClock  # both nodes'
    folder: Path  # the run's temporary folder (removed at exit)


def site_and_control(prefix: str) -> Nodes:
    """The GSTT-PH site node and the CTRL control node, copies of one seeded network."""
    from tests import flow_helpers as fh

    from nearfab.bootstrap import build_app
    from nearfab.common.clock import ManualClock
    from nearfab.config import Settings
    from nearfab.demo import seed

    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=shm if shm.is_dir() else None))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # no database left behind
    clock = ManualClock()
    seeded = build_app(Settings(data_dir=tmp / "seed"), clock=clock)
    seed(seeded, fh.TEST_PASSWORD)
    seeded.engine.dispose()
    apps = []
    for name, code in (("site", "GSTT-PH"), ("control", "CTRL")):
        (tmp / name).mkdir()
        shutil.copyfile(tmp / "seed" / "nearfab.db", tmp / name / "nearfab.db")
        shutil.copytree(tmp / "seed" / "keys", tmp / name / "keys")
        settings = Settings(
            data_dir=tmp / name,
            node_site=code,
            session_idle_minutes=7 * 24 * 60,
            session_lifetime_hours=24 * 365,
            password_max_age_days=3650,
        )
        apps.append(build_app(settings, clock=clock, migrate=False))
    return Nodes(apps[0], apps[1], clock, tmp)
