"""Target control path: NOP, text requests (SendTargets), task management, logout, SNACK.

* NOP-Out with an ITT is a ping: answered by a NOP-In echoing its data. NOP-Out with a TTT
  answers the target's own keepalive ping (see ``TargetConnection.handle_timer``).
* Text requests (RFC 7143 11.10, 11.11) may be continued with the C bit (answered by empty Text
  Responses with a TTT); a long answer is sent in pieces with C=1, each fetched by an empty Text
  Request echoing our TTT. ``SendTargets=All`` in a Discovery session lists every target the
  initiator is allowed on with ``TargetAddress=host:port,tpgt``; in a Normal session
  ``SendTargets=`` (empty) or the session's own target name lists that target. Other keys are
  negotiated with the Full Feature Phase rules (only "ALL"/"FFP" keys).
* Task management (11.5, 11.6): the core answers what it can alone (ABORT TASK of a task not yet
  handed to the adapter or unknown, TASK REASSIGN at ERL 0), everything else becomes a
  ``TaskManagementRequest`` event answered by ``complete_task_management``.
* Logout (11.14, 11.15): close the session or this connection, then ``LogoutComplete`` and
  ``ConnectionClosed``. Connection recovery is not supported (ERL 0).
* SNACK needs ErrorRecoveryLevel > 0: rejected with "protocol error".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .constants import (
    RESERVED_TAG,
    LogoutReason,
    LogoutResponse,
    RejectReason,
    TmfFunction,
    TmfResponse,
)
from .errors import PduRejected, TextError
from .events import ConnectionClosed, LogoutComplete, ScsiTask, TaskManagementRequest
from .framer import Pdu
from .negotiation import Negotiator
from .pdu import (
    LOGOUT_REQUEST,
    LOGOUT_RESPONSE,
    NOP_IN,
    NOP_OUT,
    TASK_MGMT_REQUEST,
    TASK_MGMT_RESPONSE,
    TEXT_REQUEST,
    TEXT_RESPONSE,
    decode_lun,
)
from .serial import serial_in_window
from .state import Input
from .text import TextAccumulator, encode_text

if TYPE_CHECKING:
    from .target_connection import TargetConnection

_LUN_SCOPED = (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET,
               TmfFunction.LOGICAL_UNIT_RESET, TmfFunction.CLEAR_ACA)
_TEXT_PIECE = 8192  # size of one piece of a long text answer (before the peer's limit)


class TextExchange:
    """State of one text command spanning several PDUs (same ITT)."""

    __slots__ = ("itt", "ttt", "request", "answer", "sent")

    def __init__(self, itt: int, ttt: int) -> None:
        self.itt = itt
        self.ttt = ttt
        self.request = TextAccumulator()
        self.answer = b""
        self.sent = 0


class ControlPath:
    """Mixin of TargetConnection: non-I/O requests of the Full Feature Phase."""

    # ------------------------------------------------------------------ NOP

    def _on_nop_out(self: TargetConnection, pdu: Pdu) -> None:
        _op, _f, _r, _ad, lun, itt, ttt, cmdsn, expstatsn = NOP_OUT.unpack_from(pdu.header)
        self.exp_stat_sn = expstatsn
        if ttt != RESERVED_TAG:
            self._ping_answered(ttt)
        if itt == RESERVED_TAG:
            if not pdu.immediate:
                self._consume_cmdsn(cmdsn, False)
            return
        data = bytes(pdu.data[:self.send_limit])
        self._sequence(cmdsn, pdu.immediate, self._answer_nop, (itt, lun, data))

    def _answer_nop(self: TargetConnection, argument: tuple[int, int, bytes]) -> None:
        itt, lun, data = argument
        if self._closed:
            return
        expcmdsn, maxcmdsn = self._window()
        self._push(NOP_IN.pack(0x20, 0x80, 0, len(data), lun, itt, RESERVED_TAG,
                               self._next_stat_sn(), expcmdsn, maxcmdsn), data)

    # ------------------------------------------------------------------ text

    def _on_text_request(self: TargetConnection, pdu: Pdu) -> None:
        (_op, flags, _r, _ad, _lun, itt, ttt, cmdsn,
         expstatsn) = TEXT_REQUEST.unpack_from(pdu.header)
        self.exp_stat_sn = expstatsn
        self._sequence(cmdsn, pdu.immediate, self._run_text,
                       (itt, ttt, bool(flags & 0x80), bool(flags & 0x40), bytes(pdu.data),
                        bytes(pdu.header)))

    def _run_text(self: TargetConnection, argument: tuple) -> None:
        itt, ttt, final, cont, data, header = argument
        if self._closed:
            return
        exchange = self._text
        if ttt != RESERVED_TAG:
            # continuation of an exchange we started (either direction)
            if exchange is None or exchange.itt != itt or exchange.ttt != ttt:
                self._send_reject(RejectReason.INVALID_PDU_FIELD, header)
                return
        elif exchange is not None and exchange.itt != itt:
            exchange = None  # a new command replaces an abandoned exchange (RFC 7143 11.10.4)
        if exchange is None:
            exchange = self._text = TextExchange(itt, self._new_ttt())
        if exchange.answer:  # the initiator fetches the next piece of our answer
            self._send_text_piece(exchange)
            return
        try:
            pairs = exchange.request.feed(data, more=cont)
        except TextError:
            self._text = None
            self._send_reject(RejectReason.PROTOCOL_ERROR, header)
            return
        if pairs is None:  # more request text follows
            self._send_text_response(itt, exchange.ttt, final=False, cont=False, data=b"")
            return
        try:
            answer = encode_text(self._answer_text(pairs))
        except TextError:
            self._text = None
            self._send_reject(RejectReason.PROTOCOL_ERROR, header)
            return
        exchange.answer = answer
        exchange.sent = 0
        self._send_text_piece(exchange)

    def _send_text_piece(self: TargetConnection, exchange: TextExchange) -> None:
        size = min(self.send_limit, _TEXT_PIECE)
        piece = exchange.answer[exchange.sent:exchange.sent + size]
        exchange.sent += len(piece)
        if exchange.sent >= len(exchange.answer):
            self._text = None
            self._send_text_response(exchange.itt, RESERVED_TAG, final=True, cont=False,
                                     data=piece)
        else:
            self._send_text_response(exchange.itt, exchange.ttt, final=False, cont=True,
                                     data=piece)

    def _send_text_response(self: TargetConnection, itt: int, ttt: int, *, final: bool,
                            cont: bool, data: bytes) -> None:
        expcmdsn, maxcmdsn = self._window()
        flags = (0x80 if final else 0) | (0x40 if cont else 0)
        self._push(TEXT_RESPONSE.pack(0x24, flags, 0, len(data), 0, itt, ttt,
                                      self._next_stat_sn(), expcmdsn, maxcmdsn), data)

    def _answer_text(self: TargetConnection, pairs: list[tuple[str, str]]
                     ) -> list[tuple[str, str]]:
        session = self.session
        out: list[tuple[str, str]] = []
        others = []
        for key, value in pairs:
            if key == "SendTargets":
                out += self._send_targets(value)
            else:
                others.append((key, value))
        if others:
            negotiator = Negotiator(role="target", local={
                "MaxRecvDataSegmentLength": self.portal.max_recv_data_segment_length},
                discovery=session.is_discovery)
            out += negotiator.respond(others, full_feature=True)
            declared = negotiator.peer_declared.get("MaxRecvDataSegmentLength")
            if declared is not None:
                self.send_limit = declared
        return out

    def _send_targets(self: TargetConnection, value: str) -> list[tuple[str, str]]:
        session = self.session
        portal = self.portal
        if session.is_discovery:
            if value == "All":
                names = sorted(portal.targets)
            elif value in portal.targets:
                names = [value]
            else:
                names = []
        elif value in ("", session.target_name):
            names = [session.target_name]
        else:
            return [("SendTargets", "Reject")]
        out = []
        for name in names:
            target = portal.targets.get(name)
            if target is None or not target.allows(session.initiator_name):
                continue
            out.append(("TargetName", name))
            for address in portal.addresses:
                out.append(("TargetAddress", f"{address},{portal.portal_group_tag}"))
        return out

    # ------------------------------------------------------------------ task management

    def _on_task_mgmt_request(self: TargetConnection, pdu: Pdu) -> None:
        (_op, flags, _r, _ad, lun_field, itt, ref_itt, cmdsn, expstatsn, refcmdsn,
         _expdatasn) = TASK_MGMT_REQUEST.unpack_from(pdu.header)
        self.exp_stat_sn = expstatsn
        event = TaskManagementRequest(self.session, flags & 0x7F, decode_lun(lun_field),
                                      ref_itt, itt, connection_id=self.connection_id)
        self._sequence(cmdsn, pdu.immediate, self._run_task_mgmt, (event, refcmdsn))

    def _run_task_mgmt(self: TargetConnection, argument: tuple[TaskManagementRequest, int]
                       ) -> None:
        event, refcmdsn = argument
        if self._closed:
            return
        function = event.function
        session = self.session
        if session.is_discovery:
            self._send_tmf_response(event.itt, TmfResponse.REJECTED)
            return
        if function == TmfFunction.TASK_REASSIGN:
            self._send_tmf_response(event.itt,
                                    TmfResponse.TASK_ALLEGIANCE_REASSIGNMENT_NOT_SUPPORTED)
            return
        if not TmfFunction.ABORT_TASK <= function <= TmfFunction.TARGET_COLD_RESET:
            self._send_tmf_response(event.itt, TmfResponse.REJECTED)
            return
        if function == TmfFunction.ABORT_TASK:
            task = self._find_task(event.referenced_itt)
            if task is None or task.state == ScsiTask.RECEIVING:
                self._send_tmf_response(event.itt, self._abort_undelivered(task, refcmdsn))
                return
            event.referenced_task = task
        self._events.append(event)

    def _owner_of(self: TargetConnection, task: ScsiTask) -> TargetConnection:
        for connection in self.session.connections.values():
            if connection.connection_id == task.connection_id:
                return connection
        return self

    def _find_task(self: TargetConnection, itt: int) -> ScsiTask | None:
        for connection in self.session.connections.values():
            task = connection._tasks.get(itt)
            if task is not None:
                return task
        return None

    def _abort_undelivered(self: TargetConnection, task: ScsiTask | None, refcmdsn: int) -> int:
        """ABORT TASK of a task the adapter has not seen (RFC 7143 11.5.1)."""
        session = self.session
        if task is not None:
            self._owner_of(task)._abort_task(task)
            session.open_window()
            return TmfResponse.FUNCTION_COMPLETE
        exp = session.exp_cmd_sn
        if refcmdsn in session.pending or not serial_in_window(refcmdsn, exp, session.max_cmd_sn):
            return TmfResponse.TASK_DOES_NOT_EXIST
        # Not received yet but inside the window: consider it received (and aborted).
        self._sequence(refcmdsn, False, lambda _arg: None, None)
        return TmfResponse.FUNCTION_COMPLETE

    def _complete_task_management(self: TargetConnection, event: TaskManagementRequest,
                                  response: int) -> None:
        if response == TmfResponse.FUNCTION_COMPLETE:
            function = event.function
            session = self.session
            if function == TmfFunction.ABORT_TASK:
                task = event.referenced_task
                if task is not None:
                    self._owner_of(task)._abort_task(task)
            elif function in _LUN_SCOPED and function != TmfFunction.CLEAR_ACA:
                for connection in list(session.connections.values()):
                    connection.abort_tasks(lun=event.lun)
            elif function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
                for connection in list(session.connections.values()):
                    connection.abort_tasks()
            session.open_window()
        self._send_tmf_response(event.itt, response)

    def _send_tmf_response(self: TargetConnection, itt: int, response: int) -> None:
        expcmdsn, maxcmdsn = self._window()
        self._push(TASK_MGMT_RESPONSE.pack(0x22, 0x80, int(response), 0, 0, 0, itt, 0,
                                           self._next_stat_sn(), expcmdsn, maxcmdsn))

    # ------------------------------------------------------------------ logout

    def _on_logout_request(self: TargetConnection, pdu: Pdu) -> None:
        (_op, flags, _r, _ad, itt, cid, cmdsn,
         expstatsn) = LOGOUT_REQUEST.unpack_from(pdu.header)
        self.exp_stat_sn = expstatsn
        self._sequence(cmdsn, pdu.immediate, self._run_logout, (flags & 0x7F, itt, cid,
                                                               bytes(pdu.header)))

    def _run_logout(self: TargetConnection, argument: tuple[int, int, int, bytes]) -> None:
        reason, itt, cid, header = argument
        if self._closed:
            return
        session = self.session
        if reason == LogoutReason.CLOSE_SESSION:
            for connection in list(session.connections.values()):
                if connection is not self:
                    connection._terminate("session closed by logout on another connection")
            self._logout_self(reason, itt)
            self.sessions.remove(session)
        elif reason == LogoutReason.CLOSE_CONNECTION:
            if cid == self.cid:
                self._logout_self(reason, itt)
            else:
                other = session.connections.get(cid)
                if other is None:
                    self._send_logout_response(itt, LogoutResponse.CID_NOT_FOUND)
                else:
                    other._terminate("connection closed by logout on another connection")
                    self._send_logout_response(itt, LogoutResponse.SUCCESS)
        elif reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            self._send_logout_response(itt, LogoutResponse.RECOVERY_NOT_SUPPORTED)
        else:
            self._send_reject(RejectReason.INVALID_PDU_FIELD, header)

    def _logout_self(self: TargetConnection, reason: int, itt: int) -> None:
        session = self.session
        self._send_logout_response(itt, LogoutResponse.SUCCESS)
        self._machine.process(Input.LOGOUT_ACCEPTED)
        self._events.append(LogoutComplete(session, reason))
        self._closed = True
        self._handlers = {}
        self._release_resources()
        self._events.append(ConnectionClosed("logout"))

    def _send_logout_response(self: TargetConnection, itt: int, response: int) -> None:
        expcmdsn, maxcmdsn = self._window()
        params = self.session.params
        self._push(LOGOUT_RESPONSE.pack(0x26, 0x80, int(response), 0, 0, itt,
                                        self._next_stat_sn(), expcmdsn, maxcmdsn,
                                        params.default_time2wait, params.default_time2retain))

    # ------------------------------------------------------------------ SNACK

    def _on_snack_request(self: TargetConnection, pdu: Pdu) -> None:
        raise PduRejected("SNACK is not supported at ErrorRecoveryLevel 0",
                          reject_reason=RejectReason.PROTOCOL_ERROR)

