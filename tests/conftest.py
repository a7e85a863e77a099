"""Shared fixtures: external test material, databases (SQLite always, PostgreSQL when reachable)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.config import Settings

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the clone (CI has it; a fresh user clone does not)."""
    env = os.environ.get("NEARFAB_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "external test material ../shared/data is absent (only CI and developers have it)"
        )
    return path


# --- databases -------------------------------------------------------------------------------
PG_ADMIN_URL = os.environ.get(
    "NEARFAB_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
UNDER_CI = os.environ.get("CI", "").lower() == "true"
TEST_PASSWORD = "correct-horse-42"


def _pg_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: no server to test against
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({type(exc).__name__})"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slower)."""
    from nearfab.migrations import upgrade

    path = tmp_path_factory.mktemp("template") / "nearfab.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL template database; each test clones it."""
    why = _pg_available()
    if why is not None:
        if UNDER_CI:
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)
    import psycopg

    from nearfab.migrations import upgrade

    name = f"nearfab_tpl_{secrets.token_hex(4)}"
    admin = PG_ADMIN_URL.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    yield name
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_clone(template: str) -> tuple[str, str]:
    import psycopg

    name = f"nearfab_t_{secrets.token_hex(5)}"
    with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return name, PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _pg_drop(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each service-level test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "nearfab.db"
        shutil.copyfile(template, target)
        yield f"sqlite:///{target}"
    else:
        name, url = _pg_clone(request.getfixturevalue("pg_template"))
        yield url
        _pg_drop(name)


@pytest.fixture(scope="session", autouse=True)
def cheap_argon2() -> Iterator[None]:
    """argon2id at its lowest cost in tests: hundreds of logins and signatures, and the demo
    users of every seeded template. The production parameters are checked on their own
    (tests/identity/test_identity_services.py uses PRODUCTION_HASHER)."""
    import nearfab.identity.services.users as users

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
        yield


# Tests move their manual clock by hours and months between steps: with the product's session
# idle timeout (15 min) and password age (90 days) every jump would log everyone out. The
# policies themselves are tested with the product defaults (tests/identity/test_accounts.py
# builds its own `app`).
CLOCK_JUMPS = {
    "session_idle_minutes": 7 * 24 * 60,
    "session_lifetime_hours": 24 * 365,
    "password_max_age_days": 3650,
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def app(database_url: str, tmp_path: Path, clock: ManualClock) -> Iterator[App]:
    """A fresh application on a migrated database, with a manual clock for platform and machines."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, **CLOCK_JUMPS)
    application = build_app(settings, clock=clock, migrate=False)
    yield application
    application.engine.dispose()


@pytest.fixture
def app_with_product_policies(
    database_url: str, tmp_path: Path, clock: ManualClock
) -> Iterator[App]:
    """Like `app`, with the product's own session timeouts and password age (for the tests
    of those policies)."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    application = build_app(settings, clock=clock, migrate=False)
    yield application
    application.engine.dispose()


@pytest.fixture
def seeded(app: App) -> App:
    """The demo network (sites, printers, lots, approved master files, users)."""
    from nearfab.demo import seed

    seed(app, TEST_PASSWORD)
    return app
