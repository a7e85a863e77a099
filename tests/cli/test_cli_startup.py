"""Issue 13 item 12: `nearfab --help` answers at once. The CLI loads the platform (bootstrap,
the domains, SQLAlchemy, numpy) only when a command runs, so starting it costs the price of
Typer and the settings alone. Checked by what is imported, not by a clock (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys

# what `--help` must not pull in: the composition root, every domain, the ORM and the maths
HEAVY = (
    "nearfab.bootstrap",
    "nearfab.identity",
    "nearfab.orders",
    "nearfab.production",
    "nearfab.custody",
    "nearfab.simulation",
    "nearfab.monitoring",
    "sqlalchemy",
    "numpy",
    "fastapi",
)

PROBE = """
import json, sys
from typer.testing import CliRunner
from nearfab.cli.main import app
runner = CliRunner()
outputs = {}
for args in (["--help"], ["order", "--help"], ["audit", "--help"], ["mspc", "--help"],
             ["simulate", "--help"], ["qa", "--help"], ["custody", "--help"]):
    args = [a.strip() for a in args]
    result = runner.invoke(app, args)
    outputs[" ".join(args)] = [result.exit_code, result.output]
print(json.dumps({"loaded": sorted(sys.modules), "outputs": outputs}))
"""


def test_help_loads_no_domain_and_no_database_library() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for args, (code, text) in report["outputs"].items():
        assert code == 0, (args, text)
        assert "Usage" in text, (args, text)
    loaded = report["loaded"]
    heavy = sorted({h for h in HEAVY for m in loaded if m == h or m.startswith(h + ".")})
    assert heavy == []


def test_the_probe_sees_a_heavy_import() -> None:
    # the same probe notices when a command's module pulls in the platform
    done = subprocess.run(
        [sys.executable, "-c", "import sys, nearfab.bootstrap; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert "'sqlalchemy'" in done.stdout and "'nearfab.bootstrap'" in done.stdout
