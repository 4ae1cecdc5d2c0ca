"""When the manager's database goes away: bounded waits, 503 answers, recovery without a restart.

* **Bounded waits** (:data:`POSTGRES_ENGINE_OPTIONS`, used by ``db.make_engine``): a connection
  attempt gives up after ``connect_timeout``; a pooled connection is pinged before use (a
  connection PostgreSQL closed is replaced, not handed to a request); a request waits at most
  ``pool_timeout`` for a free connection; TCP keepalives and ``tcp_user_timeout`` notice a server
  whose machine vanished; the server cancels a statement after ``statement_timeout``.
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from difs.util.logs import log_event

log = logging.getLogger("difs.manager")

#: seconds: how long a connection attempt, a wait for a pooled connection, and a statement may take
CONNECT_TIMEOUT = 3
POOL_TIMEOUT = 5
STATEMENT_TIMEOUT = 15
#: what a 503 tells the client to wait before retrying
RETRY_AFTER_SECONDS = 2

POSTGRES_ENGINE_OPTIONS: dict[str, object] = {
    "pool_pre_ping": True,
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
