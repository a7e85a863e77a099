"""docs/security.md names, for each attack, the test that performs it: every named test must
exist, so the page cannot point at a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _attack_rows() -> list[str]:
    doc = (ROOT / "docs" / "security.md").read_text()
    section = doc.split("## Attacks and their tests", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]


def test_every_attack_names_a_test_that_exists() -> None:
    rows = [r for r in _attack_rows() if not r.startswith("| # ")]
    assert len(rows) > 50, "the attacks table lost its rows"
    missing: list[str] = []
    for row in rows:
        test_cell = row.rstrip(" |").rsplit("|", 1)[1]
        # `path.py::name` first; later names in the same cell may be written `::name`
        named = re.findall(r"(tests/[\w/]+\.py)?::(test_\w+)", test_cell)
        assert named, f"an attack without a test: {row[:120]}"
        path: str | None = None
        for file, test in named:
            path = file or path
            assert path, f"a test named without its file: {row[:120]}"
            source = (ROOT / path).read_text()
            if not re.search(rf"^(async )?def {test}\(", source, re.MULTILINE):
                missing.append(f"{path}::{test}")
    assert not missing, f"tests named in docs/security.md that do not exist: {missing}"
