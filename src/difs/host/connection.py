"""The host's asyncio adapter around one ``InitiatorConnection``: one path's transport.

It connects, logs in, and then runs SCSI commands: ``await execute(...)`` resolves
with the ``CommandComplete`` event of that ITT. It moves bytes, arms one timer at the
core's ``get_timer()`` and matches the core's events to waiters; every protocol
decision is the core's, the clocks' too.

Commands are pipelined: ``execute`` returns to the event loop at once, so as many
commands as the caller has issued are in flight, up to the controller's CmdSN
window (the core queues the rest until MaxCmdSN moves). Writes beyond
FirstBurstLength go out as immediate/unsolicited data plus Data-Out answering R2Ts
— all inside the core.

The core's clocks keep the path honest (:class:`SessionTimers`, decided in
:mod:`difs.iscsi.initiator_timers`):

* **keepalive** — a path that has heard nothing from the controller for
  ``nop_interval`` seconds sends a NOP-Out; unanswered after ``nop_timeout`` the
  core ends the connection ("NOP-Out ping timeout");
* **command timeout** — a command unanswered after ``command_timeout`` seconds is
  aborted with ABORT TASK. If the controller confirms the abort, the command fails
  with :class:`CommandTimedOut` (it did not run; the path works; send it again). If
  the abort is not answered within ``abort_timeout``, or the controller does not know
  the task, the path is dropped (the core's ``ConnectionDead``).

When the controller asks for a logout (Asynchronous Message, event 1) the path
*drains*: ``on_drain`` tells the owner to stop choosing it, the commands in flight
finish, then the session logs out and the owner reconnects.

**DSCP.** A channel configured with a DSCP class (``--channels digests:af41,plain``) gets
its socket marked before it connects — ``IP_TOS`` (IPv4) or ``IPV6_TCLASS`` (IPv6) set to
``DSCP << 2`` — so every packet of the connection, the SYN included, carries it;
``IscsiSession.dscp`` is the class read back from the socket (``getsockopt``): what is
really set, and what the path reports as negotiated. Unmarked channels keep the system's
default (0) and report none.

When the connection is lost every command still in flight fails with
:class:`PathFailed` — the disk layer re-sends those on another satisfying path —
and the path group (``difs.host.pathgroup``) reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from difs.host.errors import CommandTimedOut, LoginError, PathFailed
from difs.iscsi.config import InitiatorConfig
from difs.iscsi.constants import AsyncEvent
from difs.iscsi.errors import LocalProtocolError
from difs.iscsi.events import ConnectionClosed, DigestFailure, LogoutComplete
from difs.iscsi.initiator import InitiatorConnection
from difs.iscsi.initiator_events import (
    AsyncEventReceived,
    CommandAborted,
    CommandComplete,
    CommandRejected,
    CommandTimeout,
    ConnectionDead,
    InitiatorSession,
    LoginFailed,
    LoginSucceeded,
    PingComplete,
)
from difs.iscsi.initiator_timers import InitiatorTimers
from difs.util.coretimer import CoreTimer
from difs.util.logs import log_event
from difs.util.units import parse_portal

log = logging.getLogger("difs.host")

@dataclass(frozen=True, slots=True)
class SessionTimers(InitiatorTimers):
    """How long a path waits for its controller before giving up on a command or on itself:
    the core's :class:`~difs.iscsi.initiator_timers.InitiatorTimers` (which it keeps) plus
    the login timeout (which this adapter keeps). Errors name the ``difs host`` options.

    ``nop_interval`` / ``command_timeout`` of ``None`` (or 0) turn that check off.
    """

    login_timeout: float = 15.0

    _POSITIVE: ClassVar[tuple[str, ...]] = ("nop_timeout", "abort_timeout", "login_timeout")

    @staticmethod
    def _label(name: str) -> str:
        return f"{name} (--{name.replace('_', '-')})"


#: The defaults: keepalive after 5 s of silence, 5 s to answer; commands 30 s, aborts 5 s.
DEFAULT_TIMERS = SessionTimers()


def _tos_option(family: int) -> tuple[int, int]:
    """(level, option) of the byte that carries the DSCP: IPV6_TCLASS or IP_TOS."""
    if family == socket.AF_INET6:
        return socket.IPPROTO_IPV6, socket.IPV6_TCLASS
    return socket.IPPROTO_IP, socket.IP_TOS


async def _marked_connection(loop: asyncio.AbstractEventLoop, factory: Callable[[], IscsiSession],
                             host: str, port: int, dscp: int) -> tuple[asyncio.BaseTransport, IscsiSession, int]:
    """Connect a socket marked with ``dscp`` before it connects; the DSCP read back from it."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    error: OSError = OSError(f"{host}:{port} has no address")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            level, option = _tos_option(family)
            sock.setsockopt(level, option, dscp << 2)
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            marked = sock.getsockopt(level, option) >> 2
            transport, session = await loop.create_connection(factory, sock=sock)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return transport, session, marked
    raise error


