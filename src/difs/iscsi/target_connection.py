"""``TargetConnection``: the sans-I/O core of one iSCSI connection on the target side.

The adapter moves bytes and timers; the core makes every protocol decision::

    conn = TargetConnection(portal=portal, sessions=sessions, now=loop.time())
    conn.receive_data(data)                  # bytes from the socket
    while (event := conn.next_event()) is not None:
        ...                                  # ScsiTask -> run it, then conn.complete_command(...)
    transport.writelines(conn.data_to_send())
    conn.get_timer() / conn.handle_timer(now)

The class is assembled from one mixin per phase:

* ``target_login.LoginPhase`` — login request handling, negotiation, CHAP, session creation;
* ``target_io.IoPath`` — SCSI commands, Data-Out/R2T collection, Data-In and responses
  (the per-I/O hot path);
* ``target_control.ControlPath`` — NOP, text (SendTargets), task management, logout, SNACK.

This module holds what they share: PDU dispatch by opcode and phase, CmdSN sequencing, output
helpers, timers and the mapping of the peer's faults to Rejects / termination (no
``RemoteProtocolError`` ever escapes to the adapter).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from typing import Any

from .config import PortalConfig
from .constants import (
    LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH,
    RESERVED_TAG,
    AsyncEvent,
    Opcode,
    RejectReason,
)
from .pdu_endpoint import PduEndpoint
from .errors import (
    ConnectionFault,
    DataDigestError,
    HeaderDigestError,
    LocalProtocolError,
    PduRejected,
    RemoteProtocolError,
)
from .events import (
    ConnectionClosed,
    DigestFailure,
    Event,
    ProtocolViolation,
    ScsiTask,
    TaskManagementRequest,
)
from .framer import Pdu, PduFramer
from .pdu import ASYNC_MESSAGE, NOP_IN, REJECT, encode_lun
from .serial import SERIAL_MASK, serial_in_window
from .session import Session, SessionTable
from .state import TARGET_LOGIN_STATES, TARGET_TRANSITIONS, Input, State, StateMachine
from .target_control import ControlPath
from .target_io import IoPath
from .target_login import LoginContext, LoginPhase

_connection_ids = itertools.count(1)


def _skip(_arg: Any) -> None:
    """Sequencer placeholder for a CmdSN consumed without a command (rejected / aborted)."""


class TargetConnection(LoginPhase, IoPath, ControlPath, PduEndpoint):
    """One TCP connection of an iSCSI target."""

    # opcode -> (handler method name, states in which the opcode is allowed)
    DISPATCH: dict[int, tuple[str, frozenset[State]]] = {
        Opcode.LOGIN_REQUEST: ("_on_login_request", TARGET_LOGIN_STATES),
        Opcode.SCSI_COMMAND: ("_on_scsi_command", frozenset({State.FULL_FEATURE})),
        Opcode.DATA_OUT: ("_on_data_out", frozenset({State.FULL_FEATURE})),
        Opcode.NOP_OUT: ("_on_nop_out", frozenset({State.FULL_FEATURE})),
        Opcode.TEXT_REQUEST: ("_on_text_request", frozenset({State.FULL_FEATURE})),
        Opcode.TASK_MGMT_REQUEST: ("_on_task_mgmt_request", frozenset({State.FULL_FEATURE})),
        Opcode.LOGOUT_REQUEST: ("_on_logout_request", frozenset({State.FULL_FEATURE})),
        Opcode.SNACK_REQUEST: ("_on_snack_request", frozenset({State.FULL_FEATURE})),
    }

    def __init__(self, *, portal: PortalConfig, sessions: SessionTable, now: float) -> None:
        self.portal = portal
        self.sessions = sessions
        self.connection_id = next(_connection_ids)
        self.session: Session | None = None
        self.cid = 0
        self.stat_sn = 0
        self.exp_stat_sn = 0
        self.header_digest = False  # active on output (Full Feature Phase only)
        self.data_digest = False
        self.send_limit = LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH  # peer's MaxRecvDataSegmentLength
        self.arrived_ns = 0  # the clock reading given with the bytes being fed
        self._machine = StateMachine(TARGET_TRANSITIONS, State.EXPECT_LOGIN_REQUEST)
        self._framer = PduFramer(LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH)
        #: CRC32C digests computed for PDUs sent, and the bytes they covered
        self.digests_sent = 0
        self.digest_bytes_sent = 0
        self._events: deque[Event] = deque()
        self._out: list[bytes | memoryview] = []
        self._closed = False
        self._handlers: dict[int, Callable[[Pdu], None]] = {}
        self._now = now
        self._login_deadline: float | None = now + portal.login_timeout
        self._login: LoginContext | None = LoginContext()
        # full feature phase bookkeeping (see target_io / target_control)
        self._tasks: dict[int, ScsiTask] = {}
        self._writes: dict[int, Any] = {}
        #: bytes of Data-Out buffers held for writes still collecting data (target_io bounds it)
        self.write_buffered = 0
        self._r2t_owner: dict[int, Any] = {}  # TTT -> write state
        self._recently_aborted: deque[int] = deque(maxlen=256)
        self._next_ttt = 1
        self._text: Any = None
        self._ping_ttt: int | None = None
        self._ping_deadline: float | None = None
        self._next_ping: float | None = None
        self._set_handlers()

    # ------------------------------------------------------------------ public API

    def receive_data(self, data: bytes | bytearray | memoryview, *, arrived_ns: int = 0) -> None:
        """Feed bytes received from the transport (``arrived_ns``: the adapter's clock when
        they arrived, stamped on the commands they carry as ``ScsiTask.arrived``)."""
        if self._closed:
            return
        self.arrived_ns = arrived_ns
        framer = self._framer
        framer.feed(data)
        while not self._closed:
            pdu = None
            try:
                pdu = framer.next_pdu()
                if pdu is None:
                    return
                handler = self._handlers.get(pdu.opcode)
                if handler is None:
                    self._unexpected_pdu(pdu)
                else:
                    handler(pdu)
            except DataDigestError as exc:
                self._on_data_digest_error(exc.pdu)  # type: ignore[arg-type]
            except PduRejected as exc:
                self._reject(exc, pdu)
            except HeaderDigestError as exc:
                self._events.append(DigestFailure("header"))
                self._fault(exc, None)
            except RemoteProtocolError as exc:
                self._fault(exc, pdu)

    def get_timer(self) -> float | None:
        if self._closed:
            return None
        if self._login_deadline is not None:
            return self._login_deadline
        if self._ping_deadline is not None:
            return self._ping_deadline
        return self._next_ping

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self._closed:
            return
        if self._login_deadline is not None:
            if now >= self._login_deadline:
                self._machine.process(Input.TIMEOUT)
                self._terminate("login timeout")
            return
        if self._ping_deadline is not None and now >= self._ping_deadline:
            self._machine.process(Input.TIMEOUT)
            self._terminate("NOP-In ping timeout: initiator did not answer")
            return
        if self._next_ping is not None and now >= self._next_ping and self._ping_ttt is None:
            self._send_ping(now)

    def close(self) -> None:
        """The transport is gone: abort this connection's tasks, drop it from its session."""
        if self._closed and self._machine.state is State.CLOSED:
            return
        if self._machine.state is not State.CLOSED:
            self._machine.process(Input.TRANSPORT_LOST)
        self._closed = True
        self._handlers = {}
        self._release_resources()

    def complete_command(self, task: ScsiTask, *, status: int, data_in: bytes | memoryview = b"",
                         sense: bytes = b"", transfer_length: int | None = None) -> None:
        """Answer a ScsiTask (see ``IoPath._complete_command``). Completions of tasks that were
        aborted, or of a closed connection, are ignored."""
        if task.state != 1 or self._closed:  # 1: ScsiTask.DELIVERED
            return
        if task.connection_id != self.connection_id:
            raise LocalProtocolError("task belongs to another connection")
        self._complete_command(task, status, data_in, sense, transfer_length)

    def complete_task_management(self, event: TaskManagementRequest, *, response: int) -> None:
        """Answer a TaskManagementRequest with a TmfResponse code."""
        if self._closed:
            return
        self._complete_task_management(event, response)

    def send_async_event(self, event: int, *, lun: int = 0, parameter1: int = 0,
                         parameter2: int = 0, parameter3: int = 0, sense: bytes = b"",
                         data: bytes = b"") -> None:
        """Send an Asynchronous Message (RFC 7143 11.9), e.g. a SCSI asynchronous event with
        ``sense`` or AsyncEvent.LOGOUT_REQUESTED (see ``request_logout``)."""
        if self._closed or self._machine.state is not State.FULL_FEATURE:
            raise LocalProtocolError("asynchronous messages need Full Feature Phase")
        expcmdsn, maxcmdsn = self._window()
        segment = (len(sense).to_bytes(2, "big") + sense + data) if (sense or data) else b""
        self._push(ASYNC_MESSAGE.pack(0x32, 0x80, 0, len(segment), encode_lun(lun), RESERVED_TAG,
                                      0, self._next_stat_sn(), expcmdsn, maxcmdsn, event, 0,
                                      parameter1, parameter2, parameter3), segment)

    def request_logout(self, seconds: int = 0) -> None:
        """Ask the initiator to log out within ``seconds`` (AsyncEvent 1, Parameter3)."""
        self.send_async_event(AsyncEvent.LOGOUT_REQUESTED, parameter3=seconds)

    # ------------------------------------------------------------------ dispatch helpers

    def _set_handlers(self) -> None:
        state = self._machine.state
        self._handlers = {
            opcode: getattr(self, name)
            for opcode, (name, states) in self.DISPATCH.items() if state in states
        }

    def _unexpected_pdu(self, pdu: Pdu) -> None:
        state = self._machine.state
        if state in TARGET_LOGIN_STATES:
            self._login_unexpected_pdu(pdu)
        elif pdu.opcode == Opcode.LOGIN_REQUEST:
            self._machine.process(Input.LOGIN_PDU_IN_FULL_FEATURE)  # raises ConnectionFault
        elif pdu.opcode >= 0x20:
            raise ConnectionFault(f"target opcode 0x{pdu.opcode:02x} sent by the initiator")
        else:
            raise PduRejected(f"opcode 0x{pdu.opcode:02x} not supported",
                              reject_reason=RejectReason.COMMAND_NOT_SUPPORTED)

    # ------------------------------------------------------------------ CmdSN sequencing

    def _sequence(self, cmdsn: int, immediate: bool, handler: Callable[[Any], None],
                  argument: Any) -> bool:
        """Run ``handler(argument)`` in CmdSN order (RFC 7143 4.2.2.1). Immediate commands run
        at once; early ones wait in ``session.pending``; ones outside the window are dropped
        (returns False)."""
        session = self.session
        assert session is not None
        if immediate:
            handler(argument)
            return True
        exp = session.exp_cmd_sn
        if cmdsn == exp:
            session.exp_cmd_sn = (exp + 1) & SERIAL_MASK
            handler(argument)
            if session.pending:
                self._drain(session)
            return True
        if (serial_in_window(cmdsn, (exp + 1) & SERIAL_MASK, session.max_cmd_sn)
                and cmdsn not in session.pending):
            session.pending[cmdsn] = (handler, argument)
            return True
        self._events.append(ProtocolViolation(
            f"CmdSN {cmdsn} outside window {exp}..{session.max_cmd_sn}: dropped"))
        return False

    @staticmethod
    def _drain(session: Session) -> None:
        pending = session.pending
        while pending:
            entry = pending.pop(session.exp_cmd_sn, None)
            if entry is None:
                return
            session.exp_cmd_sn = (session.exp_cmd_sn + 1) & SERIAL_MASK
            handler, argument = entry
            handler(argument)

    def _consume_cmdsn(self, cmdsn: int, immediate: bool) -> None:
        """Account a CmdSN whose command is rejected, so later commands are not stuck."""
        if self.session is not None and not immediate:
            self._sequence(cmdsn, False, _skip, None)

    # ------------------------------------------------------------------ output helpers

    def _window(self) -> tuple[int, int]:
        session = self.session
        if session is None:
            login = self._login
            if login is not None and login.existing is not None:
                session = login.existing  # a connection joining an existing session
            else:
                cmdsn = login.first_cmdsn if login is not None else 0
                return cmdsn, (cmdsn + self.portal.command_window - 1) & SERIAL_MASK
        return session.exp_cmd_sn, session.max_cmd_sn

    def _next_stat_sn(self) -> int:
        statsn = self.stat_sn
        self.stat_sn = (statsn + 1) & SERIAL_MASK
        return statsn

    def _new_ttt(self) -> int:
        ttt = self._next_ttt
        self._next_ttt = (ttt + 1) & 0x7FFFFFFF or 1
        return ttt

    # ------------------------------------------------------------------ faults

    def _reject(self, exc: RemoteProtocolError, pdu: Pdu | None) -> None:
        """Answer a bad PDU with a Reject carrying its header; the connection continues."""
        self._events.append(ProtocolViolation(str(exc), int(exc.reject_reason)))
        if pdu is None or self._machine.state is not State.FULL_FEATURE:
            self._fault(exc, pdu)
            return
        self._send_reject(exc.reject_reason, pdu.header)

    def _send_reject(self, reason: int, header: bytes | memoryview) -> None:
        expcmdsn, maxcmdsn = self._window()
        self._push(REJECT.pack(0x3F, 0x80, reason, 0, 48, RESERVED_TAG, self._next_stat_sn(),
                               expcmdsn, maxcmdsn, 0), bytes(header[:48]))

    def _fault(self, exc: RemoteProtocolError, pdu: Pdu | None) -> None:
        """End the connection for a protocol violation (a Reject goes out first in FFP)."""
        state = self._machine.state
        if state in TARGET_LOGIN_STATES and not isinstance(exc, ConnectionFault):
            self._login_fault(exc)
            return
        self._events.append(ProtocolViolation(str(exc), int(exc.reject_reason)))
        if pdu is not None and state is State.FULL_FEATURE:
            self._send_reject(exc.reject_reason, pdu.header)
        if self._machine.state is not State.CLOSED:
            self._machine.process(Input.FAULT)
        self._terminate(str(exc))

    def _on_data_digest_error(self, pdu: Pdu) -> None:
        itt = int.from_bytes(pdu.header[16:20], "big")
        self._events.append(DigestFailure("data", itt))
        if pdu.opcode == Opcode.DATA_OUT:
            # RFC 7143 7.8: Reject it; at ErrorRecoveryLevel 0 the task then ends with
            # CHECK CONDITION (PROTOCOL SERVICE CRC ERROR) once its data has arrived.
            self._send_reject(RejectReason.DATA_DIGEST_ERROR, pdu.header)
            self._on_data_out(pdu, corrupt=True)
            return
        # A command PDU whose data is corrupt cannot be retried at ERL 0.
        self._fault(ConnectionFault("data digest error on a command PDU",
                                    reject_reason=RejectReason.DATA_DIGEST_ERROR), pdu)

    def _terminate(self, reason: str) -> None:
        """Close from the core's side: release everything, tell the adapter."""
        if self._closed:
            return
        self._closed = True
        self._handlers = {}
        self._release_resources()
        self._events.append(ConnectionClosed(reason))

    def _release_resources(self) -> None:
        login = self._login
        if login is not None and login.chap is not None:
            login.chap.forget()
        self._login = None
        self._login_deadline = None
        self._ping_deadline = self._next_ping = None
        self._abort_connection_tasks()
        session = self.session
        if session is not None and session.connections.get(self.cid) is self:
            del session.connections[self.cid]
            if not session.connections:
                self.sessions.remove(session)

    # ------------------------------------------------------------------ NOP-In keepalive

    def _start_keepalive(self) -> None:
        interval = self.portal.nop_interval
        self._next_ping = None if interval is None else self._now + interval

    def _send_ping(self, now: float) -> None:
        ttt = self._new_ttt()
        self._ping_ttt = ttt
        self._ping_deadline = now + self.portal.nop_timeout
        self._next_ping = None
        expcmdsn, maxcmdsn = self._window()
        self._push(NOP_IN.pack(0x20, 0x80, 0, 0, 0, RESERVED_TAG, ttt, self.stat_sn, expcmdsn,
                               maxcmdsn))

    def _ping_answered(self, ttt: int) -> None:
        if ttt == self._ping_ttt:
            self._ping_ttt = None
            self._ping_deadline = None
            interval = self.portal.nop_interval
            self._next_ping = None if interval is None else self._now + interval
