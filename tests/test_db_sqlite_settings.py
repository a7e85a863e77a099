"""The SQLite engine's per-connection settings and pool (docs/performance.md, "Sixth pass"):
every pooled connection reads through a memory map, with a 16 MiB page cache and temporary
storage in memory, on top of the settings correctness needs (foreign keys, WAL, busy
timeout); and a web server's concurrent requests reuse kept connections instead of opening
the file again for every check-out beyond SQLAlchemy's default five."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, text

from nearfab.db import make_engine


def test_every_connection_has_the_settings(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'settings.db'}")
    try:
        with engine.connect() as conn:
            read = {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in (
                    "foreign_keys",
                    "journal_mode",
                    "busy_timeout",
                    "mmap_size",
                    "cache_size",
                    "temp_store",
                )
            }
    finally:
        engine.dispose()
    # 256 MiB = 268,435,456 bytes; a negative cache_size is in KiB: -16,384 = 16 MiB;
    # temp_store 2 = MEMORY (sqlite.org/pragma.html)
    assert read == {
        "foreign_keys": 1,
        "journal_mode": "wal",
        "busy_timeout": 10000,
        "mmap_size": 268435456,
        "cache_size": -16384,
        "temp_store": 2,
    }


def test_sixteen_concurrent_connections_are_kept_for_the_next_requests(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'pool.db'}")
    opened: list[object] = []
    event.listen(engine, "connect", lambda conn, _record: opened.append(conn))
    try:
        for _round in range(2):  # 16 requests at once, twice
            held = [engine.connect() for _ in range(16)]
            for conn in held:
                conn.execute(text("SELECT 1"))
            for conn in held:
                conn.close()
        # the first round opened 16; the second found them all kept (with the default pool,
        # 5 kept: 11 more opened again)
        assert len(opened) == 16
    finally:
        engine.dispose()
