"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS, within one LU and between LUs."""

import struct
import uuid

from scsi_cdbs import assert_check, assert_good, inquiry, read16, write16

from difs.sam.sense import COPY_ABORTED, DATA_PROTECT, ILLEGAL_REQUEST
from difs.scsi import LogicalUnit, LuIdentity, MemoryStore

BS = 512


def naa_designator(fx, lu=None):
    """The designator libiscsi picks: the NAA one from VPD 83h, header without PIV."""
    lu = lu or fx.lu
    d = bytes(assert_good(lu.execute(inquiry(255, 1, 0x83), None, fx.n1)).data)
    desc = d[4:4 + 4 + d[7]]
    assert desc[1] & 0x0F == 3
    return bytes((desc[0] & 0x0F, desc[1] & 0x3F, 0, desc[3])) + desc[4:]


def cscd(designator, block_size=BS, dtype=0xE4, periph=0):
    d = bytearray(32)
    d[0], d[1] = dtype, periph
    d[4:4 + len(designator)] = designator
    d[29:32] = block_size.to_bytes(3, "big")
    return bytes(d)


def b2b(src, dst, n, src_lba, dst_lba, dtype=0x02):
    return struct.pack(">BBHHH2xHQQ", dtype, 0, 0x18, src, dst, n, src_lba, dst_lba)


def param_list(cscds, segs, list_id=1, usage=0):
    c, s = b"".join(cscds), b"".join(segs)
    return struct.pack(">BBH4xII", list_id, usage << 3, len(c), len(s), 0) + c + s


def xcopy(fx, params, length=None, lu=None):
    n = len(params) if length is None else length
    cdb = struct.pack(">BB8xIBB", 0x83, 0, n, 0, 0)
    return (lu or fx.lu).execute(cdb, params, fx.n1)


def rcr(sa, list_id=0, alloc=1024):
    return struct.pack(">BBB7xIBB", 0x84, sa, list_id, alloc, 0, 0)


def test_copy_within_one_lu(fx):
    assert_good(fx.run(write16(0, 16), b"A" * (16 * BS)))
    des = naa_designator(fx)
    assert_good(xcopy(fx, param_list([cscd(des)], [b2b(0, 0, 16, 0, 4096 - 16)], usage=2)))
    assert bytes(assert_good(fx.run(read16(4096 - 16, 16))).data) == b"A" * (16 * BS)


def test_copy_between_two_lus_of_a_target(fx):
    other = LogicalUnit(store=MemoryStore(1 << 20), identity=LuIdentity.from_uuid(uuid.uuid4()))
    fx.target.add_lun(1, other)
    fx.run(bytes(6))  # reported LUNs changed
    other.execute(bytes(6), None, fx.n1)
    assert_good(fx.run(write16(100, 4), b"Z" * (4 * BS)))
    src, dst = naa_designator(fx), naa_designator(fx, other)
    assert_good(xcopy(fx, param_list([cscd(src), cscd(dst)], [b2b(0, 1, 4, 100, 7)])))
    assert other.store.pread(7 * BS, 4 * BS) == b"Z" * (4 * BS)


def test_descriptor_limits_and_list_lengths(fx):
    des = naa_designator(fx)
    too_many_cscd = param_list([cscd(des)] * 3, [b2b(0, 0, 1, 0, 1)])
    assert_check(xcopy(fx, too_many_cscd), ILLEGAL_REQUEST, 0x26, 0x06)
    too_many_seg = param_list([cscd(des)], [b2b(0, 0, 1, 0, 1)] * 2)
    assert_check(xcopy(fx, too_many_seg), ILLEGAL_REQUEST, 0x26, 0x08)
    too_long = param_list([cscd(des)] * 3, [b2b(0, 0, 1, 0, 1)] * 34)
    assert_check(xcopy(fx, too_long), ILLEGAL_REQUEST, 0x1A, 0x00)
    ok = param_list([cscd(des)], [b2b(0, 0, 1, 0, 1)])
    assert_check(xcopy(fx, ok[:16 + 31], length=16 + 31), ILLEGAL_REQUEST, 0x1A)
    assert_check(xcopy(fx, ok[:-1], length=len(ok) - 1), ILLEGAL_REQUEST, 0x1A)
    assert_good(xcopy(fx, b"", length=0))


def test_unsupported_descriptor_types(fx):
    des = naa_designator(fx)
    assert_check(xcopy(fx, param_list([cscd(des, dtype=0xE0)], [b2b(0, 0, 1, 0, 1)])),
                 ILLEGAL_REQUEST, 0x26, 0x07)
    assert_check(xcopy(fx, param_list([cscd(des)], [b2b(0, 0, 1, 0, 1, dtype=0x03)])),
                 ILLEGAL_REQUEST, 0x26, 0x09)


def test_copy_aborted_cases(fx):
    des = naa_designator(fx)
    assert_check(xcopy(fx, param_list([cscd(des)], [b2b(0, 1, 16, 0, 100)])), COPY_ABORTED)
    assert_check(xcopy(fx, param_list([cscd(des)], [b2b(0, 0, 16, 0, 4095)])), COPY_ABORTED)
    unknown = bytes((1, 3, 0, 16)) + bytes(16)
    assert_check(xcopy(fx, param_list([cscd(unknown)], [b2b(0, 0, 1, 0, 1)])), COPY_ABORTED)
    assert_check(xcopy(fx, param_list([cscd(des, block_size=4096)], [b2b(0, 0, 1, 0, 1)])),
                 COPY_ABORTED)


def test_lu_id_type_is_ignored(fx):
    des = naa_designator(fx)
    desc = bytearray(cscd(des))
    desc[1] |= 0xC0
    assert_good(xcopy(fx, param_list([bytes(desc)], [b2b(0, 0, 1, 0, 1)])))


def test_copy_to_read_only_lu(make_fx):
    f = make_fx(read_only=True)
    des = naa_designator(f)
    assert_check(xcopy(f, param_list([cscd(des)], [b2b(0, 0, 1, 0, 1)])), DATA_PROTECT)


def test_receive_copy_results(fx):
    assert_check(fx.run(rcr(0, list_id=1)), ILLEGAL_REQUEST, 0x24)
    des = naa_designator(fx)
    assert_good(xcopy(fx, param_list([cscd(des)], [b2b(0, 0, 8, 0, 64)], list_id=1)))
    d = bytes(assert_good(fx.run(rcr(0, list_id=1))).data)
    assert d[4] & 0x7F == 1 and struct.unpack_from(">I", d, 8)[0] == 8 * BS
    assert_check(fx.run(rcr(0, list_id=1), nexus=fx.n2), ILLEGAL_REQUEST, 0x24)
    op = bytes(assert_good(fx.run(rcr(3))).data)
    assert struct.unpack_from(">HHI", op, 8) == (2, 1, 1024)
    assert op[43] == 2 and set(op[44:46]) == {0x02, 0xE4}
    assert_check(fx.run(rcr(4)), ILLEGAL_REQUEST, 0x24)


def test_inquiry_advertises_3pc(fx):
    assert assert_good(fx.run(inquiry())).data[5] & 0x08
