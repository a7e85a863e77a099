"""Shared fixtures: external test material, databases (SQLite always; PostgreSQL in a private
cluster this session starts itself), the seeded demo network.

PostgreSQL: each test session (each xdist worker) runs its own throw-away cluster, made with
Debian's `initdb` into a temporary folder, on a free port of 127.0.0.1, with fsync,
synchronous_commit and full_page_writes off (a test database need not survive a power cut).
Nothing depends on how the machine's own PostgreSQL service is set up. NEARFAB_TEST_PG=<admin
URL> uses an existing server instead. Without PostgreSQL binaries the PostgreSQL half of the
suite skips with the reason, except under CI=true, where it fails; likewise for the shared test
material (`../shared/data`). docs/testing.md has the whole story.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

# One BLAS thread per test process: xdist already runs a worker per core, and OpenBLAS threads
# on top of that spin against each other (a 1 s parallel analysis took 10 s). Set before numpy
# loads OpenBLAS; the Makefile sets the same for processes started outside pytest.
for _blas in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_blas, "1")

import pytest  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402

from nearfab.bootstrap import App, build_app  # noqa: E402
from nearfab.common.clock import ManualClock  # noqa: E402
from nearfab.config import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The CLI's rich consoles wrap at the terminal width, 80 columns when output is captured: a
# message naming a long temporary path (pytest-xdist workers' are longer) would be cut inside
# the file name. Set before any test module imports nearfab.cli (the consoles read it once).
_COLUMNS_SET_HERE = "COLUMNS" not in os.environ
os.environ.setdefault("COLUMNS", "250")
UNDER_CI = os.environ.get("CI", "").lower() == "true"
TEST_PASSWORD = "correct-horse-42"


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the clone (CI has it; a fresh user clone does not)."""
    env = os.environ.get("NEARFAB_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


SHARED_ABSENT = (
    "external test material ../shared/data is absent (set NEARFAB_SHARED_DATA to its folder; "
    "only CI and developers have it)"
)


def _temporary_files_in_memory() -> None:
    """Test folders, SQLite files and PostgreSQL clusters in /dev/shm (tmpfs) unless TMPDIR
    says where: on a journalled disk every commit's fsync and every file a `CREATE DATABASE`
    copies cost milliseconds (a PostgreSQL clone took 1.1 s on ext4, 0.07 s on tmpfs)."""
    if os.environ.get("TMPDIR"):
        return
    shm = Path("/dev/shm")
    usable = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)
    if usable and shutil.disk_usage(shm).free > 2 * 2**30:
        os.environ["TMPDIR"] = str(shm)
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.hookimpl(trylast=True)  # after the terminal reporter exists
def pytest_configure(config: pytest.Config) -> None:
    """Under CI a missing ../shared/data is an error before collection: the tests that are
    parametrised over its files would otherwise vanish without a word."""
    if UNDER_CI and shared_data_dir() is None:
        raise pytest.UsageError(f"CI=true but {SHARED_ABSENT}")
    _temporary_files_in_memory()
    if _COLUMNS_SET_HERE:  # pytest's own report keeps the real terminal's width
        try:
            width = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 80
        config.get_terminal_writer().fullwidth = width


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = []
    if shared_data_dir() is None:
        lines.append(f"WARNING: {SHARED_ABSENT}; the tests over its files are skipped")
    lines.append(f"PostgreSQL: {_pg_describe()}; temporary files in {tempfile.gettempdir()}")
    return lines


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        if UNDER_CI:
            pytest.fail(f"CI=true but {SHARED_ABSENT}")
        pytest.skip(SHARED_ABSENT)
    return path


# --- PostgreSQL: a private cluster per test session -------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _private_port() -> int:
    """The private cluster's port, fixed per process at import (so PG_ADMIN_URL is a constant
    that test modules may import) and kept in the environment under this process's id, so a
    second import of this module (as tests.conftest) agrees and xdist workers each get their own."""
    key = f"NEARFAB_TEST_PG_PORT_{os.getpid()}"
    if key not in os.environ:
        os.environ[key] = str(_free_port())
    return int(os.environ[key])


PG_EXTERNAL = os.environ.get("NEARFAB_TEST_PG")
PG_ADMIN_URL = PG_EXTERNAL or f"postgresql+psycopg://postgres@127.0.0.1:{_private_port()}/postgres"
PG_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


