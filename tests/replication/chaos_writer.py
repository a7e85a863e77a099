"""A site node as a process of its own, for test_chaos.py: it works and replicates in a loop
until it is killed (the test sends SIGKILL at a random moment) or has done its steps.

    python tests/replication/chaos_writer.py DATA_DIR STEPS BROKER_PORT START_ISO PROGRESS_FILE

(test_chaos.py runs `main` in a forked child, which starts without the 4 s of imports.)
NEARFAB_NODE_SITE names the node's site, as for `nearfab node ...`. Each step is real work
through the site's services (a batch made: prescription, planning, ticket, start, run, manual
steps signed, audit trail reviewed; the site's ledger signing key rotated; a batch refused
because a killed writer left its machine busy is on record as a refusal), ten minutes of the
node's clock, then one replication pass to the site's broker. After its steps it replicates
until nothing waits. The clock is a manual one starting at START_ISO, so a restarted writer
goes on later in time than the one killed. A line per step goes to PROGRESS_FILE."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: `tests`

from tests import flow_helpers as fh
from tests.conftest import CLOCK_JUMPS

from nearfab.bootstrap import build_app
from nearfab.common.clock import ManualClock
from nearfab.common.errors import DomainError
from nearfab.config import Settings
from nearfab.replication import replicate_once
from nearfab.telemetry import BrokerAddress


def main(data_dir: str, steps: int, port: int, start: str, progress: str) -> int:
    clock = ManualClock(datetime.fromisoformat(start))
    settings = Settings(
        data_dir=Path(data_dir), node_site=os.environ["NEARFAB_NODE_SITE"], **CLOCK_JUMPS
    )
    app = build_app(settings, clock=clock, migrate=False)
    service = app.replication
    assert service is not None, "NEARFAB_NODE_SITE is not set"
    broker = BrokerAddress("127.0.0.1", port)
    with open(progress, "a", encoding="utf-8") as out:
        out.write("started\n")
        out.flush()
        for step in range(steps):
            try:
                fh.make_batch(app)
            except DomainError as exc:
                # a batch a killed writer left started keeps its machine busy: the refusal is
                # on record (an audit row) and the node works on
                out.write(f"refused: {exc}\n")
            with app.uow() as uow:
                app.custody_chain.ledger.rotate(
                    uow, fh.actor(app, "admin"), service.site_id, reason=f"rotation {step}"
                )
            clock.sleep(600)
            sent = replicate_once(service, app.uow, broker, timeout_s=5)
            out.write(f"step {step} sent {sent.acknowledged} pending {sent.pending}\n")
            out.flush()
        for _ in range(20):
            sent = replicate_once(service, app.uow, broker, timeout_s=5)
            if sent.error is None and sent.pending == 0:
                out.write("done\n")
                return 0
        out.write(f"not all sent: {sent}\n")
        return 3


if __name__ == "__main__":
    data, steps, port, start, progress = sys.argv[1:6]
    sys.exit(main(data, int(steps), int(port), start, progress))
