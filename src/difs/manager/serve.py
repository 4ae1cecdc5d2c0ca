"""How the manager is served: uvicorn, with the connection bounds uvicorn itself lacks.

uvicorn answers requests beyond ``limit_concurrency`` with 503 but keeps every connection
open, and starts its keep-alive timer only after a response: a connection that never sends a
request, or stops half-way through one, stays open for ever. :class:`BoundedH11Protocol`
(uvicorn's h11 protocol) adds:

* at most ``limit_concurrency`` connections: one more is closed as soon as it is accepted
  (logged at most once per 10 s, with the count of those not logged);
* a request deadline: a connection must deliver a whole request (head and body) within
  ``timeout_keep_alive`` seconds of connecting or of its previous response, else it is
  closed. A request the app is still answering is never cut.

Usage: ``run(app, host=..., port=..., limit_concurrency=1000, keep_alive_timeout=5.0)``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from difs.util.logs import RateLimitedEvent

log = logging.getLogger("difs.manager")

DEFAULT_LIMIT_CONCURRENCY = 1000
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0

_refused = RateLimitedEvent(log, "connection refused: connection limit reached", level=logging.WARNING)
_WAITING_FOR_REQUEST = (h11.IDLE, h11.SEND_BODY)  # their side: no whole request yet


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection limit and a request deadline."""

    _refused = False
    _request_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            self._refused = True
            peer = transport.get_extra_info("peername")
            transport.close()
            _refused(peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?", limit=limit)
            return
        super().connection_made(transport)
        self._arm_request_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_request_timer()

    def _arm_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
        self._request_timer = self.loop.call_later(self.timeout_keep_alive, self._request_deadline)

    def _request_deadline(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing() and self.conn.their_state in _WAITING_FOR_REQUEST:
            self.transport.close()


def run(app: Any, *, host: str, port: int, log_level: str = "info",
        limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY,
        keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT) -> None:
    """Serve ``app`` until a signal (uvicorn's own handling of SIGINT/SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, http=BoundedH11Protocol,
                limit_concurrency=limit_concurrency, timeout_keep_alive=keep_alive_timeout)