class IscsiSession(CoreTimer, asyncio.Protocol):
    """One TCP connection = one iSCSI session (difs uses one connection per session)."""

    def __init__(self, config: InitiatorConfig, *, name: str = "",
                 timers: SessionTimers = DEFAULT_TIMERS) -> None:
        self.config = config
        self.name = name or config.target_name or "discovery"
        self.timers = timers
        self.core: InitiatorConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.session: InitiatorSession | None = None
        self._loop = asyncio.get_running_loop()
        self._login: asyncio.Future[InitiatorSession] = self._loop.create_future()
        self._waiters: dict[int, asyncio.Future] = {}
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._logged_out = False
        self.closed = self._loop.create_future()  # result: reason string
        #: called when the controller asks this session to log out (stop choosing it)
        self.on_drain: Callable[[str], None] | None = None
        self.draining = False
        self._drain_task: asyncio.Task | None = None
        #: most commands in flight at once
        self.peak_outstanding = 0
        #: the DSCP its socket really carries (read back after marking; None: not marked)
        self.dscp: int | None = None
        #: CRC32C digest mismatches this session found in what the controller sent
        self.digest_errors = 0

    # -- life cycle -------------------------------------------------------------

    @classmethod
    async def connect(cls, portal: str, config: InitiatorConfig, *, name: str = "",
                      timers: SessionTimers = DEFAULT_TIMERS, dscp: int | None = None) -> IscsiSession:
        host, port = parse_portal(portal)
        loop = asyncio.get_running_loop()
        timeout = timers.login_timeout
        factory = lambda: cls(config, name=name, timers=timers)  # noqa: E731
        if dscp is None:
            _, proto = await asyncio.wait_for(loop.create_connection(factory, host, port), timeout)
        else:
            _, proto, proto_dscp = await asyncio.wait_for(
                _marked_connection(loop, factory, host, port, dscp), timeout)
            proto.dscp = proto_dscp
        try:
            await asyncio.wait_for(asyncio.shield(proto._login), timeout)
        except TimeoutError:
            proto.abort()
            raise LoginError(f"{proto.name}: no login answer within {timeout:g}s") from None
        except BaseException:
            proto.abort()
            raise
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.core = InitiatorConnection(config=self.config, now=self._loop.time(),
                                        timers=self.timers)
        self._pump()

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data)
        self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
        except (TimeoutError, LocalProtocolError):
            pass  # no answer, or not in Full Feature Phase: the reset below ends it anyway
        finally:
            self.abort()

    @property
    def is_up(self) -> bool:
        return self.session is not None and not self.closed.done()

    @property
    def interface(self) -> str | None:
        """The local address this session's socket runs on (the host's interface)."""
        sock = self.transport.get_extra_info("sockname") if self.transport is not None else None
        return str(sock[0]) if sock else None

    @property
    def outstanding(self) -> int:
        return len(self._waiters)

    @property
    def keepalives(self) -> int:
        """Keepalive NOP-Outs sent."""
        return self.core.keepalives if self.core is not None else 0

    @property
    def timeouts(self) -> int:
        """Commands aborted for not being answered in time."""
        return self.core.commands_timed_out if self.core is not None else 0

    # -- commands -------------------------------------------------------------------

    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                      expected_in_length: int = 0) -> CommandComplete:
        if not self.is_up:
            raise PathFailed(f"{self.name}: not connected")
        loop = self._loop
        itt = self.core.submit_command(lun, cdb, data_out=data_out,
                                       expected_in_length=expected_in_length, now=loop.time())
        fut = loop.create_future()
        waiters = self._waiters
        waiters[itt] = fut
        self.peak_outstanding = max(self.peak_outstanding, len(waiters))
        if not self._flush_scheduled:
            # One send per loop iteration: the commands a client queued together
            # (a QD32 burst of NBD requests) leave in one writev, not one write each.
            self._flush_scheduled = True
            loop.call_soon(self._scheduled_flush)
        return await fut

    async def ping(self, timeout: float = 5.0) -> None:
        itt = self.core.ping(timeout=timeout, now=self._loop.time())
        fut = self._loop.create_future()
        self._waiters[itt] = fut
        self._pump()
        await fut

    # -- plumbing ----------------------------------------------------------------------

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        out = self.core.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def _pump(self) -> None:
        core = self.core
        while (event := core.next_event()) is not None:
            if type(event) is CommandComplete:
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
                status = event.status_class << 8 | event.status_detail
                self._login.set_exception(LoginError(
                    f"{self.name}: login refused (status {status:04x}): {event.reason}",
                    status=status))
        elif isinstance(event, PingComplete):
            fut = self._waiters.pop(event.itt, None)  # none for the core's keepalives
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(event, CommandTimeout):
            log_event(log, "command timed out, aborting", level=logging.WARNING, path=self.name,
                      itt=f"0x{event.itt:x}", after=f"{event.after:g}s")
        elif isinstance(event, CommandAborted):
            self._command_aborted(event)
        elif isinstance(event, ConnectionDead):
            log_event(log, "path dropped", level=logging.WARNING, path=self.name,
                      reason=event.reason)
        elif isinstance(event, CommandRejected):
            fut = self._waiters.pop(event.itt, None)
            if fut is not None and not fut.done():
                fut.set_exception(PathFailed(f"{self.name}: command rejected, reason "
                                             f"0x{event.reason:02x}"))
        elif isinstance(event, DigestFailure):
            self.digest_errors += 1
        elif isinstance(event, AsyncEventReceived):
            self._async_event(event)
        elif isinstance(event, LogoutComplete):
            self._logged_out = True
        elif isinstance(event, ConnectionClosed):
            self._flush()
            if self.transport is not None:
                # After a logout the target closes; otherwise (timeouts, faults) do not
                # wait for a send buffer that a silent target will never drain.
                if self._logged_out:
                    self.transport.close()
                else:
                    self.transport.abort()
            self._fail_all(event.reason)

    # -- the controller's requests -------------------------------------------------------

    def _async_event(self, event: AsyncEventReceived) -> None:
        if event.event != AsyncEvent.LOGOUT_REQUESTED or self.draining:
            log_event(log, "asynchronous message", path=self.name, event=event.event,
                      parameters=(event.parameter1, event.parameter2, event.parameter3))
            return
        within = event.parameter3 or 5
        reason = f"the controller requested a logout within {within}s"
        log_event(log, "path draining", path=self.name, reason=reason)
        self.draining = True
        if self.on_drain is not None:
            self.on_drain(reason)
        self._drain_task = self._loop.create_task(self._drain_and_logout(within))

    async def _drain_and_logout(self, within: float) -> None:
        """Let the commands in flight finish (at most ``within`` seconds), then log out."""
        deadline = self._loop.time() + within
        while self._waiters and self._loop.time() < deadline and not self.closed.done():
            await asyncio.sleep(0.01)
        await self.logout(timeout=max(0.5, deadline - self._loop.time()))

    # -- the core's timer decisions --------------------------------------------------

    def _command_aborted(self, event: CommandAborted) -> None:
        itt = event.itt
        fut = self._waiters.pop(itt, None)
        if fut is None or fut.done():
            return
        if event.timed_out:
            fut.set_exception(CommandTimedOut(
                f"{self.name}: command 0x{itt:x} not answered within "
                f"{self.timers.command_timeout:g}s; the controller aborted it"))
        else:
            fut.set_exception(PathFailed(f"{self.name}: command 0x{itt:x} aborted"))

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
