"""COMPARE AND WRITE and ORWRITE."""

import struct
import threading

from scsi_cdbs import assert_check, assert_good, read16, rw16, write16

from difs.sam.sense import DATA_PROTECT, ILLEGAL_REQUEST, MISCOMPARE
from difs.scsi.commands import data_out_length

BS = 512


def caw(lba, n, flags=0):
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, n, 0, 0)


def orwrite(lba, n, flags=0):
    return rw16(0x8B, lba, n, flags)


def test_compare_and_write_success(fx):
    assert_good(fx.run(write16(7, 2), b"A" * (2 * BS)))
    assert data_out_length(fx.lu, caw(7, 2)) == 4 * BS
    assert_good(fx.run(caw(7, 2), b"A" * (2 * BS) + b"B" * (2 * BS)))
    assert bytes(fx.run(read16(7, 2)).data) == b"B" * (2 * BS)


def test_compare_and_write_miscompare_writes_nothing(fx):
    assert_good(fx.run(write16(0, 3), b"A" * (3 * BS)))
    verify = bytearray(b"A" * (3 * BS))
    verify[3 * BS - 27] = ord("C")
    sense = assert_check(fx.run(caw(0, 3), bytes(verify) + b"B" * (3 * BS)), MISCOMPARE, 0x1D, 0)
    assert int.from_bytes(sense[3:7], "big") == 3 * BS - 27
    assert bytes(fx.run(read16(0, 3)).data) == b"A" * (3 * BS)


def test_compare_and_write_fua_flushes(fx):
    before = fx.store.flushes
    assert_good(fx.run(caw(0, 1, flags=0x08), bytes(BS) + b"x" * BS))
    assert fx.store.flushes == before + 1


def test_compare_and_write_invalid(fx):
    assert_check(fx.run(caw(0, 1), bytes(4 * BS)), ILLEGAL_REQUEST, 0x24)   # data-out size
    assert_check(fx.run(caw(0, 1), bytes(BS)), ILLEGAL_REQUEST, 0x24)
    assert_check(fx.run(caw(0, 0), bytes(2 * BS)), ILLEGAL_REQUEST, 0x24)   # NLB 0 with data
    assert_good(fx.run(caw(0, 0), None))
    assert_check(fx.run(caw(4096, 1), bytes(2 * BS)), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(caw(0, 1, flags=0x20), bytes(2 * BS)), ILLEGAL_REQUEST, 0x24)
    fx.lu.max_compare_write_blocks = 4
    assert_check(fx.run(caw(0, 5), bytes(10 * BS)), ILLEGAL_REQUEST, 0x24)


def test_compare_and_write_read_only(make_fx):
    f = make_fx(read_only=True)
    assert_check(f.run(caw(0, 1), bytes(2 * BS)), DATA_PROTECT, 0x27)


def test_concurrent_compare_and_write_only_one_wins(fx):
    assert_good(fx.run(write16(0, 1), b"0" * BS))
    results = []

    def worker(tag):
        r = fx.lu.execute(caw(0, 1), b"0" * BS + tag * BS, fx.n1)
        results.append(r.status)

    threads = [threading.Thread(target=worker, args=(bytes((65 + i,)),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(0) == 1 and results.count(2) == 7


def test_orwrite(fx):
    assert_good(fx.run(write16(0, 2), b"\x00" * (2 * BS)))
    assert_good(fx.run(orwrite(0, 2), b"\xA5" * (2 * BS)))
    assert bytes(fx.run(read16(0, 2)).data) == b"\xA5" * (2 * BS)
    assert_good(fx.run(orwrite(0, 2), b"\x5A" * (2 * BS)))
    assert bytes(fx.run(read16(0, 2)).data) == b"\xFF" * (2 * BS)
    assert_good(fx.run(orwrite(0, 0), None))
    assert_check(fx.run(orwrite(4095, 2), bytes(2 * BS)), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(orwrite(0, 1, 0x20), bytes(BS)), ILLEGAL_REQUEST, 0x24)
    assert data_out_length(fx.lu, orwrite(0, 3)) == 3 * BS
