"""WRITE SAME(10/16), UNMAP, GET LBA STATUS on thin and fully provisioned LUs."""

import struct

import pytest
from scsi_cdbs import assert_check, assert_good, read10, rw10, rw16, write10

from difs.sam.sense import DATA_PROTECT, ILLEGAL_REQUEST
from difs.scsi.commands import data_out_length

BS = 512


def ws10(lba, n, unmap=0, anchor=0, prot=0):
    return rw10(0x41, lba, n, flags=(prot << 5) | (0x10 if anchor else 0) | (0x08 if unmap else 0))


def ws16(lba, n, unmap=0, ndob=0, prot=0):
    return rw16(0x93, lba, n, flags=(prot << 5) | (0x08 if unmap else 0) | (0x01 if ndob else 0))


def unmap_cdb(length):
    return struct.pack(">BBIBHB", 0x42, 0, 0, 0, length, 0)


def unmap_params(*extents):
    descs = b"".join(struct.pack(">QII", lba, n, 0) for lba, n in extents)
    return struct.pack(">HH4x", 6 + len(descs), len(descs)) + descs


def lba_status(lba=0, alloc=1024):
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


def parse_status(d):
    n = (int.from_bytes(d[0:4], "big") - 4) // 16
    return [(int.from_bytes(d[8 + 16 * i:16 + 16 * i], "big"),
             int.from_bytes(d[16 + 16 * i:20 + 16 * i], "big"), d[20 + 16 * i]) for i in range(n)]


@pytest.fixture
def thin(make_fx):
    return make_fx(thin=True)


def test_write_same_pattern(fx):
    block = bytes(range(256)) * 2
    assert_good(fx.run(ws10(10, 5), block))
    assert fx.store.pread(10 * BS, 5 * BS) == block * 5
    assert_good(fx.run(ws16(4096 - 3, 3), block))
    assert fx.store.pread((4096 - 3) * BS, 3 * BS) == block * 3


def test_write_same_zero_without_unmap_keeps_blocks_readable_as_zero(fx):
    assert_good(fx.run(write10(0, 4), b"\xFF" * (4 * BS)))
    assert_good(fx.run(ws10(0, 4), bytes(BS)))
    assert fx.store.pread(0, 4 * BS) == bytes(4 * BS)


def test_write_same_zero_blocks_writes_to_the_last_lba(fx):
    block = b"\x5A" * BS
    assert_good(fx.run(ws10(4000, 0), block))
    assert fx.store.pread(4000 * BS, 96 * BS) == block * 96
    assert fx.store.pread(3999 * BS, BS) == bytes(BS)
    assert_good(fx.run(ws16(4090, 0), bytes(BS)))
    assert fx.store.pread(4090 * BS, 6 * BS) == bytes(6 * BS)
    assert_check(fx.run(ws10(4096, 0), block), ILLEGAL_REQUEST, 0x21)          # past the end
    assert_check(fx.run(ws16(2**63, 0), block), ILLEGAL_REQUEST, 0x21)


def test_write_same_zero_blocks_beyond_maximum_write_same_length(make_fx):
    f = make_fx()
    f.lu.max_write_same_blocks = 100
    assert_check(f.run(ws10(0, 0), bytes(BS)), ILLEGAL_REQUEST, 0x24)           # 4096 > 100
    assert_good(f.run(ws10(4096 - 100, 0), bytes(BS)))
    assert_check(f.run(ws10(4096 - 101, 0), bytes(BS)), ILLEGAL_REQUEST, 0x24)


