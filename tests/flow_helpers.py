"""Shared steps for service-level flow tests: prescription in, job, batch, release, dispense.

Every helper opens its own unit of work, as an entry point would, and returns ids or detached
rows. The demo network (`nearfab.demo.seed`) is assumed.

`seeded` is the conftest fixture of the same name made cheaper: the demo network is seeded once
per session and database kind (with a ManualClock at the same default start as the `clock`
fixture's), and each test gets its own copy (a file copy on SQLite, a `CREATE DATABASE ...
TEMPLATE` clone on PostgreSQL). Seeding costs about 1.5 s; a copy, a few tens of milliseconds.
A test module opts in with `seeded = flow_helpers.seeded`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import random
import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from nearfab.bootstrap import App, build_app
from nearfab.common.clock import ManualClock
from nearfab.common.errors import DomainError
from nearfab.config import Settings
from nearfab.identity import Actor, AuditEntry, actor_of
from nearfab.network import Machine
from nearfab.production import BatchRecord, RunResult
from nearfab.production.runner import RunSummary
from nearfab.scheduling import Job

TEST_PASSWORD = "correct-horse-42"  # every demo user's password (see tests/conftest.py)

# the demo operator trained at each producing site
OPERATOR_AT = {"GSTT-PH": "operator", "MAN-PH": "operator-man", "MOB-1": "operator-mob"}

_rng = random.Random(20260105)


# --- a seeded database per test, seeded once --------------------------------------------------


def _build(url: str, data_dir: Path, clock: ManualClock) -> App:
    from tests.conftest import CLOCK_JUMPS  # sessions survive the test clock's jumps

    settings = Settings(data_dir=data_dir, database_url=url, **CLOCK_JUMPS)
    return build_app(settings, clock=clock, migrate=False)


def _seed_into(url: str, data_dir: Path) -> None:
    from nearfab.demo import seed

    app = _build(url, data_dir, ManualClock())
    try:
        seed(app, TEST_PASSWORD)
    finally:
        app.engine.dispose()


def _seeded_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    factory = request.getfixturevalue("tmp_path_factory")
    migrated: Path = request.getfixturevalue("sqlite_template")
    template = _TEMPLATES.get(("sqlite", str(migrated)))
    if template is None:
        folder = factory.mktemp("seeded")
        template = str(folder / "nearfab.db")
        shutil.copyfile(migrated, template)
        _seed_into(f"sqlite:///{template}", folder / "data")
        _KEYS[template] = folder / "data" / "keys"
        with sqlite3.connect(template) as conn:  # fold the WAL into the file before copying
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _TEMPLATES[("sqlite", str(migrated))] = template
    target = tmp_path / "nearfab.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def _seeded_pg(request: pytest.FixtureRequest) -> tuple[str, str]:
    from tests.conftest import PG_ADMIN_URL, _pg_clone, _pg_drop

    migrated: str = request.getfixturevalue("pg_template")
    template = _TEMPLATES.get(("postgresql", migrated))
    if template is None:
        import psycopg

        template = f"nearfab_seeded_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{template}" TEMPLATE "{migrated}"')
        request.config.add_cleanup(functools.partial(_pg_drop, template))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{template}"
        factory = request.getfixturevalue("tmp_path_factory")
        data = factory.mktemp("seeded-pg") / "data"
        _seed_into(url, data)
        _KEYS[template] = data / "keys"
        _TEMPLATES[("postgresql", migrated)] = template
    return _pg_clone(template)


_TEMPLATES: dict[tuple[str, str], str] = {}
# the keys a seeded template was made with: a copy of its database needs them (the platform
# refuses to start on a database with other keys)
_KEYS: dict[str, Path] = {}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[App]:
    """A fresh App, with the test's manual clock, on a copy of the seeded demo network."""
    with seeded_copy(request, request.param, tmp_path, clock) as application:
        yield application


