"""READ CAPACITY 10/16, SYNCHRONIZE CACHE, PRE-FETCH, VERIFY, READ DEFECT DATA."""

import struct

import pytest
from scsi_cdbs import (assert_check, assert_good, read_capacity10, read_capacity16, rw10, rw16,
                       sync_cache10, verify10, write10)

from difs.sam.sense import ILLEGAL_REQUEST, MISCOMPARE
from difs.scsi.commands import data_out_length

BS = 512


def test_read_capacity10(fx):
    d = assert_good(fx.run(read_capacity10())).data
    assert struct.unpack(">II", d) == (4095, 512)


def test_read_capacity10_lba_without_pmi_is_invalid(fx):
    cdb = bytearray(read_capacity10())
    cdb[5] = 1
    assert_check(fx.run(bytes(cdb)), ILLEGAL_REQUEST, 0x24)


def test_read_capacity16_full_and_truncated(fx):
    d = assert_good(fx.run(read_capacity16(32))).data
    lba, bs = struct.unpack_from(">QI", d)
    assert (lba, bs) == (4095, 512)
    assert d[13] & 0x0F == 0          # physical block = logical block by default
    assert d[14] & 0xC0 == 0          # fully provisioned
    for alloc in range(0, 16):
        assert len(assert_good(fx.run(read_capacity16(alloc))).data) == alloc


def test_read_capacity16_reports_a_configured_physical_block(make_fx):
    f = make_fx(physical_block_size=4096)
    d = assert_good(f.run(read_capacity16(32))).data
    assert d[13] & 0x0F == 3          # 8 logical blocks per 4 KiB physical block


def test_read_capacity16_thin_sets_lbpme_lbprz(make_fx):
    f = make_fx(thin=True)
    d = assert_good(f.run(read_capacity16())).data
    assert d[14] & 0x80 and d[14] & 0x40


def test_unknown_service_action_in_is_invalid_field_at_byte1(fx):
    sense = assert_check(fx.run(struct.pack(">BBQIBB", 0x9E, 0x1F, 0, 32, 0, 0)),
                         ILLEGAL_REQUEST, 0x24)
    assert int.from_bytes(sense[16:18], "big") == 1


def test_synchronize_cache_flushes_and_checks_range(fx):
    before = fx.store.flushes
    assert_good(fx.run(sync_cache10()))
    assert fx.store.flushes == before + 1
    assert_good(fx.run(rw16(0x91, 10, 20)))
    assert fx.store.flushes == before + 2
    assert_check(fx.run(sync_cache10(4096, 1)), ILLEGAL_REQUEST, 0x21)


def test_prefetch(fx):
    assert_good(fx.run(rw10(0x34, 0, 0)))
    assert_good(fx.run(rw10(0x34, 4095, 1, flags=0x02)))
    assert_check(fx.run(rw10(0x34, 4096, 1)), ILLEGAL_REQUEST, 0x21)
    assert_good(fx.run(rw16(0x90, 100, 256)))
    assert_check(fx.run(rw16(0x90, 2**63, 1)), ILLEGAL_REQUEST, 0x21)


def test_verify_bytchk0_checks_range_only(fx):
    assert_good(fx.run(verify10(0, 16)))
    assert_check(fx.run(verify10(4096, 1)), ILLEGAL_REQUEST, 0x21)
    assert data_out_length(fx.lu, verify10(0, 16)) == 0


def test_verify_bytchk1_match_and_miscompare_with_offset(fx):
    data = bytes(range(256)) * 8  # 4 blocks
    assert_good(fx.run(write10(8, 4), data))
    assert data_out_length(fx.lu, verify10(8, 4, 1)) == 4 * BS
    assert_good(fx.run(verify10(8, 4, 1), data))
    bad = bytearray(data)
    bad[1234] ^= 0x58
    sense = assert_check(fx.run(verify10(8, 4, 1), bytes(bad)), MISCOMPARE, 0x1D, 0x00)
    assert sense[0] & 0x80                               # VALID
    assert int.from_bytes(sense[3:7], "big") == 1234     # INFORMATION: byte offset


def test_verify_bytchk3_compares_one_block_with_each(fx):
    assert_good(fx.run(write10(0, 3), b"\x11" * (3 * BS)))
    assert_good(fx.run(verify10(0, 3, 3), b"\x11" * BS))
    assert_check(fx.run(verify10(0, 3, 3), b"\x12" * BS), MISCOMPARE, 0x1D)


def test_verify_vrprotect_and_reserved_bytchk(fx):
    assert_check(fx.run(verify10(0, 1, 1, flags=0x20), bytes(BS)), ILLEGAL_REQUEST, 0x24)
    assert_check(fx.run(verify10(0, 1, 2)), ILLEGAL_REQUEST, 0x24)


def test_write_and_verify_writes_and_is_stable(fx):
    before = fx.store.flushes
    assert_good(fx.run(rw10(0x2E, 5, 1, flags=0x02), b"w" * BS))
    assert fx.store.pread(5 * BS, BS) == b"w" * BS
    assert fx.store.flushes == before + 1
    assert_check(fx.run(rw10(0x2E, 4096, 1), b"w" * BS), ILLEGAL_REQUEST, 0x21)


@pytest.mark.parametrize("cdb", [
    bytes((0x37, 0, 0, 0, 0, 0, 0, 0, 32, 0)),
    struct.pack(">BBIIBB", 0xB7, 0, 0, 32, 0, 0),
])
def test_read_defect_data_returns_empty_list(fx, cdb):
    d = assert_good(fx.run(cdb)).data
    assert len(d) in (4, 8) and not any(d[2:])
