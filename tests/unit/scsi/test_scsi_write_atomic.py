"""WRITE ATOMIC(16): CDB checks, range checks, data, and the FileStore journal that makes
the write all-or-nothing across a crash."""

import os
import struct
import uuid

import pytest
from scsi_cdbs import assert_check, assert_good, rsoc, write10

from difs.sam.sense import DATA_PROTECT, ILLEGAL_REQUEST
from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus
from difs.storage.filestore import _JOURNAL, _JOURNAL_MAGIC, FileStore
from difs.scsi.commands import data_out_length

BS = 512
MiB = 1 << 20


def wa16(lba: int, n: int, *, flags: int = 0, boundary: int = 0, group: int = 0) -> bytes:
    return struct.pack(">BBQHHBB", 0x9C, flags, lba & (2**64 - 1), boundary, n, group, 0)


def test_write_atomic_writes_the_blocks(fx):
    data = os.urandom(16 * BS)
    assert_good(fx.run(wa16(100, 16), data))
    assert fx.store.pread(100 * BS, 16 * BS) == data
    assert fx.store.flushes >= 1                       # stable before GOOD
    assert data_out_length(fx.lu, wa16(0, 16)) == 16 * BS


def test_write_atomic_zero_blocks_and_range(fx):
    assert_good(fx.run(wa16(0, 0), None))
    assert_good(fx.run(wa16(4095, 1), bytes(BS)))
    assert_check(fx.run(wa16(4096, 0), None), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(wa16(4095, 2), bytes(2 * BS)), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(wa16(2**63, 1), bytes(BS)), ILLEGAL_REQUEST, 0x21)
    assert_check(fx.run(wa16(2**64 - 1, 1), bytes(BS)), ILLEGAL_REQUEST, 0x21)


def test_write_atomic_field_checks(fx):
    for wrprotect in range(1, 8):
        assert_check(fx.run(wa16(0, 1, flags=wrprotect << 5), bytes(BS)), ILLEGAL_REQUEST, 0x24)
    assert_check(fx.run(wa16(0, 1, boundary=1), bytes(BS)), ILLEGAL_REQUEST, 0x24)
    too_many = fx.lu.max_atomic_blocks + 1
    assert_check(fx.run(wa16(0, too_many), bytes(too_many * BS)), ILLEGAL_REQUEST, 0x24)
    assert_good(fx.run(wa16(0, 1, flags=0x18, group=0x3F), bytes(BS)))   # DPO FUA group


def test_write_atomic_on_read_only_lu(make_fx):
    f = make_fx(read_only=True)
    assert_check(f.run(wa16(0, 1), bytes(BS)), DATA_PROTECT, 0x27)


def test_write_atomic_is_reported_with_dpo_fua_usage(fx):
    d = assert_good(fx.run(rsoc(options=1, opcode=0x9C))).data
    assert d[1] & 0x07 == 3                             # supported
    assert d[4 + 1] & 0x18 == 0x18                      # DPO and FUA in the usage data


def test_no_atomic_writes_without_an_atomic_store(tmp_path):
    store = FileStore.open(tmp_path / "v.img", size=MiB)        # no journal
    try:
        lu = LogicalUnit(store=store, identity=LuIdentity.from_uuid(uuid.uuid4()))
        nx = Nexus("iqn.x,i,0x1", "iqn.t,t,0x1")
        lu.execute(bytes(6), None, nx)
        assert lu.max_atomic_blocks == 0
        assert_check(lu.execute(wa16(0, 1), bytes(BS), nx), ILLEGAL_REQUEST, 0x20)
        bl = lu.execute(bytes((0x12, 1, 0xB0, 0, 255, 0)), None, nx).data
        assert bl[44:64] == bytes(20)
    finally:
        store.close()


# --- the journal ------------------------------------------------------------------------


@pytest.fixture
def journaled(tmp_path):
    paths = tmp_path / "v.img", tmp_path / "v.atomic"
    store = FileStore.open(paths[0], size=MiB, journal=paths[1])
    yield store, paths
    store.close()


def test_atomic_write_through_the_journal_leaves_it_empty(journaled):
    store, (_img, journal) = journaled
    assert store.atomic_write_max == MiB
    store.pwrite_atomic(4096, b"\x77" * 8192)
    assert store.pread(4096, 8192) == b"\x77" * 8192
    assert os.path.getsize(journal) == 0


def _record(offset: int, data: bytes) -> bytes:
    from crc32c import crc32c

    crc = crc32c(data, crc32c(struct.pack(">QI", offset, len(data))))
    return _JOURNAL.pack(_JOURNAL_MAGIC, offset, len(data), crc) + data


def test_a_committed_record_is_replayed_at_open(tmp_path):
    img, journal = tmp_path / "v.img", tmp_path / "v.atomic"
    FileStore.open(img, size=MiB).close()
    journal.write_bytes(_record(8192, b"\xAB" * 4096))     # crash after the commit point
    store = FileStore.open(img, size=MiB, journal=journal)
    try:
        assert store.pread(8192, 4096) == b"\xAB" * 4096
        assert os.path.getsize(journal) == 0
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["torn", "bad-crc", "bad-magic", "beyond-end"])
def test_a_torn_record_is_dropped_at_open(tmp_path, damage):
    img, journal = tmp_path / "v.img", tmp_path / "v.atomic"
    store = FileStore.open(img, size=MiB)
    store.pwrite(0, b"\x11" * 8192)
    store.close()
    record = bytearray(_record(0, b"\x22" * 8192))
    if damage == "torn":
        record = record[:_JOURNAL.size + 5000]             # crash while writing the journal
    elif damage == "bad-crc":
        record[-1] ^= 1
    elif damage == "bad-magic":
        record[0] ^= 1
    else:
        record = bytearray(_record(MiB - 4096, b"\x22" * 8192))
    journal.write_bytes(bytes(record))
    store = FileStore.open(img, size=MiB, journal=journal)
    try:
        assert store.pread(0, 8192) == b"\x11" * 8192      # old data, whole
        assert store.pread(MiB - 4096, 4096) == bytes(4096)
        assert os.path.getsize(journal) == 0
    finally:
        store.close()


def test_logical_unit_on_a_journaled_store(journaled):
    store, _ = journaled
    lu = LogicalUnit(store=store, identity=LuIdentity.from_uuid(uuid.uuid4()))
    nx = Nexus("iqn.x,i,0x1", "iqn.t,t,0x1")
    lu.execute(bytes(6), None, nx)
    assert lu.max_atomic_blocks == MiB // BS
    assert_good(lu.execute(write10(0, 8), b"o" * (8 * BS), nx))
    assert_good(lu.execute(wa16(4, 8), b"n" * (8 * BS), nx))
    assert store.pread(0, 12 * BS) == b"o" * (4 * BS) + b"n" * (8 * BS)


def test_memory_store_atomic_limit_is_configurable():
    store = MemoryStore(MiB, atomic_write_max=0)
    lu = LogicalUnit(store=store, identity=LuIdentity.from_uuid(uuid.uuid4()))
    assert lu.max_atomic_blocks == 0