@contextlib.contextmanager
def seeded_copy(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, clock: ManualClock
) -> Iterator[App]:
    """What `seeded` gives, on `backend`, for a fixture that chooses the world itself."""
    from tests.conftest import _pg_drop

    clone = None
    if backend == "sqlite":
        url = _seeded_sqlite(request, tmp_path)
        template = _TEMPLATES[("sqlite", str(request.getfixturevalue("sqlite_template")))]
    else:
        clone, url = _seeded_pg(request)
        template = _TEMPLATES[("postgresql", request.getfixturevalue("pg_template"))]
    shutil.copytree(_KEYS[template], tmp_path / "data" / "keys")
    application = _build(url, tmp_path / "data", clock)
    try:
        yield application
    finally:
        application.engine.dispose()
        if clone is not None:
            _pg_drop(clone)


# --- a built world per test, built once -------------------------------------------------------
#
# `world_fixture(builder)` generalises `seeded`: `builder(app)` runs once per session, backend
# and xdist worker on a copy of the seeded demo network (with a ManualClock at the default
# start), and returns plain data (ids, tokens: no ORM rows). The database it leaves becomes a
# template; each test then gets its own copy (file copy / `CREATE DATABASE ... TEMPLATE`), a copy
# of the whole data folder the builder used (keys included: the platform refuses a database with
# other keys), the test's `clock` moved to the time the builder finished at, and a deep copy of
# the builder's data. Ids are random (`nearfab.common.ids`), so every copy has the same ids; the
# templates never change after they are built, so no test sees another's writes.


class Built:
    """A test's own copy of a built world: the App on it and the builder's data."""

    def __init__(self, app: App, data: Any) -> None:
        self.app = app
        self.data = data


# (builder, backend, migrated template) -> (database template, data folder, clock time, data)
_WORLDS: dict[tuple[str, str, str], tuple[str, Path, datetime, Any]] = {}


def _world_template(
    request: pytest.FixtureRequest, backend: str, builder: Callable[[App], Any]
) -> tuple[str, Path, datetime, Any]:
    migrated = (
        str(request.getfixturevalue("sqlite_template"))
        if backend == "sqlite"
        else request.getfixturevalue("pg_template")
    )
    key = (f"{builder.__module__}.{builder.__qualname__}", backend, migrated)
    if key in _WORLDS:
        return _WORLDS[key]
    folder: Path = request.getfixturevalue("tmp_path_factory").mktemp("world")
    if backend == "sqlite":
        url = _seeded_sqlite(request, folder)  # the seeded demo network, copied to folder
        template = url.removeprefix("sqlite:///")
        seed_template = _TEMPLATES[("sqlite", migrated)]
    else:
        from tests.conftest import _pg_drop

        template, url = _seeded_pg(request)
        request.config.add_cleanup(functools.partial(_pg_drop, template))
        seed_template = _TEMPLATES[("postgresql", migrated)]
    shutil.copytree(_KEYS[seed_template], folder / "data" / "keys")
    clock = ManualClock()
    app = _build(url, folder / "data", clock)
    try:
        data = builder(app)
        app.shutdown()  # nothing buffered (verification log, telemetry) is left behind
    finally:
        app.engine.dispose()  # a PostgreSQL template takes no open connection
    if backend == "sqlite":
        with sqlite3.connect(template) as conn:  # fold the WAL into the file before copying
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _WORLDS[key] = (template, folder / "data", clock.now(), data)
    return _WORLDS[key]


def world_fixture(builder: Callable[[App], Any]) -> Any:
    """A function-scoped fixture, on SQLite and PostgreSQL, giving each test a `Built` copy of
    the world `builder` makes on the seeded demo network (built once per backend and worker).
    A module opts in with `world = fh.world_fixture(_build_world)`."""

    @pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
    def fixture(
        request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
    ) -> Iterator[Built]:
        with world_copy(request, request.param, builder, tmp_path, clock) as built:
            yield built

    return fixture


