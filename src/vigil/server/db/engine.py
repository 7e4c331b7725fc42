"""Engines and sessions: SQLite (WAL) by default, PostgreSQL through ``VIGIL_DATABASE_URL``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from vigil.errors import ConfigError

_WRITE = {"vigil_write": True}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys, a busy timeout and IMMEDIATE writes."""
    if url.startswith("postgresql") and "+psycopg" not in url.split("://", 1)[0]:
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).parent.is_dir():
            raise ConfigError(
                f"database directory {Path(path).parent} does not exist: run `vigil init` first"
            )
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    if not url.startswith("postgresql"):
        raise ConfigError(f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite or postgresql")
    # no pre-ping: it would cost a round trip per request; recycle connections instead
    return create_engine(url, pool_size=20, max_overflow=20, pool_recycle=1800, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: index pages of big tables stay hot
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute("PRAGMA wal_autocheckpoint=10000")  # fewer, larger checkpoints
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write transaction takes the write lock at BEGIN: a deferred one that read first
        # would fail with SQLITE_BUSY_SNAPSHOT when another writer committed meanwhile.
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get("vigil_write") else "BEGIN"
        )


class Database:
    """The engine plus read and write session factories."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **kwargs)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(**_WRITE), expire_on_commit=False)
        self._write_lock: Any = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else nullcontext()
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on error.

        SQLite has one writer at a time; writers of this process queue on a lock instead of
        on SQLite's busy handler, whose sleeps (up to 100 ms each) would dominate latency.
        """
        with self._write_lock, self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
