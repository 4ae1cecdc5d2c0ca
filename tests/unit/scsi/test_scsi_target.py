"""ScsiTarget: REPORT LUNS, missing LUNs, REPORT SUPPORTED OPERATION CODES, unknown
opcodes, SPC-2 reservations, start/stop."""

import struct
import uuid

import pytest
from scsi_cdbs import (assert_check, assert_good, inquiry, read10, report_luns, request_sense,
                       rsoc, write10)

from difs.sam.sense import ILLEGAL_REQUEST, NOT_READY
from difs.sam.status import RESERVATION_CONFLICT
from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, ScsiTarget
from difs.scsi.lun_map import decode_lun, encode_lun


def test_report_luns_lists_every_lun_even_without_lun0(fx):
    t = ScsiTarget()
    for lun in (3, 1, 300):
        t.add_lun(lun, LogicalUnit(store=MemoryStore(1 << 20),
                                   identity=LuIdentity.from_uuid(uuid.uuid4())))
    d = assert_good(t.execute(0, report_luns(), None, fx.n1)).data
    assert int.from_bytes(d[0:4], "big") == 24
    luns = [decode_lun(d[8 + 8 * i:16 + 8 * i]) for i in range(3)]
    assert luns == [1, 3, 300]
    assert d[24] == 0x41 and d[25] == 0x2C  # flat space addressing for 300
    assert encode_lun(300)[:2] == b"\x41\x2c"


def test_report_luns_truncates_and_rejects_bad_select(fx):
    assert len(assert_good(fx.target.execute(0, report_luns(alloc=12), None, fx.n1)).data) == 12
    assert_check(fx.target.execute(0, report_luns(select=7), None, fx.n1), ILLEGAL_REQUEST, 0x24)


def test_missing_lun(fx):
    d = assert_good(fx.target.execute(5, inquiry(), None, fx.n1)).data
    assert d[0] == 0x7F
    assert_check(fx.target.execute(5, read10(0, 1), None, fx.n1), ILLEGAL_REQUEST, 0x25, 0x00)
    d = assert_good(fx.target.execute(5, request_sense(), None, fx.n1)).data
    assert d[2] == ILLEGAL_REQUEST and d[12] == 0x25


def test_adding_a_lun_announces_reported_luns_changed(fx):
    fx.target.add_lun(1, LogicalUnit(store=MemoryStore(1 << 20),
                                     identity=LuIdentity.from_uuid(uuid.uuid4())))
    assert_check(fx.run(bytes(6)), 0x6, 0x3F, 0x0E)


@pytest.mark.parametrize("opcode", [0x02, 0x04, 0x3B, 0xC0, 0xFF, 0x7F])
def test_unsupported_opcode(fx, opcode):
    assert_check(fx.run(bytes((opcode,)) + bytes(15)), ILLEGAL_REQUEST, 0x20, 0x00)


def test_empty_cdb_is_invalid_opcode(fx):
    assert_check(fx.run(b""), ILLEGAL_REQUEST, 0x20)


def parse_rsoc_all(d: bytes):
    n = int.from_bytes(d[0:4], "big")
    out, pos = [], 4
    while pos < 4 + n:
        op, sa, flags, cdblen = d[pos], int.from_bytes(d[pos + 2:pos + 4], "big"), d[pos + 5], \
            int.from_bytes(d[pos + 6:pos + 8], "big")
        out.append((op, sa, flags, cdblen))
        pos += 8 + (12 if flags & 0x02 else 0)
    return out


def test_rsoc_all_and_one_command_agree(fx):
    cmds = parse_rsoc_all(bytes(assert_good(fx.run(rsoc())).data))
    ops = {c[0] for c in cmds}
    assert {0x28, 0x2A, 0x88, 0x8A, 0x12, 0x9E, 0xA0, 0xA3} <= ops
    for op, sa, flags, cdblen in cmds:
        servactv = flags & 0x01
        assert servactv or sa == 0
        one = fx.run(rsoc(2 if servactv else 1, op, sa))
        d = assert_good(one).data
        assert d[1] & 0x07 == 3 and int.from_bytes(d[2:4], "big") == cdblen
        assert d[4] == op
        wrong = fx.run(rsoc(1 if servactv else 2, op, sa))
        assert_check(wrong, ILLEGAL_REQUEST, 0x24)


