"""READ / WRITE 6/10/12/16, data-out length handling, FUA, write protection."""

import pytest
from scsi_cdbs import (assert_check, assert_good, read6, read10, read16, rw12, write6, write10,
                       write16)

from difs.sam.sense import DATA_PROTECT, ILLEGAL_REQUEST
from difs.scsi.commands import data_out_length

BS = 512


def pattern(n_blocks: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n_blocks * BS))


@pytest.mark.parametrize("write,read", [
    (lambda l, n: write10(l, n), lambda l, n: read10(l, n)),
    (lambda l, n: write16(l, n), lambda l, n: read16(l, n)),
    (lambda l, n: rw12(0xAA, l, n), lambda l, n: rw12(0xA8, l, n)),
    (lambda l, n: write6(l, n), lambda l, n: read6(l, n)),
])
def test_write_then_read_round_trip(fx, write, read):
    data = pattern(3)
    assert_good(fx.run(write(10, 3), data))
    r = assert_good(fx.run(read(10, 3)))
    assert bytes(r.data) == data
    assert fx.store.pread(10 * BS, 3 * BS) == data


def test_read6_length_zero_means_256_blocks(fx):
    r = assert_good(fx.run(read6(0, 0)))
    assert len(r.data) == 256 * BS


def test_write6_length_zero_means_256_blocks(fx):
    assert data_out_length(fx.lu, write6(0, 0)) == 256 * BS
    assert_good(fx.run(write6(0, 0), b"\xAB" * (256 * BS)))
    assert fx.store.pread(255 * BS, BS) == b"\xAB" * BS


def test_read10_zero_blocks_is_good_and_empty(fx):
    r = assert_good(fx.run(read10(0, 0)))
    assert len(r.data) == 0


@pytest.mark.parametrize("lba,n", [(4096, 1), (4095, 2), (0x80000000, 1), (0xFFFFFFFF, 1), (4097, 0)])
def test_read10_beyond_end_is_lba_out_of_range(fx, lba, n):
    assert_check(fx.run(read10(lba, n)), ILLEGAL_REQUEST, 0x21, 0x00)


@pytest.mark.parametrize("lba,n", [(4096, 1), (4095, 2), (2**63, 1), (2**64 - 1, 1)])
def test_write16_beyond_end_is_lba_out_of_range(fx, lba, n):
    assert_check(fx.run(write16(lba, n), bytes(n * BS)), ILLEGAL_REQUEST, 0x21, 0x00)


def test_read_at_last_block_is_good(fx):
    assert_good(fx.run(read10(4095, 1)))
    assert_good(fx.run(read16(4096 - 256, 256)))


def test_read6_beyond_end(fx):
    assert_check(fx.run(read6(4096, 1)), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(read6(0x1FFFFF, 5)), ILLEGAL_REQUEST, 0x21)


@pytest.mark.parametrize("prot", range(1, 8))
def test_rdprotect_and_wrprotect_without_pi_are_invalid_field(fx, prot):
    sense = assert_check(fx.run(read10(0, 1, prot << 5)), ILLEGAL_REQUEST, 0x24, 0x00)
    assert sense[15] & 0x80 and sense[15] & 0x40  # SKSV, C/D=CDB
    assert int.from_bytes(sense[16:18], "big") == 1
    assert_check(fx.run(write16(0, 1, prot << 5), bytes(BS)), ILLEGAL_REQUEST, 0x24)


def test_dpo_fua_fua_nv_accepted(fx):
    for flags in (0x10, 0x08, 0x18, 0x02, 0x1A):
        assert_good(fx.run(write10(0, 1, flags), bytes(BS)))
        assert_good(fx.run(read10(0, 1, flags)))


def test_fua_write_flushes(fx):
    before = fx.store.flushes
    assert_good(fx.run(write10(0, 1), bytes(BS)))
    assert fx.store.flushes == before
    assert_good(fx.run(write10(0, 1, 0x08), bytes(BS)))
    assert fx.store.flushes == before + 1
    assert_good(fx.run(write16(0, 1, 0x08), bytes(BS)))
    assert fx.store.flushes == before + 2


