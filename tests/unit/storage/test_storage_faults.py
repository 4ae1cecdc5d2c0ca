"""Stores under a full disk or a failing device: a write that fails part-way leaves nothing
that reads back wrong.

* PiStore: the data of a failed write may have landed in part (``pwrite`` on a full file
  system writes the pages it can allocate, then fails ENOSPC), and its PI may have landed in
  part too; before the error propagates, each block's PI is made to agree with the data on
  disk again, so protect-000b reads of the range succeed - no guard error for a block a
  failed command touched.  What cannot be re-aligned at once (an EIO) is retried at every
  checkpoint and the intent log kept until then.
* FileIntentLog: a record that could not be appended whole is cut off, else it would hide
  every later record from crash recovery.
* FileStore.pwrite_atomic on a real full tmpfs: fails with ENOSPC before anything is
  committed, leaving the journal empty and the data as it was.
"""

from __future__ import annotations

import errno
import os

import pytest
from support import fill, tmpfs

from difs.integrity import PiCheckError
from difs.integrity.layout import decode_intents, encode_intent
from difs.scsi.store import MemoryStore
from difs.storage import pistore
from difs.storage.filestore import FileStore
from difs.storage.pistore import FileIntentLog, IntentLog, PiStore

BS = 512
PAGE = 4096
PI_PAGE_BLOCKS = PAGE // 8  # blocks whose PI shares one 4 KiB page of the PI file


class ThinStore(MemoryStore):
    """A MemoryStore on a file system that can allocate ``free`` more pages (None: any):
    a write needing one more lands up to it and fails ENOSPC, as on a full tmpfs; ``eio``
    fails every write with EIO."""

    def __init__(self, size: int, free: int | None = None) -> None:
        super().__init__(size, granularity=PAGE)
        self.free = free
        self.eio = False

    def pwrite(self, offset, data) -> None:
        if self.eio:
            raise OSError(errno.EIO, "I/O error")
        view = memoryview(data)
        end = offset + len(view)
        pos = offset
        while pos < end:
            page = pos // PAGE
            stop = min(end, (page + 1) * PAGE)
            if not self._alloc[page] and self.free is not None:
                if self.free <= 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.free -= 1
            super().pwrite(pos, view[pos - offset:stop - offset])
            pos = stop


def pi_store(blocks: int) -> PiStore:
    return PiStore(ThinStore(blocks * BS), ThinStore(blocks * 8), pi_type=1, log=IntentLog())


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n * BS))


def test_data_write_failing_part_way_leaves_pi_agreeing_with_the_data():
    s = pi_store(64)
    old = pattern(16, 1)
    s.pwrite(0, old)                 # pages 0-1 of the data allocated, with their PI
    s.data.free = 0                  # the file system is full now
    new = pattern(32, 2)
    with pytest.raises(OSError) as info:
        s.pwrite(0, new)             # pages 0-1 land (allocated), page 2 cannot
    assert info.value.errno == errno.ENOSPC
    got = s.pread(0, 32 * BS)        # protect 000b: every block checked, none fails
    assert got[:16 * BS] == new[:16 * BS]  # the failed write landed there: indeterminate
    assert got[16 * BS:] == bytes(16 * BS)  # never written: still zeros
    s.flush()
    assert s.log.size == 0 and not s._unaligned
    # after space is freed the write succeeds and reads back
    s.data.free = None
    s.pwrite(0, new)
    assert s.pread(0, 32 * BS) == new


def test_pi_write_failing_part_way_leaves_pi_agreeing_with_the_data():
    """The data landed; the PI write stopped at a page it could not allocate, before a page
    still holding the old tuples of blocks whose data is new."""
    n = 3 * PI_PAGE_BLOCKS
    s = pi_store(n)
    s.pwrite(0, pattern(PI_PAGE_BLOCKS, 3))                      # PI page 0 allocated
    s.pwrite(2 * PI_PAGE_BLOCKS * BS, pattern(PI_PAGE_BLOCKS, 4))  # PI page 2 allocated
    s.pi.free = 0                                                 # PI page 1 cannot be
    new = pattern(n, 5)
    with pytest.raises(OSError):
        s.pwrite(0, new)
    assert s.pread(0, n * BS) == new       # pages 0 and 2 re-aligned, page 1 escape
    data, pi = s.pread_pi(0, n * BS)
    s.verify(data, pi, 0)
    assert not s._unaligned


