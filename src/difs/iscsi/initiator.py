"""``InitiatorConnection``: the sans-I/O core of one iSCSI connection on the initiator side.

Same shape as the target core::

    conn = InitiatorConnection(config=InitiatorConfig(...), now=loop.time())  # queues login
    transport.writelines(conn.data_to_send())
    conn.receive_data(data); event = conn.next_event()  # LoginSucceeded, CommandComplete, ...
    itt = conn.submit_command(lun, cdb, data_out=..., expected_in_length=..., now=loop.time())
    conn.get_timer() / conn.handle_timer(now)  # keepalive, command timeouts, ABORT TASK

Login lives in ``initiator_login``, the clocks in ``initiator_timers``; this module is the
Full Feature Phase: CmdSN numbering and
the target's window (commands beyond MaxCmdSN wait in a local queue), immediate and unsolicited
data, Data-Out answering R2Ts, Data-In collection, SCSI responses, NOP ping both ways, text
(SendTargets), task management, logout and the target's Reject / Async messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .config import InitiatorConfig
from .constants import (
    LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH,
    RESERVED_TAG,
    LogoutReason,
    Opcode,
    TaskAttribute,
    TmfFunction,
    TmfResponse,
)
from .pdu_endpoint import PduEndpoint
from .errors import (
    ConnectionFault,
    DataDigestError,
    HeaderDigestError,
    LocalProtocolError,
    RemoteProtocolError,
    TextError,
)
from .events import ConnectionClosed, DigestFailure, LogoutComplete, ProtocolViolation
from .framer import Pdu, PduFramer
from .initiator_events import (
    AsyncEventReceived,
    CommandAborted,
    CommandComplete,
    CommandRejected,
    DiscoveryResult,
    InitiatorSession,
    PingComplete,
    RejectReceived,
    TaskManagementComplete,
    TextResult,
)
from .initiator_login import InitiatorLogin, InitiatorLoginContext
from .initiator_timers import NO_TIMERS, InitiatorTimers, InitiatorWatch
from .pdu import (
    ASYNC_MESSAGE,
    DATA_IN,
    DATA_OUT,
    LOGOUT_REQUEST,
    LOGOUT_RESPONSE,
    NOP_IN,
    NOP_OUT,
    R2T,
    REJECT,
    SCSI_COMMAND,
    SCSI_RESPONSE,
    TASK_MGMT_REQUEST,
    TASK_MGMT_RESPONSE,
    TEXT_REQUEST,
    TEXT_RESPONSE,
    decode_lun,
    encode_command_ahs,
    encode_lun,
    pull_sense_segment,
)
from .serial import SERIAL_MASK, serial_gt, serial_lt
from .state import INITIATOR_LOGIN_STATES, INITIATOR_TRANSITIONS, Input, State, StateMachine
from .text import TextAccumulator, encode_text, split_text

_pack_command = SCSI_COMMAND.pack
_pack_data_out = DATA_OUT.pack
_unpack_data_in = DATA_IN.unpack_from
_unpack_r2t = R2T.unpack_from
_unpack_response = SCSI_RESPONSE.unpack_from


class _Command:
    """An outstanding SCSI command on the initiator side."""

    __slots__ = ("itt", "lun_field", "cmdsn", "data_out", "read_length", "buffer", "parts",
                 "received", "next_datasn", "single", "header", "ahs", "immediate_length",
                 "immediate", "unsolicited", "issued")

    def __init__(self, itt: int, lun_field: int, data_out: memoryview | None,
                 read_length: int, issued: float) -> None:
        self.itt = itt
        self.issued = issued  # when it was submitted (its command timeout counts from here)
        self.lun_field = lun_field
        self.cmdsn = 0
        self.data_out = data_out
        self.read_length = read_length
        self.buffer: bytearray | None = None  # Data-In that arrived out of offset order
        self.parts: list[memoryview] | None = None  # Data-In segments in offset order
        self.received = 0
        self.next_datasn = 0
        self.single: memoryview | None = None  # the only Data-In segment (no copy)
        self.header = b""
        self.ahs = b""
        self.immediate_length = 0
        self.immediate = False
        self.unsolicited = 0


class InitiatorConnection(InitiatorLogin, InitiatorWatch, PduEndpoint):
    """One TCP connection of an iSCSI initiator. ``timers``: keepalive and command timeouts
    (default: neither; see :mod:`difs.iscsi.initiator_timers`)."""

    DISPATCH: dict[int, tuple[str, frozenset[State]]] = {
        Opcode.LOGIN_RESPONSE: ("_on_login_response", INITIATOR_LOGIN_STATES),
        Opcode.DATA_IN: ("_on_data_in", frozenset({State.FULL_FEATURE,
                                                   State.EXPECT_LOGOUT_RESPONSE})),
        Opcode.SCSI_RESPONSE: ("_on_scsi_response", frozenset({State.FULL_FEATURE,
                                                               State.EXPECT_LOGOUT_RESPONSE})),
        Opcode.R2T: ("_on_r2t", frozenset({State.FULL_FEATURE, State.EXPECT_LOGOUT_RESPONSE})),
        Opcode.NOP_IN: ("_on_nop_in", frozenset({State.FULL_FEATURE,
                                                 State.EXPECT_LOGOUT_RESPONSE})),
        Opcode.TEXT_RESPONSE: ("_on_text_response", frozenset({State.FULL_FEATURE})),
        Opcode.TASK_MGMT_RESPONSE: ("_on_tmf_response",
                                    frozenset({State.FULL_FEATURE,
                                               State.EXPECT_LOGOUT_RESPONSE})),
        Opcode.LOGOUT_RESPONSE: ("_on_logout_response",
                                 frozenset({State.EXPECT_LOGOUT_RESPONSE})),
        Opcode.REJECT: ("_on_reject", frozenset({State.FULL_FEATURE,
                                                 State.EXPECT_LOGOUT_RESPONSE})),
        Opcode.ASYNC_MESSAGE: ("_on_async", frozenset({State.FULL_FEATURE,
                                                       State.EXPECT_LOGOUT_RESPONSE})),
    }

    def __init__(self, *, config: InitiatorConfig, now: float,
                 timers: InitiatorTimers = NO_TIMERS) -> None:
        self.config = config
        self.session: InitiatorSession | None = None
        self.cmd_sn = config.initial_cmdsn & SERIAL_MASK
        self.exp_cmd_sn = self.cmd_sn
        self.max_cmd_sn = self.cmd_sn
        self.exp_stat_sn = 0
        self.header_digest = False
        self.data_digest = False
        self.send_limit = LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH
        self.first_burst_length = 65536
        self.max_burst_length = 262144
        self.immediate_data = True
        self.initial_r2t = True
        self._machine = StateMachine(INITIATOR_TRANSITIONS, State.EXPECT_SECURITY_RESPONSE)
        self._framer = PduFramer(LOGIN_MAX_RECV_DATA_SEGMENT_LENGTH)
        #: CRC32C digests computed for PDUs sent, and the bytes they covered
        self.digests_sent = 0
        self.digest_bytes_sent = 0
        self._events: deque = deque()
        self._out: list[bytes | memoryview] = []
        self._closed = False
        self._handlers: dict[int, Callable[[Pdu], None]] = {}
        self._now = now
        self._login_deadline: float | None = now + config.login_timeout
        self._next_itt = 1
        self._login_itt = self._allocate_itt()
        self._commands: dict[int, _Command] = {}
        self._waiting: deque[_Command] = deque()  # beyond MaxCmdSN
        self._pings: dict[int, float] = {}
        self._text: dict[int, tuple[str, TextAccumulator]] = {}
        self._tmf: dict[int, tuple[int, int, int]] = {}  # itt -> (function, lun, ref itt)
        self._logout_itt: int | None = None
        self._login: InitiatorLoginContext | None = InitiatorLoginContext()
        self._start_timers(timers, now)
        self._set_handlers()
        self._start_login()

    # ------------------------------------------------------------------ adapter API

    @property
    def outstanding(self) -> int:
        return len(self._commands) + len(self._waiting)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            return
        self._heard = True
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
                    raise ConnectionFault(
                        f"unexpected opcode 0x{pdu.opcode:02x} in state {self.state.name}")
                handler(pdu)
            except DataDigestError as exc:
                header = getattr(exc.pdu, "header", None)
                self._events.append(DigestFailure(
                    "data", int.from_bytes(header[16:20], "big") if header is not None else None))
                self._fault(ConnectionFault(f"data digest error: {exc}"))
            except HeaderDigestError as exc:
                self._events.append(DigestFailure("header"))
                self._fault(exc)
            except RemoteProtocolError as exc:
                if self._login is not None:
                    self._login_failed(exc, pdu)
                else:
                    self._fault(exc)

    def close(self) -> None:
        if self._machine.state is not State.CLOSED:
            self._machine.process(Input.TRANSPORT_LOST)
        self._closed = True
        self._handlers = {}

    # ------------------------------------------------------------------ commands

    def submit_command(self, lun: int, cdb: bytes, *, data_out: bytes | memoryview | None = None,
                       expected_in_length: int = 0, attr: int = TaskAttribute.SIMPLE,
                       immediate: bool = False, now: float | None = None) -> int:
        """Queue a SCSI command; returns its ITT. A command with both ``data_out`` and
        ``expected_in_length`` is bidirectional. ``now``: the current time, from which its
        command timeout counts (without it, the time of the last ``handle_timer``)."""
        self._require_full_feature()
        itt = self._allocate_itt()
        out = None
        if data_out is not None and len(data_out):
            out = data_out if type(data_out) is memoryview else memoryview(data_out)
        command = _Command(itt, encode_lun(lun), out, expected_in_length,
                           self._now if now is None else now)
        write = out is not None
        read = expected_in_length > 0
        edtl = len(out) if write else expected_in_length
        flags = (0x40 if read else 0) | (0x20 if write else 0) | (attr & 7)
        cdb16, ahs = encode_command_ahs(cdb, expected_in_length if read and write else None)
        immediate_length = 0
        unsolicited = 0
        if write:
            if self.immediate_data:
                immediate_length = min(edtl, self.first_burst_length, self.send_limit)
            if not self.initial_r2t:
                unsolicited = min(edtl, self.first_burst_length)
        if unsolicited <= immediate_length:
            flags |= 0x80  # no unsolicited Data-Out follows
        command.immediate_length = immediate_length
        command.unsolicited = unsolicited
        command.immediate = immediate
        command.header = (flags, edtl, cdb16)
        command.ahs = ahs
        self._commands[itt] = command
        if immediate or not serial_gt(self.cmd_sn, self.max_cmd_sn):
            self._send_command(command)
        else:
            self._waiting.append(command)
        return itt

    def _send_command(self, command: _Command) -> None:
        flags, edtl, cdb16 = command.header
        cmdsn = self.cmd_sn
        command.cmdsn = cmdsn
        if command.immediate:
            opcode = 0x41
        else:
            opcode = 0x01
            self.cmd_sn = (cmdsn + 1) & SERIAL_MASK
        out = command.data_out
        n = command.immediate_length
        data = out[:n] if n else b""
        ahs = command.ahs
        header = _pack_command(opcode, flags, 0, (len(ahs) >> 2) << 24 | n, command.lun_field,
                               command.itt, edtl, cmdsn, self.exp_stat_sn, cdb16)
        self._push(header + ahs if ahs else header, data)
        if command.unsolicited > n:
            self._send_data_out(command, RESERVED_TAG, n, command.unsolicited - n)

    def _send_data_out(self, command: _Command, ttt: int, offset: int, length: int) -> None:
        out = command.data_out
        end = offset + length
        segment = self.send_limit
        datasn = 0
        push = self._push
        while offset < end:
            size = min(segment, end - offset)
            last = offset + size == end
            push(_pack_data_out(0x05, 0x80 if last else 0, 0, size, command.lun_field,
                                command.itt, ttt, 0, self.exp_stat_sn, 0, datasn, offset),
                 out[offset:offset + size])
            offset += size
            datasn += 1

    def _on_r2t(self, pdu: Pdu) -> None:
        (_op, _f, _r, _ad, _lun, itt, ttt, statsn, expcmdsn, maxcmdsn, _r2tsn, offset,
         length) = _unpack_r2t(pdu.header)
        self._update_window(expcmdsn, maxcmdsn)
        command = self._commands.get(itt)
        if command is None or command.data_out is None:
            raise ConnectionFault(f"R2T for unknown write ITT 0x{itt:x}")
        if offset + length > len(command.data_out) or length == 0:
            raise ConnectionFault("R2T outside the command's data")
        self._send_data_out(command, ttt, offset, length)

    def _on_data_in(self, pdu: Pdu) -> None:
        (_op, flags, _r, status, _ad, _lun, itt, _ttt, statsn, expcmdsn, maxcmdsn, datasn, offset,
         residual) = _unpack_data_in(pdu.header)
        self._update_window(expcmdsn, maxcmdsn)
        command = self._commands.get(itt)
        if command is None:
            raise ConnectionFault(f"Data-In for unknown ITT 0x{itt:x}")
        data = pdu.data
        n = len(data)
        if datasn != command.next_datasn or offset + n > command.read_length:
            raise ConnectionFault(f"Data-In out of order/bounds (ITT 0x{itt:x})")
        command.next_datasn = datasn + 1
        if offset == 0 and command.received == 0 and flags & 0x01:
            command.single = data  # the whole read in one PDU: no copy
        elif offset == command.received and command.buffer is None:
            # in offset order (DataPDUInOrder): keep the segments, join them once at the end
            # (no zero-filled buffer of the whole length, one copy instead of two)
            if command.parts is None:
                command.parts = [data]
            else:
                command.parts.append(data)
        else:
            buffer = command.buffer
            if buffer is None:
                buffer = command.buffer = bytearray(command.read_length)
                if command.parts:
                    joined = b"".join(command.parts)
                    buffer[:len(joined)] = joined
                    command.parts = None
            buffer[offset:offset + n] = data
        command.received += n
        if flags & 0x01:
            self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
            self._finish_command(command, status, b"", residual, bool(flags & 0x04),
                                 bool(flags & 0x02), 0)

    def _on_scsi_response(self, pdu: Pdu) -> None:
        (_op, flags, response, status, _ad, _r, itt, _snack, statsn, expcmdsn, maxcmdsn,
         _expdatasn, bidi_residual, residual) = _unpack_response(pdu.header)
        self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
        self._update_window(expcmdsn, maxcmdsn)
        command = self._commands.get(itt)
        if command is None:
            raise ConnectionFault(f"SCSI Response for unknown ITT 0x{itt:x}")
        sense = pull_sense_segment(pdu.data) if len(pdu.data) else b""
        if command.data_out is not None and command.read_length:
            # bidirectional: report the read residual
            self._finish_command(command, status, sense, bidi_residual, bool(flags & 0x10),
                                 bool(flags & 0x08), response)
        else:
            self._finish_command(command, status, sense, residual, bool(flags & 0x04),
                                 bool(flags & 0x02), response)

    def _finish_command(self, command: _Command, status: int, sense: bytes, residual: int,
                        overflow: bool, underflow: bool, response: int) -> None:
        del self._commands[command.itt]
        if command.single is not None:
            data: bytes | memoryview = command.single
        elif command.parts is not None:
            data = b"".join(command.parts)
        elif command.buffer is not None:
            length = command.read_length - residual if underflow else command.read_length
            data = memoryview(command.buffer)[:max(0, min(length, command.received))]
        else:
            data = b""
        self._events.append(CommandComplete(command.itt, status, data, sense, residual, overflow,
                                            underflow, response))

    # ------------------------------------------------------------------ NOP

    def ping(self, data: bytes = b"", *, timeout: float | None = None,
             now: float | None = None) -> int:
        """Send a NOP-Out ping; a PingComplete event answers it. ``now`` is the current time
        (the deadline is ``now + timeout``; without it, the time of the last ``handle_timer``)."""
        self._require_full_feature()
        if now is not None:
            self._now = now
        itt = self._allocate_itt()
        self._pings[itt] = self._now + (self.config.nop_timeout if timeout is None else timeout)
        expcmdsn = self.cmd_sn
        self._push(NOP_OUT.pack(0x40, 0x80, 0, len(data), 0, itt, RESERVED_TAG, expcmdsn,
                                self.exp_stat_sn), data)
        return itt

    def _on_nop_in(self, pdu: Pdu) -> None:
        (_op, _f, _r, _ad, lun, itt, ttt, statsn, expcmdsn,
         maxcmdsn) = NOP_IN.unpack_from(pdu.header)
        self._update_window(expcmdsn, maxcmdsn)
        if itt != RESERVED_TAG:
            self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
            if self._pings.pop(itt, None) is not None:
                self._events.append(PingComplete(itt, bytes(pdu.data)))
            return
        if ttt != RESERVED_TAG:  # the target pings us: answer with its TTT, immediately
            self._push(NOP_OUT.pack(0x40, 0x80, 0, 0, lun, RESERVED_TAG, ttt, self.cmd_sn,
                                    self.exp_stat_sn))

    # ------------------------------------------------------------------ text / discovery

    def send_targets(self, value: str = "All") -> int:
        """SendTargets=<value>; a DiscoveryResult event answers it."""
        return self.text_request([("SendTargets", value)])

    def text_request(self, pairs: list[tuple[str, str]]) -> int:
        """Send a text request (split with the C bit when longer than the target accepts)."""
        self._require_full_feature()
        itt = self._allocate_itt()
        kind = "sendtargets" if pairs and pairs[0][0] == "SendTargets" else "text"
        pieces = deque(split_text(encode_text(pairs), min(self.send_limit, 8192)))
        self._text[itt] = (kind, TextAccumulator(), pieces)
        self._send_text_piece(itt, RESERVED_TAG, pieces)
        return itt

    def _send_text_piece(self, itt: int, ttt: int, pieces: deque[bytes]) -> None:
        """Send the next piece of a request; C=1 while more follow (each waits for the
        target's empty acknowledgement carrying its TTT)."""
        piece = pieces.popleft()
        flags = 0x40 if pieces else 0x80
        self._push(TEXT_REQUEST.pack(0x44, flags, 0, len(piece), 0, itt, ttt, self.cmd_sn,
                                     self.exp_stat_sn), piece)

    def _on_text_response(self, pdu: Pdu) -> None:
        (_op, flags, _r, _ad, _lun, itt, ttt, statsn, expcmdsn,
         maxcmdsn) = TEXT_RESPONSE.unpack_from(pdu.header)
        self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
        self._update_window(expcmdsn, maxcmdsn)
        entry = self._text.get(itt)
        if entry is None:
            raise ConnectionFault(f"Text Response for unknown ITT 0x{itt:x}")
        kind, accumulator, pieces = entry
        final = bool(flags & 0x80)
        cont = bool(flags & 0x40)
        if pieces:  # the target acknowledged a piece of our request: send the next one
            if final or cont or len(pdu.data):
                raise ConnectionFault("Text Response to a continued request carries data")
            self._send_text_piece(itt, ttt, pieces)
            return
        try:
            pairs = accumulator.feed(pdu.data, more=cont or not final)
        except TextError as exc:
            raise ConnectionFault(f"bad text response: {exc}") from None
        if pairs is None:
            if cont or ttt != RESERVED_TAG:  # fetch the next piece
                self._push(TEXT_REQUEST.pack(0x44, 0x80, 0, 0, 0, itt, ttt, self.cmd_sn,
                                             self.exp_stat_sn))
            return
        del self._text[itt]
        if kind == "sendtargets":
            targets: dict[str, list[str]] = {}
            current: list[str] | None = None
            for key, value in pairs:
                if key == "TargetName":
                    current = targets.setdefault(value, [])
                elif key == "TargetAddress" and current is not None:
                    current.append(value)
            self._events.append(DiscoveryResult(itt, targets))
        else:
            self._events.append(TextResult(itt, pairs))

    # ------------------------------------------------------------------ task management

    def task_management(self, function: int, *, lun: int = 0,
                        referenced_itt: int = RESERVED_TAG) -> int:
        """Send a task management request (immediate); TaskManagementComplete answers it."""
        self._require_full_feature()
        itt = self._allocate_itt()
        refcmdsn = 0
        if function == TmfFunction.ABORT_TASK:
            command = self._commands.get(referenced_itt)
            if command is not None:
                refcmdsn = command.cmdsn
                lun = decode_lun(command.lun_field)
        self._tmf[itt] = (function, lun, referenced_itt)
        self._push(TASK_MGMT_REQUEST.pack(0x42, 0x80 | function, 0, 0, encode_lun(lun), itt,
                                          referenced_itt, self.cmd_sn, self.exp_stat_sn, refcmdsn,
                                          0))
        return itt

    def abort_task(self, itt: int) -> int:
        return self.task_management(TmfFunction.ABORT_TASK, referenced_itt=itt)

    def _on_tmf_response(self, pdu: Pdu) -> None:
        (_op, _f, response, _r, _ad, _l, itt, _x, statsn, expcmdsn,
         maxcmdsn) = TASK_MGMT_RESPONSE.unpack_from(pdu.header)
        self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
        self._update_window(expcmdsn, maxcmdsn)
        request = self._tmf.pop(itt, None)
        if request is None:
            raise ConnectionFault(f"TMF Response for unknown ITT 0x{itt:x}")
        function, lun, referenced_itt = request
        if response == TmfResponse.FUNCTION_COMPLETE:
            if function == TmfFunction.ABORT_TASK:
                victims = [referenced_itt] if referenced_itt in self._commands else []
            elif function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
                victims = list(self._commands)
            elif function in (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET,
                              TmfFunction.LOGICAL_UNIT_RESET):
                victims = [i for i, c in self._commands.items()
                           if decode_lun(c.lun_field) == lun]
            else:
                victims = []
            aborting = self._aborting
            for victim in victims:
                command = self._commands.pop(victim)
                if command in self._waiting:
                    self._waiting.remove(command)
                self._events.append(CommandAborted(victim, victim in aborting))
        self._events.append(TaskManagementComplete(itt, response))
        if function == TmfFunction.ABORT_TASK and self._aborting:
            self._abort_answered(itt, referenced_itt, response)

    # ------------------------------------------------------------------ logout

    def logout(self, reason: int = LogoutReason.CLOSE_SESSION) -> int:
        """Send a Logout Request (immediate); LogoutComplete + ConnectionClosed answer it."""
        self._require_full_feature()
        itt = self._allocate_itt()
        self._logout_itt = itt
        self._push(LOGOUT_REQUEST.pack(0x46, 0x80 | reason, 0, 0, itt, self.config.cid,
                                       self.cmd_sn, self.exp_stat_sn))
        self._machine.process(Input.LOGOUT_SENT)
        self._set_handlers()
        return itt

    def _on_logout_response(self, pdu: Pdu) -> None:
        (_op, _f, response, _r, _ad, itt, statsn, expcmdsn, maxcmdsn, _t2w,
         _t2r) = LOGOUT_RESPONSE.unpack_from(pdu.header)
        self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
        if itt != self._logout_itt:
            raise ConnectionFault("Logout Response for an unknown ITT")
        self._machine.process(Input.LOGOUT_ACCEPTED)
        self._events.append(LogoutComplete(self.session, response))
        self._terminate("logout")

    # ------------------------------------------------------------------ reject / async

    def _on_reject(self, pdu: Pdu) -> None:
        (_op, _f, reason, _r, _ad, _tag, statsn, expcmdsn, maxcmdsn,
         _datasn) = REJECT.unpack_from(pdu.header)
        self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
        self._update_window(expcmdsn, maxcmdsn)
        header = bytes(pdu.data[:48])
        self._events.append(RejectReceived(reason, header))
        if len(header) == 48:
            itt = int.from_bytes(header[16:20], "big")
            opcode = header[0] & 0x3F
            if opcode == Opcode.SCSI_COMMAND and itt in self._commands:
                del self._commands[itt]
                self._events.append(CommandRejected(itt, reason))
            elif opcode == Opcode.NOP_OUT:
                self._pings.pop(itt, None)
            elif opcode == Opcode.TEXT_REQUEST:
                self._text.pop(itt, None)

    def _on_async(self, pdu: Pdu) -> None:
        (_op, _f, _r, _ad, lun, _tag, _x, statsn, expcmdsn, maxcmdsn, event, _vcode, p1, p2,
         p3) = ASYNC_MESSAGE.unpack_from(pdu.header)
        self.exp_stat_sn = (statsn + 1) & SERIAL_MASK
        self._update_window(expcmdsn, maxcmdsn)
        self._events.append(AsyncEventReceived(event, decode_lun(lun), p1, p2, p3,
                                               bytes(pdu.data)))

    # ------------------------------------------------------------------ helpers

    def _require_full_feature(self) -> None:
        if self._machine.state is not State.FULL_FEATURE or self._closed:
            raise LocalProtocolError(f"not in Full Feature Phase ({self.state.name})")

    def _allocate_itt(self) -> int:
        itt = self._next_itt
        self._next_itt = (itt + 1) & 0x7FFFFFFF or 1
        return itt

    def _set_handlers(self) -> None:
        state = self._machine.state
        self._handlers = {opcode: getattr(self, name)
                          for opcode, (name, states) in self.DISPATCH.items() if state in states}

    def _apply_session(self, session: InitiatorSession) -> None:
        params = session.params
        self._framer.start_full_feature(params, role="initiator")
        self.header_digest = params.header_digest
        self.data_digest = params.data_digest
        self.send_limit = params.send_limit("initiator")
        self.first_burst_length = params.first_burst_length
        self.max_burst_length = params.max_burst_length
        self.immediate_data = params.immediate_data
        self.initial_r2t = params.initial_r2t

    def _update_window(self, expcmdsn: int, maxcmdsn: int) -> None:
        """RFC 7143 4.2.2.1: take the target's window only when it moves forward."""
        if serial_lt(maxcmdsn, (expcmdsn - 1) & SERIAL_MASK):
            return  # invalid pair: ignored
        if serial_gt(expcmdsn, self.exp_cmd_sn):
            self.exp_cmd_sn = expcmdsn
        if serial_gt(maxcmdsn, self.max_cmd_sn):
            self.max_cmd_sn = maxcmdsn
            waiting = self._waiting
            while waiting and not serial_gt(self.cmd_sn, self.max_cmd_sn):
                command = waiting.popleft()
                if command.itt in self._commands:
                    self._send_command(command)

    def _fault(self, exc: RemoteProtocolError) -> None:
        self._events.append(ProtocolViolation(str(exc), int(exc.reject_reason)))
        if self._machine.state is not State.CLOSED:
            self._machine.process(Input.FAULT)
        self._terminate(str(exc))

    def _terminate(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._handlers = {}
        self._events.append(ConnectionClosed(reason))
