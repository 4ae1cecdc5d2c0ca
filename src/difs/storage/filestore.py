"""A :class:`BlockStore` on a file or block device, through its file descriptor.

This module does the I/O that :mod:`difs.scsi.device` must not: ``os.pread``,
``os.pwrite``, ``os.fdatasync``, ``fallocate(PUNCH_HOLE | KEEP_SIZE)`` for discard,
``fallocate(ZERO_RANGE)`` for write-zeroes and ``lseek(SEEK_DATA/SEEK_HOLE)`` for the
allocation map.  Calls block: the controller runs them where blocking is acceptable.

Atomic writes (WRITE ATOMIC) go through a one-record journal beside the data, so a
crash leaves either the old or the new data, never a mix:

1. write ``header + data`` to the journal and ``fdatasync`` it (the commit point);
2. write the data in place and ``fdatasync`` the data file;
3. truncate the journal and ``fdatasync`` it.

A full file system must not break that promise: the range is allocated first
(``fallocate``), so writing it in place after the commit point cannot run out of space,
and a journal record that could not be written and synced whole is cut off again before
the error propagates (only a committed record is ever replayed).

Opening a store with a journal replays a complete record (its CRC32C matches) and drops
a torn one (that write was never acknowledged).  A store opened without a journal path
does not offer atomic writes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct

from crc32c import crc32c

from difs.scsi.store import BlockStore

#: journal record header: magic, offset, length, CRC32C of (offset, length, data)
_JOURNAL = struct.Struct(">8sQII")
_JOURNAL_MAGIC = b"DIFSATW1"
_OFFSET_LENGTH = struct.Struct(">QI")
ATOMIC_WRITE_MAX = 1 << 20

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    _fallocate.restype = ctypes.c_int


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Call fallocate(2); raise OSError on failure."""
    if _fallocate is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


class FileStore(BlockStore):
    """Backing store on a regular file (sparse when thin) or a block device.

    ``FileStore.open(path, size=...)`` creates/extends a regular file; pass an already
    open ``fd`` to the constructor to use it as is (the store then owns it).
    """

    def __init__(self, fd: int, *, size: int | None = None, granularity: int | None = None) -> None:
        self.fd = fd
        if size is None:
            size = os.lseek(fd, 0, os.SEEK_END)
        self.size = size
        if granularity is None:
            try:
                granularity = os.fstatvfs(fd).f_bsize or 4096
            except OSError:
                granularity = 4096
        self.granularity = granularity
        self._punch_ok = True
        self._zero_range_ok = True
        self._allocate_ok = True
        self._journal_fd = -1

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, size: int | None = None,
             read_only: bool = False, create: bool = True,
             journal: str | os.PathLike[str] | None = None) -> FileStore:
        """Open (and create/extend) ``path``; with ``journal``, atomic writes are
        available and a pending journal record is replayed first."""
        flags = os.O_RDONLY if read_only else os.O_RDWR
        if create and not read_only:
            flags |= os.O_CREAT
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if size is not None and not read_only:
                current = os.lseek(fd, 0, os.SEEK_END)
                if current < size:
                    os.ftruncate(fd, size)
            store = cls(fd, size=size)
        except BaseException:
            os.close(fd)
            raise
        if journal is not None and not read_only:
            try:
                store.attach_journal(journal)
            except BaseException:
                store.close()
                raise
        return store

    # --- atomic writes ------------------------------------------------------------

    def attach_journal(self, path: str | os.PathLike[str]) -> None:
        """Use ``path`` as the atomic-write journal, replaying what it holds."""
        jfd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        self._journal_fd = jfd
        self.atomic_write_max = ATOMIC_WRITE_MAX
        self.replay_journal()

    def replay_journal(self) -> bool:
        """Apply a complete journal record (True) or drop a torn one; empty the journal."""
        jfd = self._journal_fd
        head = os.pread(jfd, _JOURNAL.size, 0)
        applied = False
        if len(head) == _JOURNAL.size:
            magic, offset, length, crc = _JOURNAL.unpack(head)
            if magic == _JOURNAL_MAGIC and length <= ATOMIC_WRITE_MAX \
                    and offset + length <= self.size:
                data = os.pread(jfd, length, _JOURNAL.size)
                if len(data) == length and \
                        crc32c(data, crc32c(_OFFSET_LENGTH.pack(offset, length))) == crc:
                    self.pwrite(offset, data)
                    os.fdatasync(self.fd)
                    applied = True
        if head:
            os.ftruncate(jfd, 0)
            os.fdatasync(jfd)
        return applied

    def pwrite_atomic(self, offset: int, data: bytes | memoryview) -> None:
        jfd = self._journal_fd
        if jfd < 0:
            super().pwrite_atomic(offset, data)  # raises: no journal, no atomic writes
        length = len(data)
        self._allocate(offset, length)       # ENOSPC here: nothing done yet
        crc = crc32c(data, crc32c(_OFFSET_LENGTH.pack(offset, length)))
        try:
            _pwrite_all(jfd, _JOURNAL.pack(_JOURNAL_MAGIC, offset, length, crc) + bytes(data), 0)
            os.fdatasync(jfd)                # committed: replayed after a crash
        except BaseException:
            os.ftruncate(jfd, 0)             # not committed: nothing to replay
            raise
        self.pwrite(offset, data)
        os.fdatasync(self.fd)
        os.ftruncate(jfd, 0)                 # done: nothing to replay
        os.fdatasync(jfd)

    def _allocate(self, offset: int, length: int) -> None:
        """Reserve the space of a range (a thin file's holes); raises ENOSPC when there is
        none. A file system or device without fallocate has nothing to reserve."""
        if self._allocate_ok:
            try:
                fallocate(self.fd, FALLOC_FL_KEEP_SIZE, offset, length)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
                    raise
                self._allocate_ok = False

    def pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self.fd, length, offset)
        if len(data) == length:
            return data
        parts = [data]
        got = len(data)
        while got < length:
            chunk = os.pread(self.fd, length - got, offset + got)
            if not chunk:  # beyond end of file: the rest reads as zeros
                parts.append(bytes(length - got))
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        _pwrite_all(self.fd, data, offset)

    def flush(self) -> None:
        os.fdatasync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        if self._punch_ok:
            try:
                fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                self._punch_ok = False
        super().write_zeroes(offset, length)

    def write_zeroes(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        if self._zero_range_ok:
            try:
                fallocate(self.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                self._zero_range_ok = False
        super().write_zeroes(offset, length)

    def map_status(self, offset: int, length: int) -> tuple[bool, int]:
        try:
            data = os.lseek(self.fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole up to end of file
                return False, length
            return True, length  # SEEK_DATA unsupported: report mapped
        if data > offset:
            return False, min(data - offset, length)
        hole = os.lseek(self.fd, offset, os.SEEK_HOLE)
        return True, min(max(hole - offset, 1), length)

    def close(self) -> None:
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