def test_pi_that_cannot_be_realigned_now_is_retried_and_the_intent_log_kept():
    s = pi_store(64)
    s.pwrite(0, pattern(8, 6))
    s.pi.eio = True                  # the PI file fails every write (an I/O error)
    with pytest.raises(OSError):
        s.pwrite(0, pattern(8, 7))   # the data lands, its PI does not
    with pytest.raises(PiCheckError):
        s.pread(0, 8 * BS)           # reported, never returned silently as good
    s.flush()                        # the checkpoint cannot re-align: the log is kept
    assert s.log.size > 0
    records, _ = decode_intents(s.log.read_all())
    assert records[-1].lba == 0
    s.pi.eio = False                 # the device recovers
    s.flush()
    assert s.log.size == 0 and not s._unaligned
    assert s.pread(0, 8 * BS) == pattern(8, 7)


def test_write_zeroes_failing_part_way_leaves_pi_agreeing():
    s = pi_store(64)
    s.pwrite(0, pattern(16, 8))      # data pages 0-1 allocated
    s.data.free = 0
    with pytest.raises(OSError):     # zeroes land in pages 0-1, page 2 cannot be allocated
        s.write_zeroes_pi(0, 32 * BS, s.generate(bytes(32 * BS), 0))
    assert s.pread(0, 32 * BS) == bytes(32 * BS)


def test_intent_record_not_appended_whole_is_cut_off(tmp_path, monkeypatch):
    log = FileIntentLog(tmp_path / "v.pilog")
    first = encode_intent(1, 0, bytes(8 * 4))
    log.append(first)
    real_write = os.write
    calls = []

    def half_then_full(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pistore.os, "write", half_then_full)
    with pytest.raises(OSError):
        log.append(encode_intent(2, 8, bytes(8 * 4)))
    monkeypatch.setattr(pistore.os, "write", real_write)
    third = encode_intent(3, 16, bytes(8 * 4))
    log.append(third)
    assert os.path.getsize(tmp_path / "v.pilog") == len(first) + len(third)
    records, _ = decode_intents(log.read_all())
    assert [r.seq for r in records] == [1, 3]   # the later record is found by recovery
    log.close()


@pytest.mark.parametrize("leave_pages", [1, 2])
def test_atomic_write_on_a_full_file_system_commits_nothing(tmp_path, leave_pages):
    """A real tmpfs. With 2 pages left the journal record (4 KiB + header) fits, but the
    data written in place would not: the range is allocated first, so the failure comes
    before the commit point, not after it with a committed record left behind."""
    with tmpfs(tmp_path / "fs", "1m") as fs:
        store = FileStore.open(fs / "v.img", size=64 * PAGE, journal=fs / "v.atomic")
        store.pwrite(0, b"o" * PAGE)
        fill(fs / "filler", leave=leave_pages * PAGE)
        try:
            with pytest.raises(OSError) as info:
                store.pwrite_atomic(8 * PAGE, b"n" * PAGE)
            assert info.value.errno == errno.ENOSPC
            assert os.path.getsize(fs / "v.atomic") == 0   # nothing to replay
            assert store.pread(8 * PAGE, PAGE) == bytes(PAGE)  # old contents
            assert store.pread(0, PAGE) == b"o" * PAGE
            os.unlink(fs / "filler")
            store.pwrite_atomic(8 * PAGE, b"n" * PAGE)     # space again: it works
            assert store.pread(8 * PAGE, PAGE) == b"n" * PAGE
        finally:
            store.close()
