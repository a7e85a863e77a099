"""Migrate to every head: while a sibling migration branches from the same parent as 0004
(see .wiring/planning.md), "head" alone is ambiguous. With one head this is the same."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import PG_ADMIN_URL, UNDER_CI, _pg_available


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nearfab.migrations import upgrade

    path = tmp_path_factory.mktemp("template-planning") / "nearfab.db"
    upgrade(f"sqlite:///{path}", "heads")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    why = _pg_available()
    if why is not None:
        if UNDER_CI:
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)
    import psycopg

    from nearfab.migrations import upgrade

    name = f"nearfab_tplp_{secrets.token_hex(4)}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", "heads")
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
