"""DESIGN.md §3: across domains, a domain imports only another domain's public names (its
package `__init__`), never its services, models or other implementation modules. A domain's
contract modules are public too, since they hold only types and pure functions: `kit` (the
Protocols a family implements), `registry` (the family registry), `enums` (states and
transitions), `schemas` (pydantic in/out) and `logic` (pure functions, no I/O); and `reads`,
what a domain lets others read of its tables (tests/test_table_ownership.py). Entry points
(api, web, cli), the composition root and the families sit above the domains and are not
checked here.

The check reads each module's imports with `ast`, so it fails on a new deep import the moment
it is written; import-linter's layers contract keeps the direction."""

from __future__ import annotations

import ast
from pathlib import Path

import nearfab

SRC = Path(nearfab.__file__).parent
DOMAINS = (
    *("identity", "network", "masterfiles", "materials", "orders", "designs", "scheduling"),
    *("production", "telemetry", "monitoring", "quality", "custody", "comparability"),
    *("vigilance", "simulation", "replication"),
)
SHARED = {"common", "config", "uow", "bus", "db", "models"}
CONTRACT_MODULES = {"kit", "registry", "enums", "schemas", "logic", "reads"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def deep_imports() -> list[str]:
    """Every `module:line imports nearfab.<other domain>.<private module>` in domain code."""
    bad = []
    for domain in DOMAINS:
        folder = SRC / domain
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] != "nearfab" or len(parts) < 3:
                    continue
                other, sub = parts[1], parts[2]
                if other == domain or other in SHARED or other not in DOMAINS:
                    continue
                if sub in CONTRACT_MODULES:
                    continue
                bad.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    return bad


def test_domains_import_only_other_domains_public_names() -> None:
    assert deep_imports() == []


def test_the_check_sees_a_deep_import(tmp_path: Path) -> None:
    # the same reader on a module that reaches into another domain's services
    module = tmp_path / "m.py"
    module.write_text("from nearfab.identity.services.audit import audit_keys\n")
    assert _imports(module) == [(1, "nearfab.identity.services.audit")]
    module.write_text("from nearfab.identity import audit_keys\nimport nearfab.orders.kit\n")
    assert [m for _, m in _imports(module)] == ["nearfab.identity", "nearfab.orders.kit"]
