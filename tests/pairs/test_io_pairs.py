"""Full Feature Phase between the two cores: data transfer, ordering, NOP, task management."""

from __future__ import annotations

import os

import pytest

from difs.iscsi.constants import TmfFunction, TmfResponse
from difs.iscsi.events import (
    ConnectionClosed,
    DigestFailure,
    ProtocolViolation,
    ScsiTask,
)
from difs.iscsi.framer import PduFramer
from difs.iscsi.initiator_events import (
    CommandAborted,
    CommandComplete,
    PingComplete,
    TaskManagementComplete,
)
from difs.iscsi.pdu import (
    DataIn,
    DataOut,
    NopOut,
    ReadyToTransfer,
    ScsiCommand,
    ScsiResponse,
    encode_pdu,
    pull_pdu,
)

from .helpers import ConnectionPair, initiator_config, portal_config, read10, write10


def wire_pdus(chunks: list[bytes], *, hd=False, dd=False):
    framer = PduFramer(1 << 24, header_digest=hd, data_digest=dd)
    framer.feed(b"".join(chunks))
    out = []
    while (pdu := framer.next_pdu()) is not None:
        out.append(pull_pdu(pdu.header, pdu.ahs, pdu.data))
    return out


def logged_in(**kw) -> ConnectionPair:
    pair = ConnectionPair(**kw)
    pair.pump()
    pair.to_target.clear()
    pair.to_initiator.clear()
    return pair


@pytest.mark.parametrize("initial_r2t", [False, True])
def test_write_needing_r2t_sequences(initial_r2t):
    pair = logged_in(
        portal=portal_config(first_burst_length=4096, max_burst_length=8192,
                             max_recv_data_segment_length=2048, max_outstanding_r2t=2,
                             initial_r2t=initial_r2t),
        initiator=initiator_config(initial_r2t=initial_r2t), chunk=1000)
    payload = os.urandom(64 * 1024)
    itt = pair.initiator.submit_command(0, write10(100, 128), data_out=payload)
    pair.pump()
    [done] = pair.events_of("initiator", CommandComplete)
    assert done.itt == itt and done.status == 0
    [task] = [e for e in pair.target_events if isinstance(e, ScsiTask)]
    assert bytes(task.data_out) == payload
    assert b"".join(pair.disk.blocks[100 + i] for i in range(128)) == payload
    sent = wire_pdus(pair.to_target)
    received = wire_pdus(pair.to_initiator)
    r2ts = [p for p in received if isinstance(p, ReadyToTransfer)]
    data_outs = [p for p in sent if isinstance(p, DataOut)]
    command = [p for p in sent if isinstance(p, ScsiCommand)][0]
    assert len(command.data) == 2048  # immediate data limited by the target's MRDSL
    unsolicited_end = 2048 if initial_r2t else 4096
    # R2Ts cover the rest in bursts of at most MaxBurstLength, in order, R2TSN counting up
    assert [r.offset for r in r2ts] == list(range(unsolicited_end, 65536, 8192))
    assert all(r.desired_length <= 8192 for r in r2ts)
    assert sum(r.desired_length for r in r2ts) == 65536 - unsolicited_end
    assert [r.r2tsn for r in r2ts] == list(range(len(r2ts)))
    assert all(len(d.data) <= 2048 for d in data_outs)
    unsolicited = [d for d in data_outs if d.ttt == 0xFFFFFFFF]
    assert len(unsolicited) == (0 if initial_r2t else 1)
    # at most MaxOutstandingR2T R2Ts before the first Data-Out answering one arrived
    assert len([p for p in wire_pdus(pair.to_initiator[:1]) if isinstance(p, ReadyToTransfer)]) <= 2


def test_read_split_across_many_data_in():
    pair = logged_in(portal=portal_config(max_burst_length=16384, first_burst_length=16384),
                     initiator=initiator_config(max_recv_data_segment_length=4096))
    payload = os.urandom(100 * 512)
    for i in range(100):
        pair.disk.blocks[i] = payload[i * 512:(i + 1) * 512]
    itt = pair.initiator.submit_command(0, read10(0, 100), expected_in_length=len(payload))
    pair.pump()
    [done] = pair.events_of("initiator", CommandComplete)
    assert done.itt == itt and bytes(done.data) == payload and done.residual == 0
    data_ins = [p for p in wire_pdus(pair.to_initiator) if isinstance(p, DataIn)]
    assert len(data_ins) == 13  # 51200 bytes in 4096-byte PDUs
    assert [d.datasn for d in data_ins] == list(range(13))
    assert all(len(d.data) <= 4096 for d in data_ins)
    # F marks the end of each 16 KiB sequence, S only the last PDU (status folded in)
    assert [d.offset + len(d.data) for d in data_ins if d.final] == [16384, 32768, 49152, 51200]
    assert [d.has_status for d in data_ins] == [False] * 12 + [True]
    assert not any(isinstance(p, ScsiResponse) for p in wire_pdus(pair.to_initiator))