@contextlib.contextmanager
def world_copy(
    request: pytest.FixtureRequest,
    backend: str,
    builder: Callable[[App], Any],
    tmp_path: Path,
    clock: ManualClock,
) -> Iterator[Built]:
    """The test's own copy of the world `builder` makes (what `world_fixture` gives), on
    `backend`, for a fixture that chooses the world itself (tests/custody/test_hand_over_identity.py
    gives its `seeded` a built world only for the tests that ask for the built unit)."""
    from tests.conftest import _pg_clone, _pg_drop

    template, data_dir, at, data = _world_template(request, backend, builder)
    clone = None
    if backend == "sqlite":
        target = tmp_path / "nearfab.db"
        shutil.copyfile(template, target)
        url = f"sqlite:///{target}"
    else:
        clone, url = _pg_clone(template)
    shutil.copytree(data_dir, tmp_path / "data")
    clock.advance((at - clock.now()).total_seconds())  # back to where the builder stopped
    application = _build(url, tmp_path / "data", clock)
    try:
        yield Built(application, copy.deepcopy(data))
    finally:
        application.engine.dispose()
        if clone is not None:
            _pg_drop(clone)


_BUILT = pytest.StashKey[Any]()


def seeded_or_world(worlds: dict[str, Callable[[App], Any]]) -> Any:
    """A `seeded` fixture (SQLite and PostgreSQL) for a module whose costly start is a
    fixture of its own: a test that asks for one of `worlds`' fixture names gets a copy of the
    world that name's builder makes (`world_copy`: built once per backend and worker), every
    other test a copy of the seeded demo network. The fixture named reads the builder's data
    with `built_data(request)`. A module opts in with
    `seeded = fh.seeded_or_world({"alerted": _alerted})`."""

    @pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
    def seeded(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[App]:
        builder = next((b for name, b in worlds.items() if name in request.fixturenames), None)
        if builder is None:
            with seeded_copy(request, request.param, tmp_path, clock) as application:
                yield application
            return
        with world_copy(request, request.param, builder, tmp_path, clock) as built:
            request.node.stash[_BUILT] = built.data
            yield built.app

    return seeded


def built_data(request: pytest.FixtureRequest) -> Any:
    """The data of the world `seeded_or_world`'s `seeded` gave this test (a deep copy)."""
    return request.node.stash[_BUILT]


def epcis_receiving_document(epc: str) -> dict[str, Any]:
    """A partner's EPCIS 2.0 document: one wholesaler's receiving event of the pack `epc`."""
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-01-05T08:00:00.000Z",
        "epcisBody": {
            "eventList": [
                {
                    "type": "ObjectEvent",
                    "eventTime": "2026-01-05T08:00:00.000Z",
                    "eventTimeZoneOffset": "+00:00",
                    "epcList": [epc],
                    "action": "OBSERVE",
                    "bizStep": "receiving",
                    "disposition": "in_progress",
                }
            ]
        },
    }


# --- the web pages ------------------------------------------------------------------------------