def pg_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<newest>/bin, else wherever `initdb` is on PATH
    (NEARFAB_PG_BIN overrides)."""
    if os.environ.get("NEARFAB_PG_BIN"):
        return Path(os.environ["NEARFAB_PG_BIN"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _pg_describe() -> str:
    if PG_EXTERNAL:
        return f"external server {PG_EXTERNAL} (NEARFAB_TEST_PG)"
    bindir = pg_bindir()
    if bindir is None:
        return "no initdb found: PostgreSQL tests " + ("FAIL (CI=true)" if UNDER_CI else "skip")
    return f"private cluster from {bindir} on 127.0.0.1 (fsync off), started on first use"


class PrivateCluster:
    """initdb + pg_ctl in a temporary folder; as root, run as the `postgres` user."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir, self.port = bindir, port
        self.root = Path(tempfile.mkdtemp(prefix="nearfab-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, but there is no `postgres` user to run initdb as "
                    "(apt-get install postgresql creates it)"
                ) from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            self.prefix = [runuser, "-u", "postgres", "--"]
        (self.root / "owner.pid").write_text(str(os.getpid()))

    def reap_abandoned(self) -> None:
        """Stop and remove the clusters of test sessions that died without cleaning up (killed
        by a timeout, say): those whose owner.pid names no living process."""
        for root in self.root.parent.glob("nearfab-pg-*"):
            try:
                owner = int((root / "owner.pid").read_text())
                os.kill(owner, 0)
                continue  # its session is still running
            except ProcessLookupError:
                pass
            except (OSError, ValueError):
                continue  # not ours to judge (no owner.pid, or someone else's process)
            subprocess.run(
                [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(root / "data"), "-m",
                 "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False, cwd=self.root,
            )  # fmt: skip
            shutil.rmtree(root, ignore_errors=True)

    def _run(self, *args: str) -> None:
        # cwd: the `postgres` user may not be allowed into the clone's folder, and initdb and
        # pg_ctl look up the current directory first
        proc = subprocess.run(
            [*self.prefix, *args],
            capture_output=True, text=True, timeout=120, check=False, cwd=self.root,
        )  # fmt: skip
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stdout}{proc.stderr}{log}")

    def start(self) -> None:
        self.reap_abandoned()
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        options = {**PG_SETTINGS, "port": str(self.port), "unix_socket_directories": str(self.root)}
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", "60", "-o", opts, "start",
        )  # fmt: skip
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                 "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False, cwd=self.root,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> str:
    """The admin URL of the PostgreSQL the tests use: the private cluster, started here and
    stopped (its folder removed) when the session ends, after every other clean-up."""
    if PG_EXTERNAL:
        return PG_EXTERNAL
    bindir = pg_bindir()
    if bindir is None:
        why = (
            "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH; "
            "apt-get install postgresql)"
        )
        if UNDER_CI:
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)
    cluster = PrivateCluster(bindir, _private_port())
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        pytest.fail(f"could not start the private PostgreSQL cluster: {exc}")
    # config clean-ups run last-in first-out: the templates' drops (registered later) run first
    request.config.add_cleanup(cluster.stop)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slower)."""
    from nearfab.migrations import upgrade

    path = tmp_path_factory.mktemp("template") / "nearfab.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    """A migrated PostgreSQL template database; each test clones it."""
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
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
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


_PRODUCT_HASHER = pytest.StashKey[PasswordHasher]()


@pytest.fixture(scope="session", autouse=True)
def cheap_argon2(request: pytest.FixtureRequest) -> Iterator[None]:
    """argon2id at its lowest cost in tests: hundreds of logins and signatures, and the demo
    users of every seeded template. The product's own hasher is kept for
    `product_password_hasher` (tests/identity/test_password_hash_cost.py checks its cost)."""
    import nearfab.identity.services.users as users

    request.config.stash[_PRODUCT_HASHER] = users._hasher
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
        yield


@pytest.fixture
def product_password_hasher(cheap_argon2: None, request: pytest.FixtureRequest) -> PasswordHasher:
    """The password hasher the product uses outside the tests (before `cheap_argon2`)."""
    return request.config.stash[_PRODUCT_HASHER]


class _NoOverrides:
    """The dependency-overrides provider of the shared route tables: none (no test overrides
    a dependency; one that does gets its own tables, see `shared_route_tables`)."""

    dependency_overrides: ClassVar[dict[Any, Any]] = {}


@pytest.fixture(scope="session", autouse=True)
def shared_route_tables() -> Iterator[None]:
    """Every web app a test makes (`create_web_app`, hundreds per worker) includes the same
    module-level routers the same way. FastAPI builds an included router's routes (signatures,
    dependencies, pydantic adapters) lazily, per app, on the app's first requests: 0.2-1 s of
    CPU per app, a fifth of the web-heavy tests' time. Here the built routes are shared by every
    app whose inclusion is the same (router, routes, prefix, dependencies, limits: the
    inclusion's repr, without the app), built once per worker. What a route does at a request
    reads the request's own app (`request.app.state.nearfab`), never the app it was built for;
    an app with dependency overrides builds its own, as before. Only tests' speed differs
    (FastAPI's private `_IncludedRouter`: if a FastAPI upgrade renames it, nothing is shared)."""
    import dataclasses

    from fastapi import routing

    included = getattr(routing, "_IncludedRouter", None)
    parts = ("effective_candidates", "effective_low_priority_routes")
    if included is None or not all(hasattr(included, name) for name in parts):
        yield
        return
    shared: dict[tuple[str, int, str, int], Any] = {}

    def sharing(name: str) -> Any:
        build = getattr(included, name)
        version_field = f"_{name}_version"

        def shared_build(self: Any) -> Any:
            version = self.original_router._get_routes_version()
            if version == getattr(self, version_field):
                return getattr(self, f"_{name}")
            context = self.include_context
            if getattr(context.dependency_overrides_provider, "dependency_overrides", None):
                return build(self)
            neutral = dataclasses.replace(context, dependency_overrides_provider=_NoOverrides)
            key = (name, id(self.original_router), repr(neutral), version)
            if key not in shared:
                shared[key] = build(
                    included(original_router=self.original_router, include_context=neutral)
                )
            setattr(self, f"_{name}", shared[key])
            setattr(self, version_field, version)
            return shared[key]

        return shared_build

    with pytest.MonkeyPatch.context() as patch:
        for name in parts:
            patch.setattr(included, name, sharing(name))
        yield


def _openapi_route_key(route: Any) -> tuple[Any, ...]:
    """What of an app's route goes into its OpenAPI schema, without the app: an included
    router by the router, its routes' version and the inclusion (as `shared_route_tables`
    keys it), any other route by its class, path, methods, endpoint code and schema flag."""
    import dataclasses

    context = getattr(route, "include_context", None)
    if context is not None and hasattr(route, "original_router"):
        neutral = dataclasses.replace(context, dependency_overrides_provider=_NoOverrides)
        original = route.original_router
        return ("included", id(original), original._get_routes_version(), repr(neutral))
    endpoint = getattr(route, "endpoint", None)
    return (
        type(route).__qualname__,
        getattr(route, "path", None),
        tuple(sorted(getattr(route, "methods", None) or ())),
        id(getattr(endpoint, "__code__", endpoint)),
        getattr(route, "include_in_schema", None),
    )


@pytest.fixture(scope="session", autouse=True)
def shared_openapi_schemas() -> Iterator[None]:
    """The OpenAPI schema of a web app (the /api/docs page, /api/v1/openapi.json, the contract
    and Schemathesis tests) costs about 1 s of CPU to build, and every app the tests make builds
    its own: the menu crawls open /api/docs once per role, each on a new app. Here FastAPI's
    `get_openapi` is built once per worker for each set of arguments (title, version, servers,
    ... and the routes, keyed by `_openapi_route_key`), and each app gets its own deep copy, so
    an app that adds to its schema (api/errors.py declares the error answers) changes no other
    app's. Only tests' speed differs."""
    import copy

    from fastapi import applications

    build = applications.get_openapi
    built: dict[tuple[Any, ...], dict[str, Any]] = {}

    def shared_get_openapi(**kwargs: Any) -> dict[str, Any]:
        key = tuple(
            (name, tuple(_openapi_route_key(r) for r in value or ()))
            if name in ("routes", "webhooks")
            else (name, repr(value))
            for name, value in sorted(kwargs.items())
        )
        if key not in built:
            built[key] = build(**kwargs)
        return copy.deepcopy(built[key])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(applications, "get_openapi", shared_get_openapi)
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
def seeded(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path, clock: ManualClock
) -> Iterator[App]:
    """The demo network (sites, printers, lots, approved master files, users) on the test's
    backend: a copy of a template seeded once per session and backend (tests/flow_helpers.py),
    with the test's manual clock; what `nearfab.demo.seed` on a fresh `app` would give, for a
    few tens of milliseconds instead of seconds (the templates run the real seed each session)."""
    from tests import flow_helpers as fh

    clone = None
    if database_url.startswith("sqlite"):
        url = fh._seeded_sqlite(request, tmp_path)  # overwrites this test's migrated copy
        template = fh._TEMPLATES[("sqlite", str(request.getfixturevalue("sqlite_template")))]
    else:
        clone, url = fh._seeded_pg(request)
        template = fh._TEMPLATES[("postgresql", request.getfixturevalue("pg_template"))]
    shutil.copytree(fh._KEYS[template], tmp_path / "data" / "keys")
    application = fh._build(url, tmp_path / "data", clock)
    try:
        yield application
    finally:
        application.engine.dispose()
        if clone is not None:
            _pg_drop(clone)