def test_residual_underflow_and_overflow():
    pair = logged_in()
    # underflow: the initiator expects 4096, the command produces 1024
    itt = pair.initiator.submit_command(0, read10(0, 2), expected_in_length=4096)
    pair.pump()
    done = pair.events_of("initiator", CommandComplete)[-1]
    assert done.itt == itt and done.underflow and done.residual == 4096 - 1024
    assert len(done.data) == 1024
    # overflow: the initiator expects 512, the command produces 1024
    itt = pair.initiator.submit_command(0, read10(0, 2), expected_in_length=512)
    pair.pump()
    done = pair.events_of("initiator", CommandComplete)[-1]
    assert done.overflow and done.residual == 512 and len(done.data) == 512
    # write underflow reported by the SCSI side (needs 512 of the 1024 bytes sent)
    itt = pair.initiator.submit_command(0, write10(0, 1), data_out=bytes(1024))
    pair.pump()
    done = pair.events_of("initiator", CommandComplete)[-1]
    assert done.underflow and done.residual == 512


def test_check_condition_with_sense_goes_in_scsi_response():
    pair = logged_in(auto_complete=False)
    itt = pair.initiator.submit_command(0, read10(0, 1), expected_in_length=512)
    pair.pump()
    [task] = pair.pending_tasks
    sense = bytes([0x70, 0, 0x0B, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 0])
    pair.target.complete_command(task, status=0x02, data_in=bytes(512), sense=sense)
    pair.pump()
    done = pair.events_of("initiator", CommandComplete)[-1]
    assert done.itt == itt and done.status == 2 and done.sense == sense
    pdus = wire_pdus(pair.to_initiator)
    assert isinstance(pdus[0], DataIn) and not pdus[0].has_status
    assert isinstance(pdus[1], ScsiResponse) and pdus[1].expdatasn == 1


def test_out_of_order_cmdsn_delivered_in_order():
    pair = logged_in(auto_complete=False)
    initiator, target = pair.initiator, pair.target
    chunks = []
    itts = []
    for lba in range(4):
        itts.append(initiator.submit_command(0, read10(lba, 1), expected_in_length=512))
        chunks.append(b"".join(bytes(c) for c in initiator.data_to_send()))
    for index in (2, 3, 1):  # CmdSN N+2, N+3, N+1 arrive before N
        target.receive_data(chunks[index])
    assert target.next_event() is None  # nothing can run before the gap is filled
    target.receive_data(chunks[0])
    events = [target.next_event() for _ in range(4)]
    assert [e.itt for e in events] == itts
    cmdsns = [e.cmdsn for e in events]
    assert cmdsns == sorted(cmdsns)
    assert target.session.exp_cmd_sn == (cmdsns[-1] + 1) & 0xFFFFFFFF


def test_commands_outside_window_are_dropped():
    pair = logged_in(auto_complete=False, portal=portal_config(command_window=4))
    initiator, target = pair.initiator, pair.target
    session = target.session
    exp = session.exp_cmd_sn
    stale = encode_pdu(ScsiCommand(itt=900, cdb=read10(0, 1), read=True, expected_length=512,
                                   cmdsn=(exp - 1) & 0xFFFFFFFF))
    too_far = encode_pdu(ScsiCommand(itt=901, cdb=read10(0, 1), read=True,
                                     expected_length=512, cmdsn=(exp + 10) & 0xFFFFFFFF))
    target.receive_data(stale + too_far)
    events = [target.next_event(), target.next_event()]
    assert all(isinstance(e, ProtocolViolation) for e in events)
    assert target.next_event() is None and not target.closed
    initiator.submit_command(0, read10(0, 1), expected_in_length=512)
    pair.pump()
    assert len(pair.pending_tasks) == 1