def csrf(page: str) -> str:
    """The CSRF token of a page's form."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def web_login(app: App | FastAPI, username: str) -> TestClient:
    """A browser logged in to the web app (of `app`, or the web app given) as `username`."""
    if isinstance(app, App):
        from nearfab.web.server import create_web_app

        app = create_web_app(app)
    browser = TestClient(app)
    answer = browser.post(
        "/login",
        data={
            "username": username,
            "password": TEST_PASSWORD,
            "csrf_token": csrf(browser.get("/login").text),
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303 and "/login" not in answer.headers["location"], answer.text
    return browser


def actor(app: App, username: str) -> Actor:
    with app.uow() as uow:
        user = app.users.by_username(uow, username)
        assert user is not None, f"no demo user {username!r}"
        return actor_of(user, uow.session)


def create_user(app: App, username: str, roles: list[str], site_code: str | None) -> Actor:
    """A new account made by the demo admin (no training records, no qualifications)."""
    admin = actor(app, "admin")
    with app.uow() as uow:
        home = app.network.get_site(uow, site_code).id if site_code else None
    with app.uow() as uow:
        user = app.users.create_user(
            uow,
            admin,
            username=username,
            full_name=username.title(),
            roles=roles,
            password=TEST_PASSWORD,
            home_site_id=home,
        )
    approve_pending(app, user.id)  # qp and admin wait for a second administrator
    with app.uow() as uow:
        return actor_of(app.users.get(uow, user.id), uow.session)


def site_user(app: App, username: str, role: str, site_code: str) -> None:
    """A user of `role` at `site_code` with a password that is not temporary (they log in
    straight to the pages; a qp grant is approved by the second administrator)."""
    with app.uow() as uow:
        made = app.users.create_user(
            uow,
            actor(app, "admin"),
            username=username,
            full_name=username.title(),
            roles=[role],
            password=TEST_PASSWORD,
            home_site_id=app.network.get_site(uow, site_code).id,
            temporary=False,
        )
    approve_pending(app, made.id)


def approve_pending(app: App, user_id: str) -> None:
    """The demo's second network administrator approves the account's pending qp/admin
    grants (separation of duties: the demo admin requested them)."""
    approver = actor(app, "admin-two")
    with app.uow() as uow:
        pending = app.users.pending_for(uow, user_id)
    for request in pending:
        with app.uow() as uow:
            app.users.decide_request(uow, approver, request.id, approve=True, reason="approved")


def site_id(app: App, code: str) -> str:
    with app.uow() as uow:
        return app.network.get_site(uow, code).id


def machine_id(app: App, name: str) -> str:
    with app.uow() as uow:
        return next(m.id for m in app.network.list_machines(uow) if m.name == name)


def machine(app: App, machine_id_: str) -> Machine:
    """A detached machine row (for `app.fleet`, which only reads its plain columns)."""
    with app.uow() as uow:
        row = app.network.get_machine(uow, machine_id_)
        uow.session.expunge(row)
        return row


def bundle(
    app: App,
    *,
    dose_mg: float = 2.0,
    days: int = 7,
    birth_date: date | None = None,
    medication: str = "hydrocortisone",
) -> dict[str, Any]:
    from nearfab.demo import prescription_bundle

    today = app.clock.now().date()
    born = birth_date or today - timedelta(days=8 * 365)
    return prescription_bundle(
        _rng, today=today, medication=medication, dose_mg=dose_mg, days=days, birth_date=born
    )


def submit(
    app: App,
    dose_mg: float = 2.0,
    days: int = 7,
    birth_date: date | None = None,
    medication: str = "hydrocortisone",
) -> str:
    """A clinician sends one prescription; returns the (designed) order's id.

    Hydrocortisone is 3 doses a day: 7 days give 21 units, enough for Ph. Eur. 2.9.5 (20).
    """
    clinician = actor(app, "clinician")
    with app.uow() as uow:
        orders = app.orders.submit(
            uow,
            clinician,
            bundle(app, dose_mg=dose_mg, days=days, birth_date=birth_date, medication=medication),
        )
        assert len(orders) == 1
        assert orders[0].status == "designed", orders[0].stop_reason
        return orders[0].id


def schedule(app: App, order_id: str) -> str:
    with app.uow() as uow:
        return app.scheduling.schedule(uow, actor(app, "planner"), order_id).id


def issue_ticket(app: App, job_id: str) -> None:
    with app.uow() as uow:
        app.production.issue_ticket(uow, actor(app, "planner"), job_id)


def job(app: App, job_id: str) -> Job:
    with app.uow() as uow:
        row = app.scheduling.get(uow, job_id)
        uow.session.expunge(row)
        return row


def operator_for_job(app: App, job_id: str) -> Actor:
    with app.uow() as uow:
        site = app.network.get_site(uow, app.scheduling.get(uow, job_id).site_id)
        code = site.code
    return actor(app, OPERATOR_AT[code])


def start(app: App, job_id: str, operator: Actor | None = None) -> str:
    """The site's trained operator starts the ticketed job; returns the batch id."""
    operator = operator or operator_for_job(app, job_id)
    with app.uow() as uow:
        return app.production.start_batch(uow, operator, job_id).id