def test_rsoc_usage_data_matches_validation(fx):
    d = assert_good(fx.run(rsoc(1, 0x28))).data
    usage = d[4:14]
    assert usage[1] & 0x18 == 0x18  # DPO/FUA
    cdb = bytearray(10)
    cdb[0] = 0x28
    for i in range(1, 9):
        cdb[i] = usage[i]
    cdb[2:6] = b"\x00\x00\x00\x00"
    cdb[7:9] = b"\x00\x01"
    cdb[1] &= 0x1F  # no RDPROTECT
    assert_good(fx.run(bytes(cdb)))


def test_rsoc_timeouts_and_unsupported(fx):
    cmds = parse_rsoc_all(bytes(assert_good(fx.run(rsoc(rctd=1))).data))
    assert all(f & 0x02 for _, _, f, _ in cmds)
    d = assert_good(fx.run(rsoc(1, 0xC5))).data
    assert d[1] & 0x07 == 1
    d = assert_good(fx.run(rsoc(1, 0x28, rctd=1))).data
    assert d[1] & 0x80 and int.from_bytes(d[14:16], "big") == 0x0A


def test_report_supported_tmfs(fx):
    d = assert_good(fx.run(struct.pack(">BBBBBBIBB", 0xA3, 0x0D, 0, 0, 0, 0, 4, 0, 0))).data
    assert d[0] & 0x08  # LU reset


def test_spc2_reserve_release(fx):
    reserve6, release6 = bytes((0x16, 0, 0, 0, 0, 0)), bytes((0x17, 0, 0, 0, 0, 0))
    assert_good(fx.run(reserve6))
    assert_good(fx.run(reserve6))                      # re-reserve by the holder
    assert fx.run(reserve6, nexus=fx.n2).status == RESERVATION_CONFLICT
    assert fx.run(read10(0, 1), nexus=fx.n2).status == RESERVATION_CONFLICT
    assert_good(fx.run(inquiry(), nexus=fx.n2))
    assert_good(fx.run(release6, nexus=fx.n2))         # no-op for a non-holder
    assert fx.run(bytes((0x1A, 0, 0x3F, 0, 255, 0)), nexus=fx.n2).status == RESERVATION_CONFLICT
    assert_good(fx.run(read10(0, 1)))
    assert_good(fx.run(release6))
    assert_good(fx.run(reserve6, nexus=fx.n2))
    fx.lu.nexus_lost(fx.n2)                            # logout releases it
    assert_good(fx.run(reserve6))
    fx.lu.reset()                                      # LUN reset releases it
    fx.run(bytes(6), nexus=fx.n2)
    assert_good(fx.run(reserve6, nexus=fx.n2))


def test_start_stop_unit(fx):
    stop, start = bytes((0x1B, 0, 0, 0, 0, 0)), bytes((0x1B, 0, 0, 0, 1, 0))
    assert_good(fx.run(stop))
    assert_check(fx.run(bytes(6)), NOT_READY, 0x04, 0x02)
    assert_check(fx.run(read10(0, 1)), NOT_READY, 0x04, 0x02)
    assert_good(fx.run(inquiry()))
    assert_good(fx.run(start))
    assert_good(fx.run(write10(0, 1), bytes(512)))
    assert_check(fx.run(bytes((0x1B, 0, 0, 0, 0x02, 0))), ILLEGAL_REQUEST, 0x24)  # LOEJ
    assert_good(fx.run(bytes((0x1B, 1, 0, 0, 0x20, 0))))                          # IDLE
    assert_good(fx.run(bytes((0x1E, 0, 0, 0, 1, 0))))
