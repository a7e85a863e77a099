"""docs/compliance.md names, for each clause, the test that proves it: every named test must
exist, so the map cannot point at a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {
    "chain": "tests/identity/test_audit_chain.py",
    "export": "tests/identity/test_record_export.py",
    "accounts": "tests/identity/test_accounts.py",
    "esig": "tests/identity/test_esignatures.py",
    "matrix": "tests/identity/test_route_matrix.py",
    "steps": "tests/production/test_step_sequence.py",
    "cert": "tests/quality/test_certification_controls.py",
    "production": "tests/production/test_production_services.py",
    "security": "tests/web/test_security.py",
    "secrets": "tests/web/test_no_secrets_in_logs.py",
    "fuzz": "tests/e2e/test_schemathesis.py",
    "b-accounts": "tests/e2e/test_browser_accounts.py",
    "b-audit": "tests/e2e/test_browser_audit.py",
}


def test_every_test_named_in_the_compliance_map_exists() -> None:
    doc = (ROOT / "docs" / "compliance.md").read_text()
    named = re.findall(r"`([a-z-]+)::(test_\w+)`", doc)
    assert len(named) > 40
    missing = []
    for short, test in named:
        source = (ROOT / FILES[short]).read_text()
        if not re.search(rf"^def {test}\(", source, re.MULTILINE):
            missing.append(f"{short}::{test}")
    assert not missing, f"tests named in docs/compliance.md that do not exist: {missing}"
    for path in re.findall(r"(tests/[\w/]+\.py)", doc):
        assert (ROOT / path).exists(), path