def test_initiator_waits_for_window():
    pair = logged_in(auto_complete=False, portal=portal_config(command_window=2))
    for lba in range(5):
        pair.initiator.submit_command(0, read10(lba, 1), expected_in_length=512)
    pair.pump()
    assert len(pair.pending_tasks) == 2  # MaxCmdSN holds the rest at the initiator
    for _ in range(5):
        pair.target.complete_command(pair.pending_tasks.pop(0), status=0, data_in=bytes(512))
        pair.pump()
        if not pair.pending_tasks:
            break
    while pair.pending_tasks:
        pair.target.complete_command(pair.pending_tasks.pop(0), status=0, data_in=bytes(512))
        pair.pump()
    assert len(pair.events_of("initiator", CommandComplete)) == 5


def test_immediate_command_does_not_advance_cmdsn():
    pair = logged_in(auto_complete=False)
    exp = pair.target.session.exp_cmd_sn
    pair.initiator.submit_command(0, bytes(6), immediate=True)
    pair.pump()
    [task] = pair.pending_tasks
    assert task.immediate and pair.target.session.exp_cmd_sn == exp


def test_nop_ping_both_ways():
    pair = logged_in(portal=portal_config(nop_interval=5.0, nop_timeout=2.0))
    itt = pair.initiator.ping(b"hello")
    pair.pump()
    [pong] = pair.events_of("initiator", PingComplete)
    assert pong.itt == itt and pong.data == b"hello"
    target = pair.target
    timer = target.get_timer()
    assert timer == pair.now + 5.0
    target.handle_timer(timer)  # target pings the initiator, which answers
    pair.pump()
    assert target.get_timer() is not None and not target.closed
    assert target._ping_ttt is None
    # an unanswered ping ends the connection
    target.handle_timer(timer + 5.0)
    target.data_to_send()
    target.handle_timer(timer + 8.0)
    closed = [e for e in pair.target_events + [target.next_event()]
              if isinstance(e, ConnectionClosed)]
    assert closed and "NOP" in closed[0].reason


def test_abort_task():
    pair = logged_in(auto_complete=False)
    itt = pair.initiator.submit_command(0, read10(0, 1), expected_in_length=512)
    pair.pump()
    [task] = pair.pending_tasks
    tmf_itt = pair.initiator.abort_task(itt)
    pair.pump()
    [request] = pair.tmf_requests
    assert request.function == TmfFunction.ABORT_TASK and request.referenced_task is task
    pair.target.complete_task_management(request, response=TmfResponse.FUNCTION_COMPLETE)
    pair.target.complete_command(task, status=0, data_in=bytes(512))  # too late: ignored
    pair.pump()
    assert pair.events_of("initiator", CommandAborted) == [CommandAborted(itt)]
    assert pair.events_of("initiator", TaskManagementComplete) == [
        TaskManagementComplete(tmf_itt, 0)]
    assert not pair.events_of("initiator", CommandComplete)


def test_abort_unknown_task_answered_by_core():
    pair = logged_in(auto_complete=False)
    tmf_itt = pair.initiator.abort_task(12345)
    pair.pump()
    assert not pair.tmf_requests
    [done] = pair.events_of("initiator", TaskManagementComplete)
    assert done.itt == tmf_itt and done.response in (TmfResponse.TASK_DOES_NOT_EXIST,
                                                     TmfResponse.FUNCTION_COMPLETE)


def test_abort_task_still_collecting_data():
    pair = logged_in(auto_complete=False, portal=portal_config(initial_r2t=True),
                     initiator=initiator_config(initial_r2t=True, immediate_data=False))
    itt = pair.initiator.submit_command(0, write10(0, 8), data_out=bytes(4096))
    # deliver only the command: the target sends an R2T and waits
    pair.target.receive_data(b"".join(bytes(c) for c in pair.initiator.data_to_send()))
    pair.target.data_to_send()
    pair.initiator.abort_task(itt)
    pair.pump()
    assert not pair.tmf_requests and not pair.pending_tasks
    assert pair.events_of("initiator", TaskManagementComplete)[0].response == 0


