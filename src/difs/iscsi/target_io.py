"""Target I/O path (RFC 7143 4.2.5, 11.3-11.8): SCSI commands, Data-Out, R2T, Data-In, status.

This is the per-I/O hot path, written plainly: precompiled structs, locals, memoryview slices
of the received bytes for data, no object per PDU except the ``ScsiTask`` handed to the adapter.

Writes collect their data before the task is delivered: immediate data (ImmediateData=Yes, at
most FirstBurstLength), unsolicited Data-Out up to FirstBurstLength (InitialR2T=No, announced by
F=0 in the command), then R2Ts of at most MaxBurstLength each, at most MaxOutstandingR2T at a
time, issued once the command's turn in CmdSN order has come. Every Data-Out is checked: TTT,
DataSN, buffer offset (DataPDUInOrder=Yes), F bit, bounds. A sequence violation ends the
connection (there is no recovery at ErrorRecoveryLevel 0).

Reads answer with Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength, F set at
the end of every MaxBurstLength sequence, and the status folded into the last Data-In (S bit)
when there is no sense data; otherwise a SCSI Response follows. Residual overflow/underflow
is reported when the data differs from the Expected Data Transfer Length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from difs.sam.sense import (
    ABORTED_COMMAND,
    ASC_INVALID_FIELD_IN_CDB,
    ASC_PROTOCOL_SERVICE_CRC_ERROR,
    ILLEGAL_REQUEST,
    build_sense,
)
from difs.sam.status import CHECK_CONDITION, TASK_SET_FULL

from .constants import RESERVED_TAG, RejectReason
from .digest import PADDING, data_digest, header_digest
from .errors import ConnectionFault, PduRejected
from .events import ProtocolViolation, ScsiTask
from .framer import Pdu
from .pdu import DATA_IN, DATA_OUT, R2T, SCSI_COMMAND, SCSI_RESPONSE, pull_command_ahs

if TYPE_CHECKING:
    from .target_connection import TargetConnection

_unpack_command = SCSI_COMMAND.unpack_from
_unpack_data_out = DATA_OUT.unpack_from
_pack_data_in = DATA_IN.pack
_pack_response = SCSI_RESPONSE.pack
_pack_r2t = R2T.pack

MAX_WRITE_LENGTH = 256 * 1024 * 1024  # larger writes are refused (no buffer of that size)
#: Data-Out buffers one connection may hold for writes still collecting their data: a write
#: that would pass it is answered TASK SET FULL (retryable), so a peer cannot make the
#: controller allocate command window x MAX_WRITE_LENGTH (32 GiB) per connection.
MAX_BUFFERED_WRITES = 256 * 1024 * 1024


# ABORTED COMMAND, PROTOCOL SERVICE CRC ERROR (47h/05h): a Data-Out failed its digest.
SENSE_CRC_ERROR = build_sense(ABORTED_COMMAND, *ASC_PROTOCOL_SERVICE_CRC_ERROR)
# ILLEGAL REQUEST, INVALID FIELD IN CDB: a write larger than the core accepts.
SENSE_INVALID_FIELD = build_sense(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_CDB)


class WriteState:
    """Data-Out collection of one write command."""

    __slots__ = ("task", "buffer", "received", "unsolicited_open", "unsolicited_next",
                 "unsolicited_limit", "unsolicited_datasn", "next_r2t_offset", "r2ts", "r2tsn",
                 "released", "corrupt")

    def __init__(self, task: ScsiTask, immediate_length: int, unsolicited_open: bool,
                 unsolicited_limit: int) -> None:
        self.task = task
        self.buffer = bytearray(task.expected_length)
        self.received = immediate_length
        self.unsolicited_open = unsolicited_open
        self.unsolicited_next = immediate_length
        self.unsolicited_limit = unsolicited_limit
        self.unsolicited_datasn = 0
        self.next_r2t_offset = immediate_length
        self.r2ts: dict[int, list[int]] = {}  # TTT -> [offset, length, received, next DataSN]
        self.r2tsn = 0
        self.released = False
        self.corrupt = False


class IoPath:
    """Mixin of TargetConnection: the SCSI command / data path."""

    # ------------------------------------------------------------------ commands

    def _on_scsi_command(self: TargetConnection, pdu: Pdu) -> None:
        session = self.session
        (_op, flags, _r, _ad, lun_field, itt, edtl, cmdsn, expstatsn,
         cdb) = _unpack_command(pdu.header)
        immediate = pdu.immediate
        self.exp_stat_sn = expstatsn
        try:
            if session.session_type != "Normal":
                raise PduRejected("SCSI command in a discovery session",
                                  reject_reason=RejectReason.COMMAND_NOT_SUPPORTED)
            bidi = None
            if pdu.ahs:
                cdb, bidi = pull_command_ahs(cdb, pdu.ahs)
            if itt in self._tasks or itt == RESERVED_TAG:
                raise PduRejected(f"ITT 0x{itt:x} already in use",
                                  reject_reason=RejectReason.TASK_IN_PROGRESS)
            data = pdu.data
            n = len(data)
            write = bool(flags & 0x20)
            if n and (not write or n > edtl or not session.immediate_data
                      or n > session.first_burst_length):
                raise PduRejected("immediate data not allowed here")
        except PduRejected:
            self._consume_cmdsn(cmdsn, immediate)
            raise
        top = lun_field >> 48
        lun = top & 0x3FFF if top >> 14 <= 1 and not lun_field & 0xFFFF_FFFF_FFFF else lun_field
        task = ScsiTask(session, self.connection_id, itt, lun, lun_field, cdb, edtl,
                        bool(flags & 0x40), write, flags & 7, cmdsn, immediate, data, bidi,
                        self.arrived_ns)
        collect = refuse = busy = False
        if write and edtl > n:
            if edtl > MAX_WRITE_LENGTH:
                refuse = True
            elif self.write_buffered + edtl > MAX_BUFFERED_WRITES:
                refuse = busy = True
            else:
                collect = True
                unsolicited_open = not flags & 0x80
                if unsolicited_open and session.initial_r2t:
                    self._consume_cmdsn(cmdsn, immediate)
                    raise PduRejected("unsolicited Data-Out announced while InitialR2T=Yes")
                state = WriteState(task, n, unsolicited_open,
                                   min(session.first_burst_length, edtl))
                if n:
                    state.buffer[:n] = data
                self._writes[itt] = state
                self.write_buffered += edtl
        self._tasks[itt] = task
        session.outstanding += 1
        if (not collect and not refuse and not immediate and cmdsn == session.exp_cmd_sn
                and not session.pending):
            # fast path: the next command in order, no data to collect
            session.exp_cmd_sn = (cmdsn + 1) & 0xFFFFFFFF
            task.state = ScsiTask.DELIVERED
            self._events.append(task)
            return
        handler = (self._busy_task if busy else self._refuse_task) if refuse \
            else self._release_task
        if not self._sequence(cmdsn, immediate, handler, task):
            del self._tasks[itt]
            self._drop_write(itt)
            session.outstanding -= 1

    def _release_task(self: TargetConnection, task: ScsiTask) -> None:
        """The command's turn in CmdSN order has come."""
        if task.state != ScsiTask.RECEIVING:
            return  # aborted while waiting
        state = self._writes.get(task.itt)
        if state is None:
            task.state = ScsiTask.DELIVERED
            self._events.append(task)
            return
        state.released = True
        self._data_progress(state)

    def _drop_write(self: TargetConnection, itt: int) -> None:
        state = self._writes.pop(itt, None)
        if state is not None:
            self.write_buffered -= len(state.buffer)

    def _busy_task(self: TargetConnection, task: ScsiTask) -> None:
        if task.state != ScsiTask.RECEIVING:
            return
        self._recently_aborted.append(task.itt)  # discard its unsolicited Data-Out
        task.state = ScsiTask.DELIVERED
        self._complete_command(task, TASK_SET_FULL, b"", b"", None)

    def _refuse_task(self: TargetConnection, task: ScsiTask) -> None:
        if task.state != ScsiTask.RECEIVING:
            return
        self._recently_aborted.append(task.itt)  # discard its unsolicited Data-Out
        task.state = ScsiTask.DELIVERED
        self._complete_command(task, CHECK_CONDITION, b"", SENSE_INVALID_FIELD, None)

    # ------------------------------------------------------------------ Data-Out / R2T

    def _on_data_out(self: TargetConnection, pdu: Pdu, corrupt: bool = False) -> None:
        (_op, flags, _r, _ad, _lun, itt, ttt, _x, expstatsn, _y, datasn,
         offset) = _unpack_data_out(pdu.header)
        self.exp_stat_sn = expstatsn
        state = self._writes.get(itt)
        if state is None:
            if itt in self._recently_aborted:
                return  # data of an aborted task: discarded silently
            raise PduRejected(f"Data-Out for unknown ITT 0x{itt:x}",
                              reject_reason=RejectReason.INVALID_PDU_FIELD)
        data = pdu.data
        n = len(data)
        end = offset + n
        progress = bool(flags & 0x80)
        # A DataSN out of sequence, with offset and length where they belong, is an
        # implied data digest error (RFC 7143 7.1.4.1): at ErrorRecoveryLevel 0 the
        # command fails with ABORTED COMMAND 47h/05h once its data is in, and the
        # connection carries on. Data at the wrong offset cannot be trusted to be
        # framed right at all: that still ends the connection.
        if ttt == RESERVED_TAG:
            if (not state.unsolicited_open or offset != state.unsolicited_next
                    or end > state.unsolicited_limit):
                raise ConnectionFault(
                    f"unsolicited Data-Out out of sequence (ITT 0x{itt:x}, offset {offset}, "
                    f"DataSN {datasn})")
            if datasn != state.unsolicited_datasn:
                corrupt = True
                self._events.append(ProtocolViolation(
                    f"unsolicited Data-Out with DataSN {datasn}, expected "
                    f"{state.unsolicited_datasn} (ITT 0x{itt:x}): command fails"))
            state.unsolicited_next = end
            state.unsolicited_datasn += 1
            if progress:
                state.unsolicited_open = False
                state.next_r2t_offset = end
        else:
            r2t = state.r2ts.get(ttt)
            if r2t is None:
                raise ConnectionFault(f"Data-Out with unknown TTT 0x{ttt:x}")
            r2t_offset, r2t_length, r2t_received, r2t_datasn = r2t
            if offset != r2t_offset + r2t_received or r2t_received + n > r2t_length:
                raise ConnectionFault(
                    f"solicited Data-Out out of sequence (ITT 0x{itt:x}, offset {offset}, "
                    f"DataSN {datasn})")
            if datasn != r2t_datasn:
                corrupt = True
                self._events.append(ProtocolViolation(
                    f"Data-Out with DataSN {datasn}, expected {r2t_datasn} "
                    f"(ITT 0x{itt:x}): command fails"))
            r2t_received += n
            if r2t_received == r2t_length:
                del state.r2ts[ttt]
                progress = True
            elif progress:
                raise ConnectionFault("Data-Out with F bit before the end of its R2T")
            else:
                r2t[2] = r2t_received
                r2t[3] = r2t_datasn + 1
        if n:
            state.buffer[offset:end] = data
        state.received += n
        if corrupt:
            state.corrupt = True
        if progress or state.received == state.task.expected_length:
            self._data_progress(state)

    def _data_progress(self: TargetConnection, state: WriteState) -> None:
        task = state.task
        if not state.released:
            return
        if state.received == task.expected_length:
            self._drop_write(task.itt)
            task.data_out = memoryview(state.buffer)
            task.state = ScsiTask.DELIVERED
            if state.corrupt:
                self._complete_command(task, CHECK_CONDITION, b"", SENSE_CRC_ERROR,
                                       None)
            else:
                self._events.append(task)
            return
        if state.unsolicited_open:
            return
        session = self.session
        burst = session.max_burst_length
        limit = session.max_outstanding_r2t
        edtl = task.expected_length
        r2ts = state.r2ts
        while len(r2ts) < limit and state.next_r2t_offset < edtl:
            offset = state.next_r2t_offset
            length = min(burst, edtl - offset)
            ttt = self._new_ttt()
            r2ts[ttt] = [offset, length, 0, 0]
            self._push(_pack_r2t(0x31, 0x80, 0, 0, task.lun_field, task.itt, ttt, self.stat_sn,
                                 session.exp_cmd_sn, session.max_cmd_sn, state.r2tsn, offset,
                                 length))
            state.r2tsn += 1
            state.next_r2t_offset = offset + length

    # ------------------------------------------------------------------ completion

    def _complete_command(self: TargetConnection, task: ScsiTask, status: int,
                          data_in: bytes | memoryview, sense: bytes,
                          transfer_length: int | None) -> None:
        """Send Data-In (reads) and the status. ``transfer_length`` is how many bytes a write
        actually needed (for residuals); reads use ``len(data_in)``."""
        task.state = ScsiTask.DONE
        itt = task.itt
        del self._tasks[itt]
        session = self.session
        outstanding = session.outstanding = session.outstanding - 1
        # open the CmdSN window (Session.open_window, inlined: this runs once per I/O)
        candidate = (session.exp_cmd_sn + session.command_window - outstanding
                     - len(session.pending) - 1) & 0xFFFFFFFF
        if 0 < ((candidate - session.max_cmd_sn) & 0xFFFFFFFF) < 0x80000000:
            session.max_cmd_sn = candidate
        if (task.read and not sense and not task.write and task.expected_length
                and 0 < len(data_in) <= self.send_limit
                and len(data_in) <= session.max_burst_length):
            # fast path: one Data-In carrying the data and the status
            n = len(data_in)
            edtl = task.expected_length
            if n > edtl:
                flags, residual = 0x85, n - edtl
                data_in = memoryview(data_in)[:edtl]
                n = edtl
            elif n < edtl:
                flags, residual = 0x83, edtl - n
            else:
                flags = 0x81
                residual = 0
            statsn = self.stat_sn
            self.stat_sn = (statsn + 1) & 0xFFFFFFFF
            header = _pack_data_in(0x25, flags, 0, status, n, 0, itt, RESERVED_TAG, statsn,
                                   session.exp_cmd_sn, session.max_cmd_sn, 0, 0, residual)
            out = self._out
            if self.header_digest:
                header += header_digest(header)
                self.digests_sent += 1
                self.digest_bytes_sent += 48
            out.append(header)
            out.append(data_in)
            if n & 3:
                out.append(PADDING[n & 3])
            if self.data_digest:
                out.append(data_digest(data_in))
                self.digests_sent += 1
                self.digest_bytes_sent += (n + 3) & ~3
            return
        flags = 0x80
        residual = bidi_residual = 0
        datasn = 0
        if task.read:
            n = len(data_in)
            bidi = task.write
            edtl = task.bidi_read_length if bidi and task.bidi_read_length is not None \
                else task.expected_length
            if n > edtl:
                read_flags, read_residual = 0x04, n - edtl
                data_in = memoryview(data_in)[:edtl]
                n = edtl
            elif n < edtl:
                read_flags, read_residual = 0x02, edtl - n
            else:
                read_flags = read_residual = 0
            if n:
                with_status = not sense and not bidi
                datasn = self._send_data_in(task, data_in, n, with_status, status, read_flags,
                                            read_residual)
                if with_status:
                    return
            if bidi:
                flags |= read_flags << 2  # o/u bits sit two places above O/U
                bidi_residual = read_residual
            else:
                flags |= read_flags
                residual = read_residual
        if task.write and transfer_length is not None:
            edtl = task.expected_length
            if transfer_length < edtl:
                flags |= 0x02
                residual = edtl - transfer_length
            elif transfer_length > edtl:
                flags |= 0x04
                residual = transfer_length - edtl
        data = len(sense).to_bytes(2, "big") + sense if sense else b""
        statsn = self.stat_sn
        self.stat_sn = (statsn + 1) & 0xFFFFFFFF
        self._push(_pack_response(0x21, flags, 0, status, len(data), 0, itt, 0, statsn,
                                  session.exp_cmd_sn, session.max_cmd_sn, datasn, bidi_residual,
                                  residual), data)

    def _send_data_in(self: TargetConnection, task: ScsiTask, data: bytes | memoryview, n: int,
                      with_status: bool, status: int, residual_flags: int, residual: int) -> int:
        """Queue the Data-In PDUs of a read; returns the number of PDUs (next DataSN)."""
        session = self.session
        expcmdsn = session.exp_cmd_sn
        maxcmdsn = session.max_cmd_sn
        itt = task.itt
        segment = self.send_limit
        burst = session.max_burst_length
        push = self._push
        if n <= segment and n <= burst:  # the common case: one PDU
            if with_status:
                statsn = self.stat_sn
                self.stat_sn = (statsn + 1) & 0xFFFFFFFF
                push(_pack_data_in(0x25, 0x81 | residual_flags, 0, status, n, 0, itt,
                                   RESERVED_TAG, statsn, expcmdsn, maxcmdsn, 0, 0, residual),
                     data)
            else:
                push(_pack_data_in(0x25, 0x80, 0, 0, n, 0, itt, RESERVED_TAG, 0, expcmdsn,
                                   maxcmdsn, 0, 0, 0), data)
            return 1
        view = data if type(data) is memoryview else memoryview(data)
        offset = 0
        datasn = 0
        burst_left = burst
        while offset < n:
            size = min(segment, burst_left, n - offset)
            end = offset + size
            burst_left -= size
            flags = 0
            if end == n or not burst_left:
                flags = 0x80
                burst_left = burst
            if end == n and with_status:
                statsn = self.stat_sn
                self.stat_sn = (statsn + 1) & 0xFFFFFFFF
                push(_pack_data_in(0x25, flags | 0x01 | residual_flags, 0, status, size, 0, itt,
                                   RESERVED_TAG, statsn, expcmdsn, maxcmdsn, datasn, offset,
                                   residual), view[offset:end])
            else:
                push(_pack_data_in(0x25, flags, 0, 0, size, 0, itt, RESERVED_TAG, 0, expcmdsn,
                                   maxcmdsn, datasn, offset, 0), view[offset:end])
            datasn += 1
            offset = end
        return datasn

    # ------------------------------------------------------------------ aborts

    def _abort_task(self: TargetConnection, task: ScsiTask) -> None:
        """Terminate a task without a response (task management, logout, connection loss)."""
        if task.state not in (ScsiTask.RECEIVING, ScsiTask.DELIVERED):
            return
        task.state = ScsiTask.ABORTED
        itt = task.itt
        if self._tasks.get(itt) is task:
            del self._tasks[itt]
            self.session.outstanding -= 1
        self._drop_write(itt)
        self._recently_aborted.append(itt)

    def _abort_connection_tasks(self: TargetConnection) -> None:
        for task in list(self._tasks.values()):
            self._abort_task(task)
        if self.session is not None:
            self.session.open_window()

    def abort_tasks(self: TargetConnection, *, lun: int | None = None) -> list[ScsiTask]:
        """Abort this connection's tasks (all, or those of ``lun``) without responses, e.g. for
        a LOGICAL UNIT RESET received on another session. Returns the aborted tasks."""
        aborted = [t for t in list(self._tasks.values()) if lun is None or t.lun == lun]
        for task in aborted:
            self._abort_task(task)
        if aborted and self.session is not None:
            self.session.open_window()
        return aborted
