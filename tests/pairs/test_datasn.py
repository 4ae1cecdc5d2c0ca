"""A Data-Out whose DataSN is out of sequence (offsets right) fails its command, not the
connection (RFC 7143 7.1.4.1, implied digest error at ErrorRecoveryLevel 0) — what
libiscsi's iSCSIDataSnInvalid expects; a Data-Out at the wrong offset still ends it."""

from __future__ import annotations

import struct

import pytest

from difs.iscsi.events import ConnectionClosed
from difs.iscsi.initiator_events import CommandComplete

from .helpers import ConnectionPair, initiator_config, portal_config, read10, write10


def pump_tampering(pair: ConnectionPair, tamper) -> None:
    """Like pair.pump(), with ``tamper(pdu_bytes) -> pdu_bytes`` applied to Data-Out PDUs
    on their way to the target."""
    for _ in range(1000):
        out = b"".join(bytes(c) for c in pair.initiator.data_to_send())
        if out:
            pdus, pos = [], 0
            while pos < len(out):
                dlen = int.from_bytes(out[pos + 5:pos + 8], "big")
                size = 48 + out[pos + 4] * 4 + ((dlen + 3) & ~3)
                pdu = out[pos:pos + size]
                pdus.append(tamper(pdu) if pdu[0] & 0x3F == 0x05 else pdu)
                pos += size
            pair.target.receive_data(b"".join(pdus))
        moved = bool(out)
        while (event := pair.target.next_event()) is not None:
            pair.target_events.append(event)
            if type(event).__name__ == "ScsiTask":
                pair.disk.execute(pair.target, event)
            moved = True
        back = pair.target.data_to_send()
        if back:
            pair.initiator.receive_data(b"".join(bytes(c) for c in back))
            moved = True
        while (event := pair.initiator.next_event()) is not None:
            pair.initiator_events.append(event)
            moved = True
        if not moved:
            return
    raise AssertionError("pair did not settle")


def set_datasn(value):
    def tamper(pdu: bytes) -> bytes:
        return pdu[:36] + struct.pack(">I", value(struct.unpack_from(">I", pdu, 36)[0])) + pdu[40:]
    return tamper


@pytest.mark.parametrize("change", [lambda sn: 0, lambda sn: 27, lambda sn: 0xFFFFFFFF,
                                    lambda sn: 1 - sn], ids=["zero", "27", "minus1", "swapped"])
def test_bad_datasn_fails_the_command_and_keeps_the_connection(change) -> None:
    pair = ConnectionPair(
        portal=portal_config(immediate_data=False, initial_r2t=True),
        initiator=initiator_config(immediate_data=False, initial_r2t=True,
                                   max_recv_data_segment_length=512))
    pair.pump()
    pair.initiator.send_limit = 512  # two Data-Out PDUs for a 1 KiB write, DataSN 0 and 1
    pair.initiator.submit_command(0, write10(8, 2), data_out=b"\x5a" * 1024)
    pump_tampering(pair, set_datasn(change))
    [done] = pair.events_of("initiator", CommandComplete)
    if change(0) == 0 and change(1) == 1:
        pytest.fail("tamper did not change anything")
    assert done.status == 0x02 and done.sense[2] & 0x0F == 0x0B
    assert (done.sense[12], done.sense[13]) == (0x47, 0x05)
    assert not pair.events_of("target", ConnectionClosed)
    # the corrupt data never reached the disk, and the connection still works
    assert pair.disk.blocks.get(8) is None
    pair.initiator.submit_command(0, read10(8, 1), expected_in_length=512)
    pair.pump()
    assert pair.events_of("initiator", CommandComplete)[-1].status == 0


def test_data_out_at_the_wrong_offset_ends_the_connection() -> None:
    pair = ConnectionPair(
        portal=portal_config(immediate_data=False, initial_r2t=True),
        initiator=initiator_config(immediate_data=False, initial_r2t=True))
    pair.pump()
    pair.initiator.submit_command(0, write10(8, 2), data_out=b"\x5a" * 1024)

    def shift(pdu: bytes) -> bytes:
        return pdu[:40] + struct.pack(">I", 512) + pdu[44:]

    pump_tampering(pair, shift)
    assert pair.events_of("target", ConnectionClosed)
