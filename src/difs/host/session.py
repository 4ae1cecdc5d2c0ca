"""The host's asyncio adapter around one ``InitiatorConnection``: one path's transport.

It connects, logs in, and then runs SCSI commands: ``await execute(...)`` resolves
with the ``CommandComplete`` event of that ITT. It only moves bytes and timers
and matches answers to waiters; every protocol decision is the core's.

When the connection is lost every command still in flight fails with
:class:`PathFailed` — the disk layer re-sends those on another satisfying path —
and the owner (``difs.host.disk``) decides whether to reconnect.
"""

from __future__ import annotations

import asyncio
import logging

from difs.iscsi.config import InitiatorConfig
from difs.iscsi.events import ConnectionClosed
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.initiator_events import (
    CommandAborted,
    CommandComplete,
    CommandRejected,
    InitiatorSession,
    LoginFailed,
    LoginSucceeded,
    PingComplete,
)
from difs.util.logs import log_event
from difs.util.units import parse_portal

log = logging.getLogger("difs.host")


class PathFailed(Exception):
    """The path broke while a command was in flight; the command may be re-sent elsewhere."""


class LoginError(Exception):
    """The controller refused the login; the message carries its status and reason."""


class IscsiSession(asyncio.Protocol):
    """One TCP connection = one iSCSI session (difs uses one connection per session)."""

    def __init__(self, config: InitiatorConfig, *, name: str = "") -> None:
        self.config = config
        self.name = name or config.target_name or "discovery"
        self.core: InitiatorConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.session: InitiatorSession | None = None
        self._loop = asyncio.get_running_loop()
        self._login: asyncio.Future[InitiatorSession] = self._loop.create_future()
        self._waiters: dict[int, asyncio.Future] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.closed = self._loop.create_future()  # result: reason string

    # -- life cycle -------------------------------------------------------------

    @classmethod
    async def connect(cls, portal: str, config: InitiatorConfig, *, name: str = "",
                      timeout: float = 15.0) -> IscsiSession:
        host, port = parse_portal(portal)
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: cls(config, name=name), host, port), timeout)
        try:
            await asyncio.wait_for(asyncio.shield(proto._login), timeout)
        except BaseException:
            proto.abort()
            raise
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.core = InitiatorConnection(config=self.config, now=self._loop.time())
        self._pump()

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data)
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.core is not None:
            self.core.close()
        reason = str(exc) if exc else "connection closed"
        self._fail_all(reason)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def logout(self, timeout: float = 5.0) -> None:
        if self.core is None or self.core.closed or self.transport is None:
            return
        try:
            self.core.logout()
            self._pump()
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except (asyncio.TimeoutError, Exception):
            pass
        finally:
            self.abort()

    @property
    def is_up(self) -> bool:
        return self.session is not None and not self.closed.done()

    @property
    def outstanding(self) -> int:
        return len(self._waiters)

    # -- commands -------------------------------------------------------------------

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                      expected_in_length: int = 0) -> CommandComplete:
        if not self.is_up:
            raise PathFailed(f"{self.name}: not connected")
        itt = self.core.submit_command(lun, cdb, data_out=data_out,
                                       expected_in_length=expected_in_length)
        fut = self._loop.create_future()
        self._waiters[itt] = fut
        self._flush()
        return await fut

    async def ping(self, timeout: float = 5.0) -> None:
        itt = self.core.ping(timeout=timeout)
        fut = self._loop.create_future()
        self._waiters[itt] = fut
        self._pump()
        await fut

    # -- plumbing ----------------------------------------------------------------------

    def _flush(self) -> None:
        out = self.core.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def _pump(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            kind = type(event)
            if kind is CommandComplete:
                fut = self._waiters.pop(event.itt, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
            else:
                self._handle(event)
        self._flush()
        self._arm_timer()

    def _handle(self, event: object) -> None:
        if isinstance(event, LoginSucceeded):
            self.session = event.session
            if not self._login.done():
                self._login.set_result(event.session)
        elif isinstance(event, LoginFailed):
            if not self._login.done():
                self._login.set_exception(LoginError(
                    f"{self.name}: login refused (status {event.status_class:02x}"
                    f"{event.status_detail:02x}): {event.reason}"))
        elif isinstance(event, PingComplete):
            fut = self._waiters.pop(event.itt, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(event, (CommandAborted, CommandRejected)):
            fut = self._waiters.pop(event.itt, None)
            if fut is not None and not fut.done():
                fut.set_exception(PathFailed(f"{self.name}: command {event!r}"))
        elif isinstance(event, ConnectionClosed):
            self._flush()
            if self.transport is not None:
                self.transport.close()
            self._fail_all(event.reason)

    def _fail_all(self, reason: str) -> None:
        if not self._login.done():
            self._login.set_exception(LoginError(f"{self.name}: {reason}"))
        waiters, self._waiters = self._waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(PathFailed(f"{self.name}: {reason}"))
        if not self.closed.done():
            self.closed.set_result(reason)
            if self.session is not None:
                log_event(log, "path closed", path=self.name, reason=reason)

    def _arm_timer(self) -> None:
        when = self.core.get_timer() if self.core is not None else None
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self._loop.time())
        self._pump()