def test_lun_reset_aborts_tasks_of_that_lun():
    pair = logged_in(auto_complete=False)
    a = pair.initiator.submit_command(1, read10(0, 1), expected_in_length=512)
    b = pair.initiator.submit_command(2, read10(0, 1), expected_in_length=512)
    pair.pump()
    pair.initiator.task_management(TmfFunction.LOGICAL_UNIT_RESET, lun=1)
    pair.pump()
    [request] = pair.tmf_requests
    assert request.function == TmfFunction.LOGICAL_UNIT_RESET and request.lun == 1
    pair.target.complete_task_management(request, response=TmfResponse.FUNCTION_COMPLETE)
    for task in pair.pending_tasks:
        pair.target.complete_command(task, status=0, data_in=bytes(512))
    pair.pump()
    assert pair.events_of("initiator", CommandAborted) == [CommandAborted(a)]
    assert [c.itt for c in pair.events_of("initiator", CommandComplete)] == [b]


def test_data_digest_error_on_data_out_gives_check_condition():
    pair = logged_in(portal=portal_config(initial_r2t=True),
                     initiator=initiator_config(data_digest=("CRC32C",), header_digest=("CRC32C",),
                                                immediate_data=False, initial_r2t=True))
    itt = pair.initiator.submit_command(0, write10(0, 1), data_out=b"d" * 512)
    pair.pump()  # command -> R2T -> Data-Out, all fine
    assert pair.events_of("initiator", CommandComplete)[-1].status == 0
    itt = pair.initiator.submit_command(0, write10(0, 1), data_out=b"e" * 512)
    pair.target.receive_data(b"".join(bytes(c) for c in pair.initiator.data_to_send()))
    pair.initiator.receive_data(b"".join(bytes(c) for c in pair.target.data_to_send()))
    data_out = bytearray(b"".join(bytes(c) for c in pair.initiator.data_to_send()))
    data_out[60] ^= 0xFF  # corrupt the data segment, keep the header digest valid
    pair.target.receive_data(bytes(data_out))
    pair.pump()
    assert any(isinstance(e, DigestFailure) and e.kind == "data" for e in pair.target_events)
    done = pair.events_of("initiator", CommandComplete)[-1]
    assert done.itt == itt and done.status == 2 and done.sense[12:14] == b"\x47\x05"
    assert pair.disk.blocks[0] == b"d" * 512  # the corrupt data never reached the disk
    assert not pair.target.closed


def test_header_digest_error_terminates():
    pair = logged_in(initiator=initiator_config(header_digest=("CRC32C",)))
    raw = bytearray(encode_pdu(NopOut(itt=5, immediate=True), header_digest_on=True))
    raw[30] ^= 1
    pair.target.receive_data(bytes(raw))
    events = [pair.target.next_event() for _ in range(3)]
    assert isinstance(events[0], DigestFailure) and events[0].kind == "header"
    assert isinstance(events[-1], ConnectionClosed)


def test_snack_rejected_connection_continues():
    from difs.iscsi.pdu import Reject, SnackRequest

    pair = logged_in()
    pair.target.receive_data(encode_pdu(SnackRequest(snack_type=1, itt=1)))
    [reject] = wire_pdus([b"".join(bytes(c) for c in pair.target.data_to_send())])
    assert isinstance(reject, Reject) and reject.reason == 0x04 and reject.data[0] == 0x10
    assert not pair.target.closed
    pair.initiator.ping()
    pair.pump()
    assert pair.events_of("initiator", PingComplete)


def test_async_logout_request_reaches_initiator():
    from difs.iscsi.constants import AsyncEvent
    from difs.iscsi.initiator_events import AsyncEventReceived

    pair = logged_in()
    pair.target.request_logout(5)
    pair.pump()
    [event] = pair.events_of("initiator", AsyncEventReceived)
    assert event.event == AsyncEvent.LOGOUT_REQUESTED and event.parameter3 == 5


def test_read_with_zero_expected_length_reports_overflow_without_data_in():
    pair = logged_in()
    itt = pair.initiator.submit_command(0, read10(0, 1), expected_in_length=0)
    pair.pump()
    # the initiator core has no R bit without an expected length: build the PDU by hand
    raw = encode_pdu(ScsiCommand(itt=77, cdb=read10(0, 1), read=True, expected_length=0,
                                 cmdsn=pair.target.session.exp_cmd_sn))
    pair.target.receive_data(raw)
    task = pair.target.next_event()
    pair.target.complete_command(task, status=0, data_in=bytes(512))
    pdus = wire_pdus([b"".join(bytes(c) for c in pair.target.data_to_send())])
    assert len(pdus) == 1 and isinstance(pdus[0], ScsiResponse)
    assert pdus[0].overflow and pdus[0].residual == 512
    assert itt  # the first command completed normally
