"""When the manager's database goes away: bounded waits, 503 answers, recovery without a restart.

* **Bounded waits** (:data:`POSTGRES_ENGINE_OPTIONS` and :func:`guard_postgres`, used by
  ``db.make_engine``): a connection attempt gives up after ``connect_timeout``; a pooled
  connection is pinged before use (a connection PostgreSQL closed is replaced, not handed to a
  request); a request waits at most ``pool_timeout`` for a free connection; the server cancels
  a statement after ``statement_timeout``. A server that stops answering without closing
  anything (its machine frozen, the process stopped) would still leave a request waiting on
  its socket for ever: the :class:`StallWatchdog` shuts the socket of a checked-out connection
  down when the ping (``PING_TIMEOUT``) or the whole transaction (``TRANSACTION_TIMEOUT``)
  overruns, so the waiting request fails with a disconnect like any other.
* **503, not 500** (:func:`is_unavailable`): connection failures, disconnects, pool and
  statement timeouts become :class:`~difs.manager.errors.DatabaseUnavailable` — a 503
  ``application/problem+json`` document with ``Retry-After`` (``api/problems.py``). A node's
  link treats 503 like an unreachable manager and keeps serving what it has.
* **Recovery** (:class:`DatabaseHealth`): the manager never caches a broken connection (the
  pool pings), so the first request after the database returns works. The health record says
  whether the database answered last time it was tried (``/healthz``, ``/readyz``), logs one
  line when it goes away and one when it is back, and on coming back runs
  ``on_recovered(seconds_down)``: the lease book's extension (``leases.LeaseBook.extend``),
  since nodes could not renew meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from difs.util.logs import RateLimitedEvent, log_event

log = logging.getLogger("difs.manager")

#: seconds: a connection attempt (libpq's minimum is 2), the ping of a pooled connection, a
#: wait for a free pooled connection, one statement (server side), one whole transaction
CONNECT_TIMEOUT = 2
PING_TIMEOUT = 2.0
POOL_TIMEOUT = 5
STATEMENT_TIMEOUT = 8
TRANSACTION_TIMEOUT = 10.0
#: what a 503 tells the client to wait before retrying
RETRY_AFTER_SECONDS = 2

POSTGRES_ENGINE_OPTIONS: dict[str, object] = {
    "pool_pre_ping": False,  # guard_postgres pings, under the watchdog
    "pool_size": 10,
    "max_overflow": 10,
    "pool_timeout": POOL_TIMEOUT,
    "connect_args": {
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": POOL_TIMEOUT * 1000,
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}",
    },
}

_stalled = RateLimitedEvent(log, "database connection stalled; cut", level=logging.WARNING)


class StallWatchdog:
    """Shuts down the socket of a connection whose deadline passed while it was checked out.

    ``arm(conn, seconds)`` when a request takes a connection (and again after its ping),
    ``disarm(conn)`` when it gives it back. One thread, started on demand and gone when nothing
    is armed; the cut happens under the lock, so a connection already given back is never cut.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: dict[int, tuple[float, Any, str]] = {}
        self._thread: threading.Thread | None = None

    def arm(self, conn: Any, seconds: float, what: str) -> None:
        with self._cond:
            self._deadlines[id(conn)] = (time.monotonic() + seconds, conn, what)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="difs-db-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, conn: Any) -> None:
        with self._cond:
            self._deadlines.pop(id(conn), None)

    def _run(self) -> None:
        with self._cond:
            while self._deadlines:
                now = time.monotonic()
                for key, (deadline, conn, what) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[key]
                        _cut(conn)
                        _stalled(during=what)
                if self._deadlines:
                    self._cond.wait(min(d for d, _, _ in self._deadlines.values()) - now)
            self._thread = None


def _cut(conn: Any) -> None:
    """Shut the connection's socket down: its blocked reader sees the end of the stream."""
    try:
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
    except Exception:  # already closed
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()


def guard_postgres(engine: Engine, watchdog: StallWatchdog | None = None) -> StallWatchdog:
    """Ping each connection a request takes and bound the ping and the transaction in time."""
    dog = watchdog or StallWatchdog()
    dialect = engine.dialect

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dog.arm(dbapi_conn, PING_TIMEOUT, "ping")
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:  # closed by the server, or cut by the watchdog: take another
            dog.disarm(dbapi_conn)
            raise DisconnectionError(f"pooled connection unusable: {type(exc).__name__}") from exc
        dog.arm(dbapi_conn, TRANSACTION_TIMEOUT, "transaction")

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, _record: Any) -> None:
        if dbapi_conn is not None:
            dog.disarm(dbapi_conn)

    @event.listens_for(engine, "close")
    def _close(dbapi_conn: Any, _record: Any) -> None:
        dog.disarm(dbapi_conn)

    return dog


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database cannot be used right now" (as opposed to a bug)."""
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def reason(exc: BaseException) -> str:
    """A short, secret-free reason for the log (the driver's exception class, not its message:
    a connection error's message can carry the database URL)."""
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__


@dataclass(frozen=True)
class DatabaseStatus:
    up: bool
    #: why it is down (the driver's exception class), None when up
    reason: str | None = None
    #: seconds it has been down, None when up
    down_for: float | None = None


class DatabaseHealth:
    """Whether the database answered the last time it was used; one log line per change."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic,
                 on_recovered: Callable[[float], None] = lambda _seconds: None) -> None:
        self._monotonic = monotonic
        self._on_recovered = on_recovered
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason: str | None = None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._reason = reason(exc)
            if self._down_since is not None:
                return
            self._down_since = self._monotonic()
        log_event(log, "database unavailable; answering 503 until it is back", level=logging.WARNING,
                  reason=self._reason)

    def ok(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            down_for = self._monotonic() - self._down_since
            self._down_since = self._reason = None
        self._on_recovered(down_for)
        log_event(log, "database reachable again", down_seconds=round(down_for, 1))

    def status(self) -> DatabaseStatus:
        with self._lock:
            if self._down_since is None:
                return DatabaseStatus(up=True)
            return DatabaseStatus(up=False, reason=self._reason, down_for=self._monotonic() - self._down_since)


def probe(engine: Engine, health: DatabaseHealth) -> DatabaseStatus:
    """Try the database once (``SELECT 1``) and record the outcome."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        health.failed(exc)
    else:
        health.ok()
    return health.status()
