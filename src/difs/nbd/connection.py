"""The server side of one NBD connection, sans-I/O.

The core is fed bytes and hands back events and bytes; it never touches a socket, a clock or
the backend. Two ways to feed it:

* ``receive_data(data)`` copies ``data`` in (tests, simple adapters); ``b""`` means EOF;
* ``get_buffer(sizehint)`` / ``buffer_updated(nbytes)`` follow ``asyncio.BufferedProtocol``:
  the transport receives straight into the core's preallocated buffer, and a large write
  payload straight into its own buffer (which becomes the request's ``data``, no copy).

Then ``next_event()`` until it returns ``None``; reply to each :class:`Request` with
``reply_ok``/``reply_read``/``reply_error``/``reply_block_status`` (in any order: replies are
matched by handle); send ``data_to_send()`` (a list of buffers, for ``transport.writelines``).

Phases, named by what the connection awaits (the whole state machine is ``_STEPS`` below)::

    EXPECT_CLIENT_FLAGS -> EXPECT_OPTION <-> SKIP_OPTION
                                 |  NBD_OPT_GO / NBD_OPT_EXPORT_NAME
                                 v
                          EXPECT_REQUEST <-> EXPECT_WRITE_PAYLOAD / SKIP_WRITE_PAYLOAD
    any phase -> CLOSED   (soft disconnect, protocol violation or EOF; one final event)

Bad input never raises: a bad request gets an error reply (and a :class:`RequestRejected`
event); a stream that cannot be trusted any more gives :class:`ProtocolViolation` and CLOSED.

Time comes in as an argument. With ``handshake_timeout`` and/or ``handshake_idle`` set (and
``now``, the adapter's clock at accept), ``get_timer()`` says when ``handle_timer(now)`` is due
while the handshake lasts; the adapter also calls ``handle_timer(now)`` after input while a
timer is set, so the core learns when the handshake made progress. A client that has not chosen
an export ``handshake_timeout`` seconds after accept, or that takes no handshake step (client
flags, one option) for ``handshake_idle`` seconds, gets :class:`HandshakeTimedOut` and CLOSED.
Once in transmission there is no timer.

Backpressure: ``next_event`` stops handing out requests while ``max_in_flight`` requests or
``max_in_flight_bytes`` of read/write payload are unanswered (``throttled`` is then true and the
adapter should stop reading from its socket). Received bytes are bounded by the receive buffer
plus at most one write payload of at most ``max_payload`` bytes.

Memory: until an export is chosen the receive buffer is small (``HANDSHAKE_BUFFER``, grown
only to hold one option of up to ``MAX_OPTION_LENGTH``); the ``recv_buffer_size`` buffer of
the transmission phase is allocated when the client enters it. A connection that never
finishes its handshake holds a few KiB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from difs.nbd import constants as c
from difs.nbd import wire
from difs.nbd.errors import LocalProtocolError
from difs.nbd.events import (
    ClientDisconnect,
    ConnectionClosed,
    Event,
    ExportChosen,
    HandshakeTimedOut,
    ProtocolViolation,
    Request,
    RequestRejected,
)
from difs.nbd.negotiation import OptionHaggler

EXPECT_CLIENT_FLAGS = "EXPECT_CLIENT_FLAGS"
EXPECT_OPTION = "EXPECT_OPTION"
SKIP_OPTION = "SKIP_OPTION"
EXPECT_REQUEST = "EXPECT_REQUEST"
EXPECT_WRITE_PAYLOAD = "EXPECT_WRITE_PAYLOAD"
SKIP_WRITE_PAYLOAD = "SKIP_WRITE_PAYLOAD"
CLOSED = "CLOSED"

_NEED_DATA = None  # a step that cannot progress without more bytes
_CONTINUE = object()  # a step consumed input but has no event to report

_REQUEST = wire.REQUEST_STRUCT
_REQUEST_SIZE = wire.REQUEST_SIZE
_OPTION_HEADER = wire.OPTION_HEADER_STRUCT
_SIMPLE = wire.SIMPLE_REPLY_STRUCT
_OFFSET_DATA = wire.OFFSET_DATA_HEADER_STRUCT
_REQUEST_MAGIC = c.REQUEST_MAGIC
_SIMPLE_MAGIC = c.SIMPLE_REPLY_MAGIC
_STRUCT_MAGIC = c.STRUCTURED_REPLY_MAGIC
_DONE = c.REPLY_FLAG_DONE
_TYPE_OFFSET_DATA = c.REPLY_TYPE_OFFSET_DATA
_CMD_READ = c.CMD_READ
_CMD_WRITE = c.CMD_WRITE
_CMD_DISC = c.CMD_DISC
_CMD_FLUSH = c.CMD_FLUSH

DEFAULT_RECV_BUFFER = 256 * 1024
HANDSHAKE_BUFFER = 4 * 1024  # receive buffer until an export is chosen
_HANDSHAKE_PHASES = frozenset((EXPECT_CLIENT_FLAGS, EXPECT_OPTION, SKIP_OPTION))
_NEVER = float("inf")
_MIN_FREE = 64 * 1024  # compact the receive buffer when less than this is free at its end


class NbdServerConnection:
    """Server side of one NBD connection (handshake, option haggling, transmission)."""

    def __init__(
        self,
        exports: Mapping[str, Any],
        *,
        max_payload: int = c.DEFAULT_MAX_PAYLOAD,
        max_in_flight: int = 64,
        max_in_flight_bytes: int = 64 * 1024 * 1024,
        recv_buffer_size: int = DEFAULT_RECV_BUFFER,
        handshake_timeout: float | None = None,
        handshake_idle: float | None = None,
        now: float = 0.0,
    ) -> None:
        if recv_buffer_size < c.MAX_OPTION_LENGTH + _OPTION_HEADER.size:
            raise ValueError("receive buffer must hold the largest accepted option")
        self.max_payload = max_payload
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = max_in_flight_bytes
        self.state = EXPECT_CLIENT_FLAGS
        self.in_flight = 0
        self.in_flight_bytes = 0
        # negotiated
        self.export_name: str | None = None
        self.export: Any = None
        self.structured_replies = False
        self.meta_contexts: dict[int, str] = {}

        self._recv_buffer_size = recv_buffer_size
        self._buf = bytearray(HANDSHAKE_BUFFER)  # the full buffer comes with transmission
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._eof = False
        self._events: deque[Event] = deque()
        self._out: list = [wire.encode_greeting()]
        self._haggler = OptionHaggler(exports, self._out, max_payload=max_payload)
        # SKIP_OPTION / SKIP_WRITE_PAYLOAD bookkeeping
        self._skip_remaining = 0
        self._skip_option = (0, 0)  # option, length
        self._rejected: tuple[int, int, int, str] | None = None  # handle, command, error, reason
        # EXPECT_WRITE_PAYLOAD bookkeeping
        self._payload: bytearray | None = None
        self._payload_mv: memoryview | None = None
        self._payload_filled = 0
        self._payload_request: Request | None = None
        # transmission parameters, fixed when the export is chosen
        self._size = 0
        self._min_block = 1
        self._allowed_flags: dict[int, int] = {}
        self._read_only = True
        self._can_fast_zero = False
        # handshake deadlines (absolute, on the adapter's clock)
        self._handshake_deadline = now + handshake_timeout if handshake_timeout else _NEVER
        self._handshake_idle = handshake_idle
        self._idle_deadline = now + handshake_idle if handshake_idle else _NEVER
        self._steps_taken = 0  # handshake steps (client flags, options), to see progress
        self._steps_seen = 0  # ... as of the last handle_timer

        self._steps = {
            EXPECT_CLIENT_FLAGS: self._step_client_flags,
            EXPECT_OPTION: self._step_option,
            SKIP_OPTION: self._step_skip_option,
            EXPECT_REQUEST: self._step_request,
            EXPECT_WRITE_PAYLOAD: self._step_write_payload,
            SKIP_WRITE_PAYLOAD: self._step_skip_write_payload,
        }

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> None:
        """Copy ``data`` into the connection; ``b""`` signals EOF from the peer."""
        if not data:
            self._eof = True
            return
        src = memoryview(data)
        while src:
            dst = self.get_buffer(len(src))
            n = min(len(dst), len(src))
            dst[:n] = src[:n]
            self.buffer_updated(n)
            src = src[n:]

    def receive_eof(self) -> None:
        self._eof = True

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes go (``asyncio.BufferedProtocol.get_buffer``)."""
        if self.state == EXPECT_WRITE_PAYLOAD:
            if self._payload_filled < self._payload_request.length:  # type: ignore[union-attr]
                return self._payload_mv[self._payload_filled :]  # type: ignore[index]
            # The payload is whole and more bytes arrive before next_event() took it: hand
            # the write out first (no request after it is parsed yet), receive the rest into
            # the receive buffer. Never an empty buffer (receive_data would spin on it).
            self._events.append(self._step_write_payload())
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = start = end = 0
        size = len(self._buf)
        if size - end < _MIN_FREE and start:
            pending = end - start
            self._buf[:pending] = self._mv[start:end]
            self._start, self._end = 0, pending
            start, end = 0, pending
        if end == size:
            # Reached in the handshake by an option longer than the small buffer, and in
            # transmission only when the adapter keeps feeding while throttled: grow (by a new
            # allocation, never in place, because a view of the old buffer may still be held).
            new = bytearray(size * 2)
            new[: end - start] = self._mv[start:end]
            self._buf, self._mv = new, memoryview(new)
            self._start, self._end = 0, end - start
            end = self._end
        return self._mv[end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == EXPECT_WRITE_PAYLOAD:
            self._payload_filled += nbytes
        else:
            self._end += nbytes

    @property
    def throttled(self) -> bool:
        """True while the in-flight limits hold back further requests."""
        return (
            self.in_flight >= self.max_in_flight
            or self.in_flight_bytes >= self.max_in_flight_bytes
        )

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> float | None:
        """When ``handle_timer`` is next due (adapter's clock), or ``None``: no timer."""
        if self.state not in _HANDSHAKE_PHASES:
            return None
        deadline = min(self._handshake_deadline, self._idle_deadline)
        return None if deadline == _NEVER else deadline

    def handle_timer(self, now: float) -> None:
        """Tell the core the time: a handshake past its deadline ends (HandshakeTimedOut)."""
        if self.state not in _HANDSHAKE_PHASES:
            return
        if self._steps_taken != self._steps_seen:
            self._steps_seen = self._steps_taken
            if self._handshake_idle:
                self._idle_deadline = now + self._handshake_idle
        if now >= self._handshake_deadline:
            reason = "no export chosen within the handshake timeout"
        elif now >= self._idle_deadline:
            reason = f"no handshake progress for {self._handshake_idle:g} s"
        else:
            return
        self.state = CLOSED
        self._events.append(HandshakeTimedOut(reason))

    # ------------------------------------------------------------------ events
    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more input (or fewer requests in flight) is needed."""
        events = self._events
        if events:
            return events.popleft()
        steps = self._steps
        while True:
            state = self.state
            if state == CLOSED:
                return None
            if state == EXPECT_REQUEST and (
                self.in_flight >= self.max_in_flight
                or self.in_flight_bytes >= self.max_in_flight_bytes
            ):
                return None
            result = steps[state]()
            if result is _CONTINUE:
                continue
            if result is _NEED_DATA:
                if self._eof:
                    self.state = CLOSED
                    return ConnectionClosed(state)
                return None
            return result

    # -- negotiation steps
    def _step_client_flags(self) -> Any:
        if self._end - self._start < 4:
            return _NEED_DATA
        (flags,) = wire.CLIENT_FLAGS_STRUCT.unpack_from(self._buf, self._start)
        self._start += 4
        if flags & ~c.KNOWN_CLIENT_FLAGS:
            return self._violation(f"unknown client flags {flags:#x}")
        self._haggler.no_zeroes = bool(flags & c.FLAG_C_NO_ZEROES)
        self._steps_taken += 1
        self.state = EXPECT_OPTION
        return _CONTINUE

    def _step_option(self) -> Any:
        start = self._start
        if self._end - start < _OPTION_HEADER.size:
            return _NEED_DATA
        magic, option, length = _OPTION_HEADER.unpack_from(self._buf, start)
        if magic != c.IHAVEOPT:
            return self._violation(f"bad option magic {magic:#x}")
        if length > c.MAX_OPTION_LENGTH:
            if option == c.OPT_EXPORT_NAME:
                return self._violation("NBD_OPT_EXPORT_NAME with an over-long export name")
            self._start = start + _OPTION_HEADER.size
            self._skip_remaining = length
            self._skip_option = (option, length)
            self.state = SKIP_OPTION
            return _CONTINUE
        begin = start + _OPTION_HEADER.size
        if self._end - begin < length:
            return _NEED_DATA
        payload = memoryview(bytes(self._mv[begin : begin + length]))
        self._start = begin + length
        self._steps_taken += 1
        event = self._haggler.handle(option, payload)
        if event is None:
            return _CONTINUE
        if isinstance(event, ExportChosen):
            self._enter_transmission(event)
        else:
            self.state = CLOSED
        return event

    def _step_skip_option(self) -> Any:
        if not self._skip_bytes():
            return _NEED_DATA
        self._haggler.refuse_too_big(*self._skip_option)
        self._steps_taken += 1
        self.state = EXPECT_OPTION
        return _CONTINUE

    def _skip_bytes(self) -> bool:
        """Discard up to ``_skip_remaining`` buffered bytes; True once all are gone."""
        take = min(self._end - self._start, self._skip_remaining)
        self._start += take
        self._skip_remaining -= take
        return self._skip_remaining == 0

    def _enter_transmission(self, chosen: ExportChosen) -> None:
        export = chosen.export
        self.export_name = chosen.name
        self.export = export
        self.structured_replies = chosen.structured_replies
        self.meta_contexts = chosen.meta_contexts
        self._size = int(export.size)
        self._min_block = max(1, int(export.block_size))
        self._read_only = bool(export.read_only)
        self._can_fast_zero = bool(getattr(export, "can_fast_zero", False))
        fua = c.CMD_FLAG_FUA if export.can_fua else 0
        df = c.CMD_FLAG_DF if self.structured_replies else 0
        allowed = {c.CMD_READ: fua | df, c.CMD_WRITE: fua, c.CMD_DISC: 0}
        if export.can_flush:
            allowed[c.CMD_FLUSH] = fua
        if export.can_trim:
            allowed[c.CMD_TRIM] = fua
        if export.can_zero:
            allowed[c.CMD_WRITE_ZEROES] = fua | c.CMD_FLAG_NO_HOLE | c.CMD_FLAG_FAST_ZERO
        if self.meta_contexts:
            allowed[c.CMD_BLOCK_STATUS] = fua | c.CMD_FLAG_REQ_ONE
        self._allowed_flags = allowed
        self._grow_for_transmission()
        self.state = EXPECT_REQUEST

    def _grow_for_transmission(self) -> None:
        """Swap the small handshake buffer for the transmission one (pending bytes kept)."""
        pending = self._end - self._start
        new = bytearray(max(self._recv_buffer_size, pending))
        new[:pending] = self._mv[self._start : self._end]
        self._buf, self._mv = new, memoryview(new)
        self._start, self._end = 0, pending

    # -- transmission steps
    def _step_request(self) -> Any:
        start = self._start
        if self._end - start < _REQUEST_SIZE:
            return _NEED_DATA
        magic, flags, command, handle, offset, length = _REQUEST.unpack_from(self._buf, start)
        if magic != _REQUEST_MAGIC:
            return self._violation(f"bad request magic {magic:#x}")
        start += _REQUEST_SIZE
        self._start = start
        error, reason = self._validate(command, flags, offset, length)

        if command == _CMD_WRITE:
            if length > self.max_payload:
                self._queue_error(handle, c.EINVAL, f"write of {length} bytes exceeds the maximum")
                return self._violation(
                    f"NBD_CMD_WRITE payload of {length} bytes exceeds the maximum "
                    f"{self.max_payload}; the stream cannot be resynchronised cheaply"
                )
            if error:
                self._rejected = (handle, command, error, reason)
                self._skip_remaining = length
                self.state = SKIP_WRITE_PAYLOAD
                return _CONTINUE
            available = self._end - start
            if available >= length:
                self._start = start + length
                request = Request(
                    command, flags, handle, offset, length,
                    memoryview(bytes(self._mv[start : start + length])),
                )
                self.in_flight += 1
                self.in_flight_bytes += length
                return request
            payload = bytearray(length)
            payload_mv = memoryview(payload)
            payload_mv[:available] = self._mv[start : self._end]
            self._start = self._end
            self._payload, self._payload_mv = payload, payload_mv
            self._payload_filled = available
            self._payload_request = Request(command, flags, handle, offset, length, payload_mv)
            self.state = EXPECT_WRITE_PAYLOAD
            return _CONTINUE

        if error:
            self._queue_error(handle, error, reason, command)
            return RequestRejected(handle, command, error, reason)
        if command == _CMD_DISC:
            self.state = CLOSED
            return ClientDisconnect("NBD_CMD_DISC")
        self.in_flight += 1
        if command == _CMD_READ:
            self.in_flight_bytes += length
        return Request(command, flags, handle, offset, length)

    def _step_write_payload(self) -> Any:
        request = self._payload_request
        if self._payload_filled < request.length:  # type: ignore[union-attr]
            return _NEED_DATA
        self._payload = self._payload_mv = self._payload_request = None
        self.state = EXPECT_REQUEST
        self.in_flight += 1
        self.in_flight_bytes += request.length  # type: ignore[union-attr]
        return request

    def _step_skip_write_payload(self) -> Any:
        if not self._skip_bytes():
            return _NEED_DATA
        handle, command, error, reason = self._rejected  # type: ignore[misc]
        self._rejected = None
        self.state = EXPECT_REQUEST
        self._queue_error(handle, error, reason, command)
        return RequestRejected(handle, command, error, reason)

    def _validate(self, command: int, flags: int, offset: int, length: int) -> tuple[int, str]:
        """(0, "") for a request the backend should see, else (wire error, reason)."""
        allowed = self._allowed_flags.get(command)
        if allowed is None:
            name = c.COMMAND_NAMES.get(command, f"command {command}")
            return c.EINVAL, f"{name} is not supported on this export"
        if flags & ~allowed:
            return c.EINVAL, f"flags {flags & ~allowed:#x} not allowed for this command"
        if command == _CMD_DISC or command == _CMD_FLUSH:
            return 0, ""
        writes = command != _CMD_READ and command != c.CMD_BLOCK_STATUS
        if writes and self._read_only:
            return c.EPERM, "export is read-only"
        if length == 0:
            return c.EINVAL, "zero-length request"
        if command == _CMD_READ and length > self.max_payload:
            return c.EINVAL, f"read of {length} bytes exceeds the maximum {self.max_payload}"
        size = self._size
        if offset + length > size:
            if command == _CMD_WRITE or command == c.CMD_WRITE_ZEROES:
                return c.ENOSPC, f"write beyond the end of the export ({size} bytes)"
            return c.EINVAL, f"request beyond the end of the export ({size} bytes)"
        block = self._min_block
        if block > 1 and command != c.CMD_BLOCK_STATUS:
            if offset % block or (length % block and offset + length != size):
                return c.EINVAL, f"request not aligned to the {block}-byte block size"
        if flags & c.CMD_FLAG_FAST_ZERO and not self._can_fast_zero:
            return c.ENOTSUP, "fast zeroing is not available on this export"
        return 0, ""

    def _violation(self, reason: str) -> ProtocolViolation:
        self.state = CLOSED
        return ProtocolViolation(reason)

    # ------------------------------------------------------------------ replies
    def _queue_error(self, handle: int, error: int, message: str, command: int = -1) -> None:
        if self.structured_replies:
            self._out.append(wire.encode_structured_error(handle, error, message))
        else:
            self._out.append(_SIMPLE.pack(_SIMPLE_MAGIC, error, handle))

    def _complete(self, request: Request) -> None:
        if request.replied:
            raise LocalProtocolError(f"{request!r} was already answered")
        request.replied = True
        self.in_flight -= 1
        command = request.command
        if command == _CMD_READ or command == _CMD_WRITE:
            self.in_flight_bytes -= request.length

    def reply_ok(self, request: Request) -> None:
        """Successful completion of anything but a read or a block status query."""
        if request.command == _CMD_READ:
            raise LocalProtocolError("a read is answered with reply_read")
        self._complete(request)
        self._out.append(_SIMPLE.pack(_SIMPLE_MAGIC, 0, request.handle))

    def reply_read(self, request: Request, data: bytes | bytearray | memoryview) -> None:
        """Successful read: ``data`` must be exactly ``request.length`` bytes."""
        if request.command != _CMD_READ:
            raise LocalProtocolError("reply_read answers reads only")
        if len(data) != request.length:
            raise LocalProtocolError(f"read returned {len(data)} bytes, expected {request.length}")
        self._complete(request)
        if self.structured_replies:
            header = _OFFSET_DATA.pack(
                _STRUCT_MAGIC, _DONE, _TYPE_OFFSET_DATA, request.handle, 8 + request.length,
                request.offset,
            )
        else:
            header = _SIMPLE.pack(_SIMPLE_MAGIC, 0, request.handle)
        self._out.append(header)
        self._out.append(data)

    def reply_error(self, request: Request, error: int, message: str = "") -> None:
        """Fail one request with an NBD wire error (EIO, ENOSPC, EINVAL, EPERM...)."""
        if error not in c.WIRE_ERRORS:
            raise LocalProtocolError(f"{error} is not an NBD error value")
        self._complete(request)
        self._queue_error(request.handle, error, message, request.command)

    def reply_block_status(self, request: Request, extents: list[tuple[int, int]]) -> None:
        """Answer NBD_CMD_BLOCK_STATUS with (length, flags) extents from ``request.offset``.

        Extents are clipped to the request (and to one with NBD_CMD_FLAG_REQ_ONE); adjacent
        extents with equal flags are merged."""
        if request.command != c.CMD_BLOCK_STATUS:
            raise LocalProtocolError("reply_block_status answers NBD_CMD_BLOCK_STATUS only")
        clipped: list[tuple[int, int]] = []
        remaining = request.length
        for length, flags in extents:
            length = min(int(length), remaining)
            if length <= 0:
                continue
            if clipped and clipped[-1][1] == flags:
                clipped[-1] = (clipped[-1][0] + length, flags)
            else:
                clipped.append((length, flags))
            remaining -= length
            if remaining == 0:
                break
        if not clipped:
            raise LocalProtocolError("block status needs at least one non-empty extent")
        if request.flags & c.CMD_FLAG_REQ_ONE:
            clipped = clipped[:1]
        self._complete(request)
        context_ids = sorted(self.meta_contexts)
        for context_id in context_ids:
            done = context_id == context_ids[-1]
            self._out.append(wire.encode_block_status(request.handle, context_id, clipped, done))

    # ------------------------------------------------------------------ output
    def data_to_send(self) -> list:
        """Buffers queued for the peer, in order (empties the queue)."""
        out = self._out
        if not out:
            return out
        self._out = []
        self._haggler.out = self._out
        return out