def execute(app: App, batch_id: str) -> RunResult | DomainError:
    with app.uow() as uow:
        return app.production.execute(uow, batch_id)


def record(app: App, batch_id: str, outcome: RunResult | DomainError) -> None:
    with app.uow() as uow:
        operator_id = app.production.get(uow, batch_id).operator_id
        operator = actor_of(app.users.get(uow, operator_id), uow.session)
    with app.uow() as uow:
        app.production.record_run(uow, operator, batch_id, outcome)


def finish(app: App, batch_id: str) -> None:
    """Run the machine and write its evidence (serialisation and RTRT follow by event)."""
    record(app, batch_id, execute(app, batch_id))


def ticketed_job(app: App, order_id: str | None = None, **order: Any) -> str:
    order_id = order_id or submit(app, **order)
    job_id = schedule(app, order_id)
    issue_ticket(app, job_id)
    return job_id


def make_batch(app: App, *, ready: bool = True, **order: Any) -> str:
    """Prescription to a made batch awaiting release (order awaiting_release); the batch id.
    `ready`: also its manual steps signed (critical entries verified) and its audit trail
    reviewed by the QP, so a QP decision meets only the rule a test is about."""
    batch_id = start(app, ticketed_job(app, **order))
    finish(app, batch_id)
    if ready:
        prepare_release(app, batch_id)
    return batch_id


def run(app: App, *, sign: bool = True) -> RunSummary:
    """Let the network runner move everything it can. `sign`: between passes, the steps each
    opened batch's machine waits for (line clearance, material loading) are signed by its
    operator, critical entries verified by a second person (sign_before_start), as the site
    staff would; without it, started batches wait at their machine."""
    summary = app.runner.run_until_idle()
    while sign and sign_before_start(app):
        more = app.runner.run_until_idle()
        rounds = summary.rounds + more.rounds
        summary.merge(more)  # what the passes did, and what still waits after the last
        summary.rounds = rounds
    return summary


def sign_before_start(app: App, batch_id: str | None = None) -> list[str]:
    """Sign the steps the machine waits for (those before the master file's first machine
    step) of `batch_id`, or of every started batch not yet handed to its machine, as the
    batch's operator with the site's pharmacist verifying critical entries
    (nearfab.demo.complete_record). Returns the batches signed for."""
    from nearfab.demo import complete_record as sign_steps

    with app.uow() as uow:
        if batch_id is not None:
            batches = [app.production.get(uow, batch_id)]
        else:
            batches = [
                b
                for b in app.production.batches(uow, status="in_progress")
                if b.handed_over_at is None
            ]
        waiting = [b.id for b in batches if app.production.steps_before_start(uow, b)]
    for waiting_id in waiting:
        sign_steps(app, waiting_id, TEST_PASSWORD, before_start=True)
    return waiting


def complete_record(app: App, batch_id: str) -> None:
    """Sign the batch's manual master-file steps as its operator, each critical entry verified
    by a second person (nearfab.demo.complete_record)."""
    from nearfab.demo import complete_record as sign_steps

    sign_steps(app, batch_id, TEST_PASSWORD)


def review_audit_trail(app: App, batch_id: str, username: str = "qp") -> None:
    """A QP signs that the batch's audit trail was reviewed, as it is now."""
    qp = actor(app, username)
    with app.uow() as uow:
        app.quality.records.review_audit_trail(uow, qp, batch_id, password=TEST_PASSWORD)