def test_write_same_checks(fx):
    assert_check(fx.run(ws10(4096, 1), bytes(BS)), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(ws16(2**64 - 1, 1), bytes(BS)), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(ws10(0, 1, prot=1), bytes(BS)), ILLEGAL_REQUEST, 0x24)
    assert_check(fx.run(ws10(0, 1, unmap=1), bytes(BS)), ILLEGAL_REQUEST, 0x24)  # not thin
    assert_check(fx.run(ws10(0, 1), bytes(BS // 2)), ILLEGAL_REQUEST)            # short data
    assert_check(fx.run(ws10(0, 1), bytes(2 * BS)), ILLEGAL_REQUEST)             # long data
    assert data_out_length(fx.lu, ws10(0, 9)) == BS
    assert data_out_length(fx.lu, ws16(0, 9, ndob=1)) == 0


def test_write_same_on_read_only_is_data_protect_even_with_unmap(make_fx):
    f = make_fx(read_only=True)
    assert_check(f.run(ws10(0, 1, unmap=1), None), DATA_PROTECT, 0x27)
    assert_check(f.run(ws16(0, 1), bytes(BS)), DATA_PROTECT, 0x27)


def test_write_same_unmap_deallocates_on_thin(thin):
    assert_good(thin.run(write10(0, 16), b"\xEE" * (16 * BS)))
    assert parse_status(assert_good(thin.run(lba_status(0))).data)[0] == (0, 16, 0)
    assert_good(thin.run(ws10(0, 8, unmap=1), bytes(BS)))
    assert thin.store.pread(0, 8 * BS) == bytes(8 * BS)
    assert thin.store.pread(8 * BS, BS) == b"\xEE" * BS
    st = parse_status(assert_good(thin.run(lba_status(0))).data)
    assert st[0] == (0, 8, 1) and st[1] == (8, 8, 0)
    assert_good(thin.run(ws16(8, 8, unmap=1, ndob=1), None))
    assert parse_status(assert_good(thin.run(lba_status(0))).data)[0] == (0, 4096, 1)


def test_anchor_is_not_supported(thin):
    assert_check(thin.run(ws10(0, 1, unmap=1, anchor=1), bytes(BS)), ILLEGAL_REQUEST, 0x24)
    assert_check(thin.run(bytes((0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0)), unmap_params((0, 1))),
                 ILLEGAL_REQUEST, 0x24)


def test_unmap_is_only_offered_on_thin_lus(fx, thin):
    assert_check(fx.run(unmap_cdb(24), unmap_params((0, 8))), ILLEGAL_REQUEST, 0x20)
    assert_good(thin.run(unmap_cdb(24), unmap_params((0, 8))))


def test_unmap_extents(thin):
    assert_good(thin.run(write10(0, 64), b"\x77" * (64 * BS)))
    params = unmap_params((0, 8), (16, 8), (40, 0))
    assert_good(thin.run(unmap_cdb(len(params)), params))
    assert thin.store.pread(0, 8 * BS) == bytes(8 * BS)
    assert thin.store.pread(8 * BS, 8 * BS) == b"\x77" * (8 * BS)
    assert thin.store.pread(16 * BS, 8 * BS) == bytes(8 * BS)
    st = parse_status(assert_good(thin.run(lba_status(0))).data)
    assert st[:4] == [(0, 8, 1), (8, 8, 0), (16, 8, 1), (24, 40, 0)]


def test_unmap_parameter_errors(thin):
    assert_good(thin.run(unmap_cdb(0), None))
    assert_check(thin.run(unmap_cdb(4), bytes(4)), ILLEGAL_REQUEST, 0x1A)
    params = unmap_params((0, 1))
    assert_check(thin.run(unmap_cdb(len(params) + 16), params), ILLEGAL_REQUEST, 0x1A)
    assert_check(thin.run(unmap_cdb(24), unmap_params((4090, 10))), ILLEGAL_REQUEST, 0x21)
    too_many = unmap_params(*[(i, 1) for i in range(thin.lu.max_unmap_descriptors + 1)])
    assert_check(thin.run(unmap_cdb(len(too_many)), too_many), ILLEGAL_REQUEST, 0x26)
    assert_good(thin.run(unmap_cdb(24), unmap_params((4096, 0))))


def test_unmap_read_only(make_fx):
    f = make_fx(thin=True, read_only=True)
    assert_check(f.run(unmap_cdb(24), unmap_params((0, 8))), DATA_PROTECT, 0x27)


def test_get_lba_status_range_and_allocation(fx, thin):
    assert_check(thin.run(lba_status(4096)), ILLEGAL_REQUEST, 0x21)
    assert_check(thin.run(lba_status(2**63)), ILLEGAL_REQUEST, 0x21)
    d = assert_good(thin.run(lba_status(5, alloc=24))).data
    assert len(d) == 24 and parse_status(d)[0][0] == 5
    assert parse_status(assert_good(fx.run(lba_status(100))).data) == [(100, 3996, 0)]
    assert len(assert_good(fx.run(lba_status(0, alloc=4))).data) == 4


def test_unmapped_blocks_read_zero(thin):
    assert_good(thin.run(write10(100, 1), b"\x01" * BS))
    assert_good(thin.run(unmap_cdb(24), unmap_params((100, 1))))
    assert bytes(assert_good(thin.run(read10(100, 1))).data) == bytes(BS)


# --- resource provisioning (thick volumes that accept UNMAP) -----------------------------


@pytest.fixture
def resource(make_fx):
    return make_fx(provisioning="resource")


def test_resource_provisioned_lu_advertises_lbpme_and_resource_type(resource):
    from scsi_cdbs import inquiry, read_capacity16

    rc16 = assert_good(resource.run(read_capacity16())).data
    assert rc16[14] & 0xC0 == 0xC0                               # LBPME, LBPRZ
    b2 = assert_good(resource.run(inquiry(evpd=1, page=0xB2))).data
    assert b2[5] & 0xE0 == 0xE0 and b2[5] & 0x1C == 0x04         # LBPU LBPWS LBPWS10, LBPRZ=1
    assert b2[6] & 0x07 == 1                                     # resource provisioned
    b0 = assert_good(resource.run(inquiry(evpd=1, page=0xB0))).data
    assert int.from_bytes(b0[20:24], "big") > 0                  # UNMAP limits


def test_resource_provisioned_unmap_zeroes_in_place_and_reports_anchored(resource):
    store = resource.store
    assert_good(resource.run(write10(0, 64), b"\xEE" * (64 * BS)))
    assert_good(resource.run(unmap_cdb(24), unmap_params((8, 16))))
    assert_good(resource.run(ws16(32, 8, unmap=1), bytes(BS)))
    assert store.pread(0, 64 * BS) == (b"\xEE" * (8 * BS) + bytes(16 * BS) + b"\xEE" * (8 * BS)
                                      + bytes(8 * BS) + b"\xEE" * (24 * BS))
    # the space stays reserved: the memory store saw zero writes, never a discard
    assert all(store._alloc[:8])
    d = assert_good(resource.run(lba_status(0))).data
    assert all(state in (0, 2) for _, _, state in parse_status(d))   # mapped or anchored


def test_resource_provisioned_get_lba_status_says_anchored_not_deallocated(make_fx):
    from difs.scsi import MemoryStore

    f = make_fx(provisioning="resource")
    f.lu.store = store = MemoryStore(f.store.size)             # nothing allocated yet
    f.store = store
    assert_good(f.run(write10(0, 8), b"\x01" * (8 * BS)))
    d = assert_good(f.run(lba_status(0))).data
    assert parse_status(d)[:2] == [(0, 8, 0), (8, 4096 - 8, 2)]


def test_unknown_provisioning_is_refused(make_fx):
    with pytest.raises(ValueError, match="provisioning"):
        make_fx(provisioning="sparse")


@pytest.mark.parametrize("provisioning", ["thin", "resource"])
def test_write_same_unmap_ignores_the_block_it_carries(make_fx, provisioning):
    f = make_fx(provisioning=provisioning)
    assert_good(f.run(write10(4096 - 16, 16), b"\xFF" * (16 * BS)))
    assert_good(f.run(ws10(4096 - 16, 0, unmap=1), b"\xFF" * BS))   # to the end, 0xFF block
    assert f.store.pread((4096 - 16) * BS, 16 * BS) == bytes(16 * BS)
