"""Engine, sessions and migrations.

- SQLite (the default, a file in the data dir): WAL journal, foreign keys on,
  and writing transactions start with ``BEGIN IMMEDIATE`` so concurrent
  writers queue on the database lock instead of failing on a lock upgrade;
  reads use a plain ``BEGIN``.
- PostgreSQL (``postgresql://`` or ``postgresql+psycopg://`` URLs, driven by
  psycopg 3): rows that must not be updated concurrently are read with
  ``SELECT ... FOR UPDATE`` by the services. Connecting, waiting for a pooled
  connection, statements and whole transactions are bounded in time (``dbguard``).

Migrations live inside the package (``difs/manager/migrations``) and run on
every start (``upgrade head`` is a no-op when current).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
WRITE_OPTION = "difs_write"


def normalize_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and use the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=False
        )
        _sqlite_setup(engine)
        return engine
    from difs.manager.dbguard import POSTGRES_ENGINE_OPTIONS, guard_postgres

    engine = create_engine(url, **POSTGRES_ENGINE_OPTIONS)  # type: ignore[arg-type]
    guard_postgres(engine)
    return engine


def _private_sqlite_file(path: Path) -> None:
    """The database file (directory 0700 when created here) is 0600 before SQLite opens it;
    SQLite gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if existing.stat().st_mode & 0o077:  # made by an older difs
                os.chmod(existing, 0o600)
        except FileNotFoundError:
            pass


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=True)


@contextmanager
def transaction(factory: sessionmaker[Session], *, write: bool) -> Iterator[Session]:
    """One transaction: commit when the block ends normally, roll back on any exception."""
    with factory() as session:
        session.connection(execution_options={WRITE_OPTION: write})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def run_migrations(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates it on an empty database)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