def prepare_release(app: App, batch_id: str) -> None:
    """What a QP needs before certifying: the record complete, its audit trail reviewed (again
    only if rows were added since the last review)."""
    complete_record(app, batch_id)
    with app.uow() as uow:
        batch = app.production.get(uow, batch_id)
        current = app.quality.records.review_state(uow, batch).current
    if not current:
        review_audit_trail(app, batch_id)


def release(app: App, batch_id: str, *, reason: str | None = None) -> None:
    prepare_release(app, batch_id)
    qp = actor(app, "qp")
    with app.uow() as uow:
        app.quality.decide(
            uow,
            qp,
            batch_id,
            decision="release",
            password=TEST_PASSWORD,
            meaning="QP certification: batch released",
            reason=reason,
        )


def reject(app: App, batch_id: str, reason: str = "unit masses out of specification") -> None:
    qp = actor(app, "qp")
    with app.uow() as uow:
        app.quality.decide(
            uow,
            qp,
            batch_id,
            decision="reject",
            password=TEST_PASSWORD,
            meaning="QP rejection of batch",
            reason=reason,
        )


def batch(app: App, batch_id: str) -> BatchRecord:
    with app.uow() as uow:
        row = app.production.get(uow, batch_id)
        uow.session.expunge(row)
        return row


def order_status(app: App, order_id: str) -> str:
    with app.uow() as uow:
        return str(app.orders.get(uow, order_id).status)


def count(app: App, model: type[Any]) -> int:
    with app.uow() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model)) or 0)


def refusals(app: App, entity_type: str, entity_id: str | None = None) -> list[AuditEntry]:
    """Committed audit rows with action "refuse" for an entity (or every one of its type)."""
    with app.uow() as uow:
        stmt = select(AuditEntry).where(
            AuditEntry.action == "refuse", AuditEntry.entity_type == entity_type
        )
        if entity_id is not None:
            stmt = stmt.where(AuditEntry.entity_id == entity_id)
        rows = list(uow.session.scalars(stmt.order_by(AuditEntry.id)))
        for row in rows:
            uow.session.expunge(row)
        return rows


def master_file_id(app: App, code: str) -> str:
    with app.uow() as uow:
        return app.master_files.effective_for_code(uow, code).id


def new_version(app: App, code: str, **changes: Any) -> str:
    """Draft, QP-approve and make effective the next version of `code` (the old one is
    superseded); returns the new version's id."""
    qp = actor(app, "qp")
    with app.uow() as uow:
        data = app.master_files.effective_for_code(uow, code).content()
    data.pop("version")
    data.update(changes)
    with app.uow() as uow:
        mf_id = app.master_files.draft(uow, qp, data).id
    with app.uow() as uow:
        app.master_files.approve(uow, qp, mf_id, password=TEST_PASSWORD)
    with app.uow() as uow:
        app.master_files.make_effective(uow, qp, mf_id)
    return mf_id


def edit(app: App, model: type[Any], row_id: Any, **values: Any) -> None:
    """Change a row behind the services' back (a tampered or corrupted database)."""
    with app.uow() as uow:
        row = uow.session.get(model, row_id)
        assert row is not None, f"no {model.__name__} {row_id}"
        for key, value in values.items():
            setattr(row, key, value)
        uow.commit()


def assert_refusal_audited(app: App, exc: Any, entity_type: str, entity_id: str) -> AuditEntry:
    """The refusal `exc` left a committed audit row (action "refuse") naming its code."""
    rows = [r for r in refusals(app, entity_type, entity_id) if r.reason == exc.message]
    assert rows, f"no 'refuse' audit row for {entity_type} {entity_id} saying {exc.message!r}"
    row = rows[-1]
    assert row.new is not None
    assert row.new["code"] == exc.code
    assert row.new["field"] == exc.field
    return row
