"""Issue 15, part 3: a domain reads and writes another domain's tables only through the owner.

Each table has one owning domain: the domain whose `models.py` maps it. Another domain never
names that model class at run time, so it cannot build a query on the table (`select(Order)`,
`session.get(BatchRecord, ...)`, a join) nor create a row of it. It asks the owner instead:
the owner publishes what others may read in its `reads.py` (functions that load by key or
filter, and, for a hot path that must stay one statement, a named read view to join on) and
what others may change through its services. An annotation may still name the owner's entity,
under `if TYPE_CHECKING:`, since an owner's read hands its entity back, read-only.

The check reads imports with `ast` and resolves every imported name against the mapped
classes of SQLAlchemy's registry, so an alias or a re-export from a package `__init__` is seen
the same as a direct import."""

from __future__ import annotations

import ast
from pathlib import Path

import nearfab
from nearfab.db import Base
from nearfab.models import load_all

SRC = Path(nearfab.__file__).parent
DOMAINS = (
    *("identity", "network", "masterfiles", "materials", "orders", "designs", "scheduling"),
    *("production", "telemetry", "monitoring", "quality", "custody", "comparability"),
    *("vigilance", "simulation", "replication"),
)


def owners() -> dict[str, str]:
    """Mapped class name -> the domain whose models map it."""
    load_all()
    found = {}
    for mapper in Base.registry.mappers:
        parts = mapper.class_.__module__.split(".")
        if len(parts) > 1 and parts[1] in DOMAINS:
            found[mapper.class_.__name__] = parts[1]
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> list[ast.ImportFrom]:
    """`from nearfab.x import ...` statements outside `if TYPE_CHECKING:` blocks."""
    found: list[ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("nearfab."):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def foreign_models_in(path: Path, domain: str, table_owner: dict[str, str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in _runtime_imports(tree):
        other = (node.module or "").split(".")[1]
        if other not in DOMAINS or other == domain:
            continue
        for alias in node.names:
            owner = table_owner.get(alias.name)
            if owner is not None and owner != domain:
                where = path.relative_to(SRC) if path.is_relative_to(SRC) else path.name
                bad.append(f"{where}:{node.lineno} uses {alias.name} ({owner})")
    return bad


def cross_domain_model_uses() -> list[str]:
    table_owner = owners()
    bad = []
    for domain in DOMAINS:
        folder = SRC / domain
        if folder.is_dir():
            for path in sorted(folder.rglob("*.py")):
                bad.extend(foreign_models_in(path, domain, table_owner))
    return bad


def test_no_domain_names_another_domains_table_at_run_time() -> None:
    assert cross_domain_model_uses() == []


def test_the_check_sees_a_foreign_model_and_spares_annotations(tmp_path: Path) -> None:
    table_owner = {"Order": "orders", "Job": "scheduling"}
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from nearfab.orders import Order\n"
        "if TYPE_CHECKING:\n"
        "    from nearfab.scheduling import Job\n"
        "def f():\n"
        "    from nearfab.orders import Order as O\n"
    )
    found = foreign_models_in(module, "custody", table_owner)
    assert [line.split(" ", 1)[1] for line in found] == [
        "uses Order (orders)",
        "uses Order (orders)",
    ]
    # the owner itself may name its own model
    assert foreign_models_in(module, "orders", table_owner) == []


def test_every_owner_is_known() -> None:
    # the check is only as good as the registry it resolves against
    table_owner = owners()
    assert table_owner["Order"] == "orders"
    assert table_owner["BatchRecord"] == "production"
    assert table_owner["SerialUnit"] == "custody"
