"""FileStore on a real temporary file: round trip, flush, hole punching, map status."""

import os
import uuid

import pytest
from scsi_cdbs import assert_good, read10, write10

from difs.scsi import LogicalUnit, LuIdentity, MemoryStore, Nexus
from difs.storage.filestore import FileStore

MiB = 1 << 20


@pytest.fixture
def store(tmp_path):
    s = FileStore.open(tmp_path / "vol.img", size=4 * MiB)
    yield s
    s.close()


def test_round_trip_and_size(store, tmp_path):
    assert store.size == 4 * MiB
    assert os.path.getsize(tmp_path / "vol.img") == 4 * MiB
    store.pwrite(12345, b"hello world")
    assert store.pread(12345, 11) == b"hello world"
    store.pwrite(0, memoryview(b"x" * 8192)[4096:])
    assert store.pread(0, 4096) == b"x" * 4096
    store.flush()
    assert store.pread(4 * MiB - 4, 4) == bytes(4)


def test_discard_punches_a_hole_and_reads_zeros(store, tmp_path):
    store.pwrite(0, b"\xAA" * MiB)
    store.flush()
    allocated = os.stat(tmp_path / "vol.img").st_blocks
    assert store.map_status(0, MiB) == (True, MiB)
    store.discard(256 * 1024, 512 * 1024)
    assert store.pread(256 * 1024, 512 * 1024) == bytes(512 * 1024)
    assert store.pread(0, 4) == b"\xAA" * 4
    assert os.stat(tmp_path / "vol.img").st_blocks < allocated
    mapped, run = store.map_status(256 * 1024, 512 * 1024)
    assert not mapped and run == 512 * 1024
    assert store.map_status(MiB, MiB) == (False, MiB)


def test_write_zeroes(store):
    store.pwrite(0, b"\x55" * 65536)
    store.write_zeroes(4096, 8192)
    assert store.pread(0, 16384) == b"\x55" * 4096 + bytes(8192) + b"\x55" * 4096


def test_logical_unit_on_filestore(store):
    lu = LogicalUnit(store=store, identity=LuIdentity.from_uuid(uuid.uuid4()), thin=True)
    nx = Nexus("iqn.f,i,0x1", "iqn.t,t,0x1")
    lu.execute(bytes(6), None, nx)
    assert_good(lu.execute(write10(8, 2), b"q" * 1024, nx))
    assert bytes(assert_good(lu.execute(read10(8, 2), None, nx)).data) == b"q" * 1024


def test_memory_store_allocation_map():
    s = MemoryStore(64 * 1024, granularity=4096)
    assert s.map_status(0, 65536) == (False, 65536)
    s.pwrite(8192, b"x")
    assert s.map_status(0, 65536) == (False, 8192)
    assert s.map_status(8192, 65536 - 8192) == (True, 4096)
    s.discard(8000, 3000)          # covers chunk 2 partially: stays mapped, zeroed
    assert s.pread(8192, 1) == b"\x00"
    assert s.map_status(8192, 4096) == (True, 4096)
    s.discard(8192, 4096)
    assert s.map_status(8192, 4096) == (False, 4096)
