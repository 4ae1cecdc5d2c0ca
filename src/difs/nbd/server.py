"""The asyncio NBD server: a thin adapter moving bytes between sockets, the sans-I/O core
(:mod:`difs.nbd.connection`) and the exports' backends (:mod:`difs.nbd.backend`).

It makes no protocol decisions: the core validates every request and says what to send; this
module runs the backend call for each request as its own task (so a pipelining client gets
concurrent backend calls and out-of-order replies), writes replies, and applies the core's
backpressure to the socket (stop reading while ``throttled`` or while the peer does not read
its replies). A fault ends at most that one connection and is logged with the export's name.

Bounds: at most ``max_connections`` connections are open at once (one more is closed as soon as
it is accepted, without a greeting); the core's handshake deadlines (``handshake_timeout`` from
accept until an export is chosen, ``handshake_idle`` without a handshake step) run as a loop
timer that this adapter arms from ``core.get_timer()`` and fires into ``core.handle_timer``.
Lines a flood repeats (refusals, handshake timeouts, clients leaving before choosing an export)
are rate-limited: one line per 10 s with the count of those not logged.

Usage::

    server = NbdServer({"vm1": MemoryBackend(64 << 20)})
    host, port = await server.start_tcp("127.0.0.1", 0)
    await server.start_unix("/run/difs/nbd.sock")
    server.add_export("vm2", FileBackend("/var/lib/vm2.img"))
    ...
    await server.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from difs.nbd import constants as c
from difs.nbd.backend import NbdBackend
from difs.nbd.connection import NbdServerConnection
from difs.nbd.errors import NbdBackendError
from difs.nbd.events import (
    ClientDisconnect,
    ConnectionClosed,
    ExportChosen,
    HandshakeTimedOut,
    ProtocolViolation,
    Request,
    RequestRejected,
)
from difs.util.logs import RateLimitedEvent

log = logging.getLogger("difs.nbd")

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HANDSHAKE_TIMEOUT = 10.0  # seconds from accept until an export is chosen
DEFAULT_HANDSHAKE_IDLE = 5.0  # seconds without a handshake step (client flags, an option)

if sys.version_info >= (3, 12):

    def _start_task(coro, loop):
        # Runs the backend call at once; a backend that completes without waiting (memory,
        # page cache) then costs no trip through the event loop. The task is still a real
        # task (current_task(), timeouts and cancellation behave).
        return asyncio.Task(coro, loop=loop, eager_start=True)

else:

    def _start_task(coro, loop):
        return loop.create_task(coro)

_CMD_READ = c.CMD_READ
_CMD_WRITE = c.CMD_WRITE
_CMD_FLUSH = c.CMD_FLUSH
_CMD_TRIM = c.CMD_TRIM
_CMD_WRITE_ZEROES = c.CMD_WRITE_ZEROES
_CMD_BLOCK_STATUS = c.CMD_BLOCK_STATUS
_FUA = c.CMD_FLAG_FUA
_NO_HOLE = c.CMD_FLAG_NO_HOLE
_FAST_ZERO = c.CMD_FLAG_FAST_ZERO


@dataclass(slots=True)
class NbdExportStats:
    """Counters for one export, summed over its connections."""

    connections: int = 0
    reads: int = 0
    writes: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    flushes: int = 0
    trims: int = 0
    zeroes: int = 0
    errors: int = 0  # requests answered with an error (backend or validation)
    protocol_violations: int = 0


class NbdServer:
    """Serves ``exports`` (export name -> backend) over TCP and/or Unix sockets."""

    def __init__(
        self,
        exports: Mapping[str, NbdBackend] | None = None,
        *,
        max_payload: int = c.DEFAULT_MAX_PAYLOAD,
        max_in_flight: int = 64,
        max_in_flight_bytes: int = 64 * 1024 * 1024,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        handshake_idle: float | None = DEFAULT_HANDSHAKE_IDLE,
    ) -> None:
        self.exports: dict[str, NbdBackend] = {}
        self.stats: dict[str, NbdExportStats] = {}
        self.max_payload = max_payload
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = max_in_flight_bytes
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.handshake_idle = handshake_idle
        self.refused = RateLimitedEvent(
            log, "nbd: connection refused: connection limit reached", level=logging.WARNING
        )
        self.timed_out = RateLimitedEvent(log, "nbd: handshake timed out, connection closed")
        self.left_early = RateLimitedEvent(log, "nbd: client closed before choosing an export")
        self._listeners: list[asyncio.AbstractServer] = []
        self._unix_paths: list[str] = []
        self._connections: set[_NbdClientProtocol] = set()
        for name, backend in (exports or {}).items():
            self.add_export(name, backend)

    # -- exports --------------------------------------------------------------------------
    def add_export(self, name: str, backend: NbdBackend) -> None:
        """Make ``backend`` reachable under ``name`` (new connections see it at once)."""
        if len(name.encode()) > c.MAX_STRING:
            raise ValueError(f"export name longer than {c.MAX_STRING} bytes")
        if name in self.exports:
            raise ValueError(f"export {name!r} already exists")
        self.exports[name] = backend
        self.stats.setdefault(name, NbdExportStats())

    def remove_export(self, name: str) -> NbdBackend:
        """Stop serving ``name``: new clients cannot open it, connected clients are
        disconnected once their requests in flight are answered. Returns the backend."""
        backend = self.exports.pop(name)
        for conn in list(self._connections):
            if conn.export_name == name:
                conn.shutdown(f"export {name!r} removed")
        return backend

    def connections(self, export: str | None = None) -> int:
        """Number of open client connections (to ``export`` if given)."""
        return sum(1 for conn in self._connections if export is None or conn.export_name == export)

    # -- listening ------------------------------------------------------------------------
    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on TCP; returns the bound (host, port) — pass port 0 for a free one."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(self._accept, host, port, reuse_address=True)
        self._listeners.append(listener)
        sockname = listener.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def start_unix(self, path: str | os.PathLike[str]) -> str:
        """Listen on a Unix socket at ``path`` (a stale socket file is replaced)."""
        path = os.fspath(path)
        try:
            if os.path.exists(path) and not os.path.isfile(path):
                os.unlink(path)
        except OSError:
            pass
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(self._accept, path)
        self._listeners.append(listener)
        self._unix_paths.append(path)
        return path

    def _accept(self) -> asyncio.BaseProtocol:
        """Protocol for a connection just accepted: served, or refused over the limit."""
        if len(self._connections) >= self.max_connections:
            return _RefusedProtocol(self)
        return _NbdClientProtocol(self)

    async def close(self, *, timeout: float = 10.0, close_backends: bool = False) -> None:
        """Stop listening, let connections finish their requests in flight, then close them."""
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        conns = list(self._connections)
        for conn in conns:
            conn.shutdown("server closing")
        waiters = [conn.closed for conn in conns]
        if waiters:
            _done, pending = await asyncio.wait(waiters, timeout=timeout)
            for conn in conns:
                if not conn.closed.done():
                    conn.abort()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._unix_paths.clear()
        if close_backends:
            for backend in self.exports.values():
                await backend.close()

    async def __aenter__(self) -> NbdServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _RefusedProtocol(asyncio.Protocol):
    """A connection over ``max_connections``: closed at once, counted, logged rate-limited."""

    def __init__(self, server: NbdServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        transport.close()
        server = self._server
        server.refused(
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix-socket",
            limit=server.max_connections,
        )


class _NbdClientProtocol(asyncio.BufferedProtocol):
    """One client connection: socket <-> NbdServerConnection <-> backend tasks."""

    def __init__(self, server: NbdServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._core = NbdServerConnection(
            server.exports,
            max_payload=server.max_payload,
            max_in_flight=server.max_in_flight,
            max_in_flight_bytes=server.max_in_flight_bytes,
            handshake_timeout=server.handshake_timeout,
            handshake_idle=server.handshake_idle,
            now=self._loop.time(),
        )
        # counted from here, not from connection_made: accepts in one loop pass all count
        server._connections.add(self)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._transport: asyncio.Transport | None = None
        self._backend: NbdBackend | None = None
        self._stats: NbdExportStats | None = None
        self.export_name: str | None = None
        self.peer = "?"
        self._tasks: set[asyncio.Task] = set()
        self._closing = False  # soft disconnect or shutdown: no more requests
        self._reading_paused = False
        self._writing_paused = False
        self._flush_scheduled = False
        self._in_process = False
        self._stalled = False  # the core holds back buffered requests (in-flight limits)
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix-socket"
        self._flush()
        self._arm_timer()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._core.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._core.buffer_updated(nbytes)
        self._process()
        if self._timer is not None:  # handshake: the core learns when it made progress
            self._tell_time()

    def eof_received(self) -> bool:
        self._core.receive_eof()
        self._process()
        return True  # we close ourselves once the core says so

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._connections.discard(self)
        if self._stats is not None:
            self._stats.connections -= 1
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()
        self._process()

    # -- control --------------------------------------------------------------------------
    def shutdown(self, reason: str) -> None:
        """Stop taking requests; close once those in flight are answered."""
        if self._transport is None:
            return
        log.info(
            "nbd: client %s (export %r): disconnecting: %s", self.peer, self.export_name, reason
        )
        self._closing = True
        self._update_reading()
        self._close_if_idle()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- timers ---------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        """Have the loop call back when the core's timer is due (none: no callback)."""
        when = self._core.get_timer()
        if when == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = (
            None if when is None or self._transport is None
            else self._loop.call_at(when, self._timer_fired)
        )

    def _timer_fired(self) -> None:
        self._timer = self._timer_when = None
        self._tell_time()

    def _tell_time(self) -> None:
        self._core.handle_timer(self._loop.time())
        self._process()
        self._arm_timer()

    # -- events ---------------------------------------------------------------------------
    def _process(self) -> None:
        if self._in_process:  # a backend call completed eagerly inside the loop below
            return
        self._in_process = True
        try:
            self._process_events()
        finally:
            self._in_process = False

    def _process_events(self) -> None:
        core = self._core
        # While the peer does not read its replies, take no new requests (not even those
        # already buffered): replies would pile up in the transport without bound.
        while not self._closing and not self._writing_paused:
            event = core.next_event()
            if event is None:
                break
            if type(event) is Request:
                task = _start_task(self._serve(event), self._loop)
                if not task.done():
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            else:
                self._on_edge_event(event)
        self._stalled = core.throttled or self._writing_paused
        self._flush()
        self._update_reading()

    def _on_edge_event(self, event: object) -> None:
        stats = self._stats
        if isinstance(event, ExportChosen):
            self.export_name = event.name
            self._backend = event.export
            self._stats = self._server.stats.setdefault(event.name, NbdExportStats())
            self._stats.connections += 1
            log.info(
                "nbd: client %s attached to export %r (structured replies: %s)",
                self.peer, event.name, event.structured_replies,
            )
        elif isinstance(event, RequestRejected):
            if stats is not None:
                stats.errors += 1
            log.warning(
                "nbd: client %s (export %r): %s rejected with error %d: %s",
                self.peer, self.export_name, c.COMMAND_NAMES.get(event.command, event.command),
                event.error, event.reason,
            )
        elif isinstance(event, ProtocolViolation):
            if stats is not None:
                stats.protocol_violations += 1
            log.warning(
                "nbd: client %s (export %r): protocol violation, closing the connection: %s",
                self.peer, self.export_name, event.reason,
            )
            self._close_now()
        elif isinstance(event, ClientDisconnect):
            log.info("nbd: client %s (export %r): %s", self.peer, self.export_name, event.reason)
            self._closing = True
            self._close_if_idle()
        elif isinstance(event, ConnectionClosed):
            if self.export_name is None:
                self._server.left_early(peer=self.peer, during=event.during)
            else:
                log.info(
                    "nbd: client %s (export %r): peer closed the connection in %s",
                    self.peer, self.export_name, event.during,
                )
            self._close_now()
        elif isinstance(event, HandshakeTimedOut):
            self._server.timed_out(peer=self.peer, reason=event.reason)
            self._close_now()

    # -- requests -------------------------------------------------------------------------
    async def _serve(self, req: Request) -> None:
        """Run one request against the backend and queue its reply."""
        backend: NbdBackend = self._backend  # type: ignore[assignment]  # set by ExportChosen
        stats: NbdExportStats = self._stats  # type: ignore[assignment]
        core = self._core
        command = req.command
        flags = req.flags
        try:
            if command == _CMD_READ:
                data = await backend.read(req.offset, req.length)
                if len(data) != req.length:
                    raise NbdBackendError(c.EIO, f"backend returned {len(data)} bytes")
                core.reply_read(req, data)
                stats.reads += 1
                stats.read_bytes += req.length
            elif command == _CMD_WRITE:
                assert req.data is not None
                await backend.write(req.offset, req.data, fua=bool(flags & _FUA))
                core.reply_ok(req)
                stats.writes += 1
                stats.write_bytes += req.length
            elif command == _CMD_FLUSH:
                await backend.flush()
                core.reply_ok(req)
                stats.flushes += 1
            elif command == _CMD_TRIM:
                await backend.trim(req.offset, req.length)
                if flags & _FUA:
                    await backend.flush()
                core.reply_ok(req)
                stats.trims += 1
            elif command == _CMD_WRITE_ZEROES:
                may_trim = not flags & _NO_HOLE
                fua = bool(flags & _FUA)
                if flags & _FAST_ZERO:  # only accepted by the core when can_fast_zero
                    await backend.write_zeroes(
                        req.offset, req.length, may_trim=may_trim, fua=fua, fast=True
                    )
                else:
                    await backend.write_zeroes(req.offset, req.length, may_trim=may_trim, fua=fua)
                core.reply_ok(req)
                stats.zeroes += 1
            elif command == _CMD_BLOCK_STATUS:
                extents = await backend.block_status(req.offset, req.length)
                core.reply_block_status(req, extents)
            else:  # the core only emits the commands above
                raise NbdBackendError(c.EINVAL, f"unexpected command {command}")
        except NbdBackendError as exc:
            if not req.replied:
                core.reply_error(req, exc.error, exc.message)
                stats.errors += 1
        except Exception:
            log.exception(
                "nbd: client %s (export %r): backend failed %r", self.peer, self.export_name, req
            )
            if not req.replied:
                core.reply_error(req, c.EIO, "internal error in the storage backend")
                stats.errors += 1
        self._after_reply()

    def _after_reply(self) -> None:
        if self._transport is None:
            return
        if self._closing:
            self._flush()
            self._close_if_idle()
            return
        if self._stalled and not self._core.throttled:
            # a slot freed: requests already buffered may now be handed out
            self._stalled = False
            self._process()
        elif not self._flush_scheduled:
            # replies completing in the same loop iteration leave in one write
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_soon)

    # -- output and flow control ----------------------------------------------------------
    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        chunks = self._core.data_to_send()
        if chunks and self._transport is not None:
            if len(chunks) == 1:
                self._transport.write(chunks[0])
            else:
                self._transport.writelines(chunks)

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None:
            return
        pause = self._closing or self._writing_paused or self._core.throttled
        if pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _close_if_idle(self) -> None:
        if self._core.in_flight == 0:
            self._close_now()

    def _close_now(self) -> None:
        self._closing = True
        self._flush()
        if self._transport is not None:
            self._transport.close()