def test_write_through_when_write_cache_disabled(make_fx):
    f = make_fx(write_cache=False)
    before = f.store.flushes
    assert_good(f.run(write10(0, 1), bytes(BS)))
    assert f.store.flushes == before + 1


def test_group_number_is_accepted(fx):
    from scsi_cdbs import rw10
    assert_good(fx.run(rw10(0x2A, 0, 1, group=0x3F), bytes(BS)))


def test_reserved_bit_is_invalid_field_with_pointer(fx):
    from scsi_cdbs import rw10
    cdb = bytearray(rw10(0x28, 0, 1))
    cdb[6] = 0x40  # reserved bit above the group number
    sense = assert_check(fx.run(bytes(cdb)), ILLEGAL_REQUEST, 0x24)
    assert int.from_bytes(sense[16:18], "big") == 6
    assert sense[15] & 0x08 and sense[15] & 0x07 == 6  # BPV, bit 6


def test_control_byte_naca_is_rejected_and_vendor_bits_ignored(fx):
    from scsi_cdbs import rw10
    sense = assert_check(fx.run(rw10(0x28, 0, 1, control=0x04)), ILLEGAL_REQUEST, 0x24)
    assert int.from_bytes(sense[16:18], "big") == 9
    assert_good(fx.run(rw10(0x28, 0, 1, control=0xC0)))


def test_transfer_longer_than_maximum_is_invalid_field(make_fx):
    f = make_fx(max_transfer_bytes=64 * BS)
    assert_good(f.run(read10(0, 64)))
    assert_check(f.run(read10(0, 65)), ILLEGAL_REQUEST, 0x24)


def test_short_data_out_writes_whole_blocks_received(fx):
    assert_good(fx.run(write10(0, 2), b"a" * (2 * BS)))
    assert_good(fx.run(write10(0, 2), b"b" * BS))  # EDTL one block, TL two blocks
    assert fx.store.pread(0, 2 * BS) == b"b" * BS + b"a" * BS


def test_long_data_out_is_truncated_to_transfer_length(fx):
    assert_good(fx.run(write10(0, 2), b"a" * (2 * BS)))
    assert_good(fx.run(write10(0, 1), b"b" * (2 * BS)))
    assert fx.store.pread(0, 2 * BS) == b"b" * BS + b"a" * BS


def test_no_data_out_writes_nothing(fx):
    assert_good(fx.run(write10(0, 1), b"z" * BS))
    assert_good(fx.run(write10(0, 1), None))
    assert fx.store.pread(0, BS) == b"z" * BS


def test_partial_block_data_out_is_invalid_field_in_command_iu(fx):
    assert_check(fx.run(write10(0, 1), b"x" * 200), ILLEGAL_REQUEST, 0x0E, 0x03)


def test_transfer_length_bytes(fx):
    assert data_out_length(fx.lu, write10(0, 3)) == 3 * BS
    assert data_out_length(fx.lu, write16(0, 5)) == 5 * BS
    assert data_out_length(fx.lu, read10(0, 3)) == 0
    assert fx.target.execute(0, write10(0, 2), bytes(2 * BS), fx.n1).transfer_length == 2 * BS
    assert fx.target.execute(7, write10(0, 2), bytes(2 * BS), fx.n1).transfer_length == 0


def test_write_to_read_only_is_data_protect(make_fx):
    f = make_fx(read_only=True)
    assert_check(f.run(write10(0, 1), bytes(BS)), DATA_PROTECT, 0x27, 0x00)
    assert_check(f.run(write16(0, 1), bytes(BS)), DATA_PROTECT, 0x27, 0x00)
    assert_good(f.run(read10(0, 1)))


def test_store_error_becomes_medium_error(fx):
    def broken(offset, length):
        raise OSError(5, "EIO")
    fx.store.pread = broken
    assert_check(fx.run(read10(0, 1)), 0x3, 0x11, 0x00)
