"""What every node (controller, host) does with the manager: a periodic exchange.

:class:`NodeLink` runs ``exchange()`` every ``interval`` seconds — the subclass
advertises, then pulls what the manager wants of it (volumes to serve, bindings
to follow) and pushes what it measured. The manager's client is synchronous,
so subclasses call it with :meth:`call` (a worker thread); the I/O path never
waits for the manager. An unreachable manager is logged once, with what the node
keeps doing meanwhile, and once more when it is back.

No exception ends the link: a round that fails in any other way (a bug, a reply of
an unexpected shape, a full disk) is logged with its traceback the first time that
failure is seen (at most :data:`DISTINCT_FAILURES` different ones until a round
succeeds again), its repeats as one rate-limited line with a count, and the next
round runs on time. Only cancellation (``close()``) stops it.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from difs.nodelink.client import ManagerClient, ManagerError, ManagerUnreachable
from difs.util.logs import RateLimitedEvent, log_event

#: how many different failures a link logs with their traceback before a round succeeds
DISTINCT_FAILURES = 16


class NodeLink(ABC):
    #: what the node keeps doing while the manager is away (for the log line)
    offline_behaviour = "carrying on"

    def __init__(self, client: ManagerClient, *, node: str, log: logging.Logger,
                 interval: float = 5.0, lease: float = 30.0) -> None:
        self.client = client
        self.node = node
        self.log = log
        self.interval = interval
        self.lease = lease
        self._unreachable = False
        self._task: asyncio.Task | None = None
        self._failures: set[tuple[str, str]] = set()  # seen since the last good round
        self._still_failing = RateLimitedEvent(log, "manager round still failing",
                                               level=logging.WARNING, interval=60.0)

    @abstractmethod
    async def exchange(self) -> None:
        """One round with the manager (may raise ManagerUnreachable / ManagerError)."""

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def tick(self) -> None:
        try:
            await self.exchange()
        except ManagerUnreachable as exc:
            if not self._unreachable:
                log_event(self.log, f"manager unreachable; {self.offline_behaviour}",
                          level=logging.WARNING, reason=str(exc))
            self._unreachable = True
            return
        except ManagerError as exc:
            log_event(self.log, "manager refused a request", level=logging.WARNING,
                      status=exc.status, reason=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - nothing but cancellation ends the link
            self._round_failed(exc)
            return
        if self._unreachable:
            log_event(self.log, "manager reachable again")
            self._unreachable = False
        if self._failures:
            log_event(self.log, "manager round works again", failures=len(self._failures))
            self._failures.clear()

    def _round_failed(self, exc: Exception) -> None:
        """Log a new failure with its traceback, a repeated one rate-limited."""
        error = f"{type(exc).__name__}: {exc}"
        key = (type(exc).__qualname__, str(exc))
        if key not in self._failures and len(self._failures) < DISTINCT_FAILURES:
            self._failures.add(key)
            log_event(self.log, "manager round failed; retrying next round",
                      level=logging.ERROR, exc_info=exc, error=error)
        else:
            self._still_failing(error=error)

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.client.close)
