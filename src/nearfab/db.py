"""ORM base, column types, engine and session-factory builders. No engine is made at import time."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: give a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


def _private_sqlite_file(url: str) -> None:
    """The SQLite file holds patient pseudonyms, ciphertexts and the audit trail: create it
    0600 (owner only), like the keys, before SQLite would create it 0644 under a usual umask;
    an existing file readable by others is narrowed. SQLite gives its -wal and -shm files the
    database file's own mode, so they follow."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = os.path.abspath(database)
    if os.path.isdir(os.path.dirname(path)):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            os.close(fd)
    for name in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            continue


# SQLite connection settings (per pooled connection): the address space mapped for reads
# (the file is mapped up to this size; pages are shared with the OS cache, not copied per
# connection) and the private page cache in KiB
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
SQLITE_CACHE_KIB = 16 * 1024
# connections a file database keeps open between requests: the web server runs requests on up
# to 40 threads; with SQLAlchemy's default (5 kept, 10 more opened and closed again on every
# check-out beyond those) each of those check-outs opened the file, ran the pragmas and parsed
# the schema again (docs/performance.md, "Sixth pass")
SQLITE_POOL_SIZE = 20
SQLITE_MAX_OVERFLOW = 20


def make_engine(url: str, *, echo: bool = False) -> Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        database = make_url(url).database or ""
        pool: dict[str, Any] = {}
        if database and database != ":memory:" and "mode=memory" not in url:
            pool = {"pool_size": SQLITE_POOL_SIZE, "max_overflow": SQLITE_MAX_OVERFLOW}
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False}, **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            # reads straight from the memory-mapped file instead of a read() syscall and a copy
            # per page (a batch record's JSON spans overflow pages), a larger page cache per
            # connection (16 MiB instead of 2 MiB), sorts and temporary tables in memory
            # (docs/performance.md, "Sixth pass"); durability is unchanged (WAL, fsync as before)
            cur.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
            cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Any]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)
